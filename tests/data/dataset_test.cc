#include "loom/data/dataset.h"

#include <gtest/gtest.h>

#include "loom/core/error.h"
#include "loom/ops/ops.h"

namespace loom::data {
namespace {

using core::DType;

// A dataset that only implements get(), to exercise the default get_batch.
class Squares : public Dataset {
 public:
  int64_t size() const override { return 10; }
  Sample get(int64_t i) const override {
    LOOM_CHECK_T(IndexError, i >= 0 && i < 10, "Squares: {}", i);
    return {Tensor::from_vector<float>({static_cast<float>(i), static_cast<float>(i * i)}, {2}),
            Tensor::scalar<int64_t>(i % 3)};
  }
};

TensorDataset make(int64_t n) {
  auto x = ops::reshape(ops::arange(0, static_cast<double>(n * 6), 1, DType::F32), {n, 2, 3});
  auto y = ops::arange(0, static_cast<double>(n), 1, DType::I64);
  return TensorDataset(x, y);
}

TEST(TensorDataset, GetAndGetBatch) {
  TensorDataset ds = make(5);
  EXPECT_EQ(ds.size(), 5);
  Sample s = ds.get(2);
  EXPECT_EQ(s.input.shape(), (core::Shape{2, 3}));
  EXPECT_EQ(s.input.to_vector<float>(), (std::vector<float>{12, 13, 14, 15, 16, 17}));
  EXPECT_EQ(s.target.item<int64_t>(), 2);
  Batch b = ds.get_batch({4, 0, 4});
  EXPECT_EQ(b.size(), 3);
  EXPECT_EQ(b.inputs.shape(), (core::Shape{3, 2, 3}));
  EXPECT_EQ(b.targets.to_vector<int64_t>(), (std::vector<int64_t>{4, 0, 4}));
  EXPECT_EQ(b.inputs.at<float>({1, 1, 2}), 5.0f);
  EXPECT_THROW(ds.get(5), IndexError);
  EXPECT_THROW(ds.get_batch({0, 5}), IndexError);
  EXPECT_THROW(ds.get_batch({-1}), IndexError);
}

TEST(TensorDataset, ChecksShapes) {
  EXPECT_THROW(TensorDataset(ops::zeros({3, 2}), ops::zeros({4})), ShapeError);
  EXPECT_THROW(TensorDataset(Tensor::scalar<float>(1.0f), Tensor()), ShapeError);
  TensorDataset unlabelled(ops::zeros({3, 2}));
  EXPECT_FALSE(unlabelled.get_batch({0, 1}).targets.defined());
}

TEST(Dataset, DefaultGetBatchStacks) {
  Squares sq;
  Batch b = sq.get_batch({3, 1});
  EXPECT_EQ(b.inputs.shape(), (core::Shape{2, 2}));
  EXPECT_EQ(b.inputs.to_vector<float>(), (std::vector<float>{3, 9, 1, 1}));
  EXPECT_EQ(b.targets.to_vector<int64_t>(), (std::vector<int64_t>{0, 1}));
}

TEST(Subset, MapsIndicesAndForwardsBatches) {
  auto base = std::make_shared<TensorDataset>(make(6));
  Subset sub(base, {5, 1, 3});
  EXPECT_EQ(sub.size(), 3);
  EXPECT_EQ(sub.get(0).target.item<int64_t>(), 5);
  EXPECT_EQ(sub.get_batch({2, 1}).targets.to_vector<int64_t>(), (std::vector<int64_t>{3, 1}));
  EXPECT_THROW(sub.get(3), IndexError);
  EXPECT_THROW(sub.get_batch({3}), IndexError);
  EXPECT_THROW(Subset(base, {6}), IndexError);
  auto squares = std::make_shared<Squares>();
  Subset sub2(squares, {9, 2});
  EXPECT_EQ(sub2.get_batch({0, 1}).inputs.to_vector<float>(), (std::vector<float>{9, 81, 2, 4}));
}

}  // namespace
}  // namespace loom::data
