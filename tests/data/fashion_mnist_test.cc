#include "loom/data/fashion_mnist.h"

#include <filesystem>

#include <gtest/gtest.h>

#include "loom/core/error.h"
#include "loom/data/idx.h"
#include "loom/data/loader.h"
#include "temp_dir.h"

namespace loom::data {
namespace {

using core::DType;
using testing::TempDir;

TEST(FashionMnist, MissingDataSetSaysHowToInstallIt) {
  TempDir dir;
  try {
    load_fashion_mnist(dir.path(), true);
    FAIL() << "expected IoError";
  } catch (const IoError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(dir.path()), std::string::npos) << msg;
    EXPECT_NE(msg.find("apt-get install dataset-fashion-mnist"), std::string::npos) << msg;
    EXPECT_NE(msg.find("data.root"), std::string::npos) << msg;
    EXPECT_NE(msg.find("train-images-idx3-ubyte"), std::string::npos) << msg;
  }
}

TEST(FashionMnist, LoadsSmallFilesInTheSameLayout) {
  TempDir dir;
  std::vector<uint8_t> pixels(3 * 28 * 28);
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<uint8_t>(i % 256);
  write_idx(dir.file("t10k-images-idx3-ubyte.gz"), Tensor::from_vector<uint8_t>(pixels, {3, 28, 28}));
  write_idx(dir.file("t10k-labels-idx1-ubyte"), Tensor::from_vector<uint8_t>({9, 0, 4}, {3}));  // plain name
  TensorDataset ds = load_fashion_mnist(dir.path(), false);
  EXPECT_EQ(ds.inputs().shape(), (core::Shape{3, 1, 28, 28}));
  EXPECT_EQ(ds.inputs().dtype(), DType::F32);
  EXPECT_EQ(ds.inputs().at<float>({0, 0, 9, 3}), 1.0f);  // flat pixel 255 (row 9, col 3) holds 255 -> 1
  EXPECT_EQ(ds.inputs().at<float>({0, 0, 0, 0}), 0.0f);
  EXPECT_EQ(ds.targets().dtype(), DType::I64);
  EXPECT_EQ(ds.targets().to_vector<int64_t>(), (std::vector<int64_t>{9, 0, 4}));

  write_idx(dir.file("t10k-labels-idx1-ubyte"), Tensor::from_vector<uint8_t>({9, 0}, {2}));
  EXPECT_THROW(load_fashion_mnist(dir.path(), false), IoError);  // counts disagree
  write_idx(dir.file("t10k-labels-idx1-ubyte"), Tensor::from_vector<uint8_t>({9, 0, 10}, {3}));
  EXPECT_THROW(load_fashion_mnist(dir.path(), false), IoError);  // label 10
}

TEST(FashionMnist, RealDataSet) {
  if (!std::filesystem::exists(kFashionMnistRoot)) {
    GTEST_SKIP() << kFashionMnistRoot << " not installed (apt-get install dataset-fashion-mnist)";
  }
  auto train = std::make_shared<TensorDataset>(load_fashion_mnist(kFashionMnistRoot, true));
  TensorDataset test = load_fashion_mnist(kFashionMnistRoot, false);
  EXPECT_EQ(train->size(), 60000);
  EXPECT_EQ(test.size(), 10000);
  EXPECT_EQ(train->inputs().shape(), (core::Shape{60000, 1, 28, 28}));
  for (const TensorDataset* ds : {train.get(), &test}) {
    std::vector<int64_t> counts(10, 0);
    for (int64_t y : ds->targets().to_vector<int64_t>()) {
      ASSERT_GE(y, 0);
      ASSERT_LE(y, 9);
      ++counts[static_cast<size_t>(y)];
    }
    for (int64_t c : counts) EXPECT_EQ(c, ds->size() / 10);  // Fashion-MNIST is balanced
    const float* p = ds->inputs().data<float>();
    float lo = 1, hi = 0;
    for (int64_t i = 0; i < ds->inputs().numel(); ++i) lo = std::min(lo, p[i]), hi = std::max(hi, p[i]);
    EXPECT_EQ(lo, 0.0f);
    EXPECT_EQ(hi, 1.0f);
  }
  DataLoader loader(train, {.batch_size = 256, .shuffle = true, .seed = 1, .num_workers = 2});
  EXPECT_EQ(loader.num_batches(), 235);
  Batch b = *loader.next();
  EXPECT_EQ(b.inputs.shape(), (core::Shape{256, 1, 28, 28}));
}

}  // namespace
}  // namespace loom::data
