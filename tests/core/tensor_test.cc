#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "loom/core/parallel.h"
#include "loom/core/tensor.h"
#include "loom/ops/ops.h"

namespace loom {
namespace {

using core::DType;
using core::Tensor;

TEST(DType, SizesAndNames) {
  EXPECT_EQ(core::itemsize(DType::F32), 4u);
  EXPECT_EQ(core::itemsize(DType::BF16), 2u);
  EXPECT_EQ(core::itemsize(DType::Bool), 1u);
  EXPECT_EQ(core::name(DType::I64), "i64");
  EXPECT_EQ(core::dtype_from_name("float16"), DType::F16);
  EXPECT_THROW(core::dtype_from_name("f128"), ValueError);
}

TEST(Half, RoundTripsAndRounds) {
  for (float f : {0.0f, 1.0f, -2.5f, 65504.0f, 6.1035156e-05f, 5.9604645e-08f}) {
    EXPECT_EQ(static_cast<float>(core::Half(f)), f) << f;
  }
  EXPECT_TRUE(std::isinf(static_cast<float>(core::Half(1e6f))));
  // 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties to even -> 1.
  EXPECT_EQ(static_cast<float>(core::Half(1.0f + 0x1p-11f)), 1.0f);
  EXPECT_EQ(static_cast<float>(core::BFloat16(1.0f)), 1.0f);
  EXPECT_NEAR(static_cast<float>(core::BFloat16(3.14159f)), 3.140625f, 1e-6);
}

TEST(Tensor, EmptyShapeStrides) {
  Tensor t = Tensor::empty({2, 3, 4});
  EXPECT_EQ(t.numel(), 24);
  EXPECT_EQ(t.nbytes(), 96u);
  EXPECT_EQ(t.strides(), (core::Strides{12, 4, 1}));
  EXPECT_TRUE(t.is_contiguous());
  EXPECT_EQ(t.size(-1), 4);
  EXPECT_THROW(t.size(3), IndexError);
  EXPECT_THROW(Tensor::empty({2, -1}), ShapeError);
}

TEST(Tensor, FromVectorAndAt) {
  Tensor t = Tensor::from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3});
  EXPECT_EQ(t.at<float>({1, 2}), 6.0f);
  EXPECT_EQ(t.at<float>({-1, 0}), 4.0f);
  EXPECT_THROW(t.at<float>({2, 0}), IndexError);
  EXPECT_THROW(Tensor::from_vector<float>({1, 2, 3}, {2, 2}), ShapeError);
  EXPECT_THROW(t.data<double>(), TypeError);
}

TEST(Tensor, ViewsShareStorage) {
  Tensor t = ops::arange(0, 12, 1, DType::F32);
  Tensor v = ops::reshape(t, {3, 4});
  Tensor tr = ops::transpose(v, 0, 1);
  EXPECT_TRUE(tr.storage().is_same(t.storage()));
  EXPECT_FALSE(tr.is_contiguous());
  EXPECT_EQ(tr.at<float>({3, 2}), 11.0f);
  Tensor s = ops::slice(v, 1, 1, 3);
  EXPECT_EQ(s.shape(), (core::Shape{3, 2}));
  EXPECT_EQ(s.at<float>({2, 1}), 10.0f);
  Tensor e = ops::expand(ops::reshape(ops::arange(3.0), {3, 1}), {3, 5});
  EXPECT_EQ(e.strides()[1], 0);
  EXPECT_EQ(e.at<float>({2, 4}), 2.0f);
  Tensor c = ops::contiguous(tr);
  EXPECT_TRUE(c.is_contiguous());
  EXPECT_EQ(c.to_vector<float>(), (std::vector<float>{0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11}));
  // view() refuses a layout it cannot express; reshape() copies.
  EXPECT_THROW(ops::view(tr, {12}), ShapeError);
  EXPECT_EQ(ops::reshape(tr, {12}).to_vector<float>(), c.to_vector<float>());
  EXPECT_EQ(ops::view(v, {2, -1}).shape(), (core::Shape{2, 6}));
  EXPECT_THROW(ops::reshape(v, {5, -1}), ShapeError);
}

TEST(Tensor, PermuteAndSelect) {
  Tensor t = ops::reshape(ops::arange(24.0), {2, 3, 4});
  Tensor p = ops::permute(t, {2, 0, 1});
  EXPECT_EQ(p.shape(), (core::Shape{4, 2, 3}));
  EXPECT_EQ(p.at<float>({3, 1, 2}), t.at<float>({1, 2, 3}));
  EXPECT_THROW(ops::permute(t, {0, 0, 1}), IndexError);
  EXPECT_EQ(ops::select(t, 1, -1).shape(), (core::Shape{2, 4}));
  EXPECT_THROW(ops::select(t, 1, 3), IndexError);
}

TEST(Tensor, CreationAndConversion) {
  EXPECT_EQ(ops::zeros({3}).to_vector<float>(), (std::vector<float>{0, 0, 0}));
  EXPECT_EQ(ops::full({2}, 7, DType::I32).to_vector<int>(), (std::vector<int>{7, 7}));
  EXPECT_EQ(ops::arange(0, 10, 3, DType::I64).to_vector<int64_t>(), (std::vector<int64_t>{0, 3, 6, 9}));
  Tensor x = Tensor::from_vector<float>({1.5f, -2.25f, 3.0f}, {3});
  for (DType t : {DType::F64, DType::F16, DType::BF16, DType::I32, DType::I64}) {
    Tensor y = ops::to_dtype(x, t);
    EXPECT_EQ(y.dtype(), t);
    Tensor back = ops::to_dtype(y, DType::F32);
    if (core::is_floating(t)) {
      EXPECT_EQ(back.to_vector<float>(), x.to_vector<float>()) << core::name(t);
    }
  }
  EXPECT_EQ(ops::to_dtype(x, DType::I32).to_vector<int>(), (std::vector<int>{1, -2, 3}));
  EXPECT_EQ(ops::to_dtype(x, DType::Bool).to_vector<int>(), (std::vector<int>{1, 1, 1}));
}

TEST(Tensor, SeededRandomIsDeterministic) {
  core::Generator g1(42), g2(42), g3(43);
  Tensor a = ops::randn({1000}, g1), b = ops::randn({1000}, g2), c = ops::randn({1000}, g3);
  EXPECT_EQ(a.to_vector<float>(), b.to_vector<float>());
  EXPECT_NE(a.to_vector<float>(), c.to_vector<float>());
  double m = ops::mean(a).item<double>();
  double v = ops::mean(ops::square(a)).item<double>();
  EXPECT_NEAR(m, 0.0, 0.1);
  EXPECT_NEAR(v, 1.0, 0.1);
  Tensor u = ops::rand({10000}, g1, DType::F64, -1, 1);
  EXPECT_GE(ops::min(u).item<double>(), -1.0);
  EXPECT_LT(ops::max(u).item<double>(), 1.0);
}

TEST(Tensor, RandomDoesNotDependOnThreadCount) {
  core::set_num_threads(1);
  core::Generator g1(7);
  auto a = ops::rand({200000}, g1).to_vector<float>();
  core::set_num_threads(2);
  core::Generator g2(7);
  auto b = ops::rand({200000}, g2).to_vector<float>();
  EXPECT_EQ(a, b);
}

TEST(Tensor, Printing) {
  Tensor t = Tensor::from_vector<float>({1, 2.5f, -3, 4}, {2, 2});
  EXPECT_EQ(t.to_string(), "tensor([[1.0000, 2.5000],\n        [-3.0000, 4.0000]], dtype=f32, shape=[2, 2])");
  EXPECT_EQ(ops::arange(3, DType::I64).to_string(), "tensor([0, 1, 2], dtype=i64, shape=[3])");
  std::string big = ops::zeros({100, 100}).to_string();
  EXPECT_NE(big.find("..."), std::string::npos);
  EXPECT_LT(big.size(), 2000u);
}

TEST(Allocator, ReusesFreedBlocks) {
  auto& a = core::cpu_allocator();
  { Tensor warm = Tensor::empty({12345}); }
  auto before = a.stats().system_allocs;
  for (int i = 0; i < 10; ++i) Tensor t = Tensor::empty({12345});
  EXPECT_EQ(a.stats().system_allocs, before);
}

}  // namespace
}  // namespace loom

// Floating point to integer saturates (a plain cast is undefined out of
// range): a corrupt counter read from a file cannot crash or wrap.
namespace loom::core {
namespace {
TEST(Tensor, FloatToIntegerConversionsSaturate) {
  EXPECT_EQ(Tensor::scalar<double>(1e30).item<int64_t>(), std::numeric_limits<int64_t>::max());
  EXPECT_EQ(Tensor::scalar<double>(-1e30).item<int64_t>(), std::numeric_limits<int64_t>::min());
  EXPECT_EQ(Tensor::scalar<double>(std::nan("")).item<int64_t>(), 0);
  EXPECT_EQ(Tensor::scalar<float>(3e9f).item<int32_t>(), std::numeric_limits<int32_t>::max());
  EXPECT_EQ(Tensor::scalar<double>(-7.9).item<int64_t>(), -7);  // in range: truncates, as before
  EXPECT_EQ(Tensor::scalar<double>(9007199254740992.0).item<int64_t>(), int64_t{1} << 53);
}
}  // namespace
}  // namespace loom::core
