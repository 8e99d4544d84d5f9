#include "loom/data/transforms.h"

#include <gtest/gtest.h>

#include "loom/core/error.h"
#include "loom/data/seeding.h"
#include "loom/ops/ops.h"

namespace loom::data {
namespace {

using core::DType;

Batch image_batch(int64_t n, int64_t c, int64_t h, int64_t w) {
  Batch b;
  b.inputs = ops::reshape(ops::arange(0, static_cast<double>(n * c * h * w), 1, DType::F32), {n, c, h, w});
  return b;
}

TEST(Transforms, NormalizePerChannel) {
  Batch b = image_batch(2, 2, 1, 2);  // [[0,1],[2,3]], [[4,5],[6,7]]
  Tensor before = b.inputs;
  core::Generator gen(0);
  Normalize({1.0, 2.0}, {2.0, 4.0}).apply(b, gen);
  EXPECT_EQ(b.inputs.to_vector<float>(), (std::vector<float>{-0.5f, 0, 0, 0.25f, 1.5f, 2, 1, 1.25f}));
  EXPECT_EQ(before.to_vector<float>()[0], 0.0f) << "the source is not modified";
  Batch one = image_batch(1, 3, 1, 1);
  Normalize({1.0}, {0.5}).apply(one, gen);
  EXPECT_EQ(one.inputs.to_vector<float>(), (std::vector<float>{-2, 0, 2}));
  EXPECT_THROW(Normalize({1.0, 2.0}, {1.0}), ValueError);
  EXPECT_THROW(Normalize({1.0}, {0.0}), ValueError);
  Batch three = image_batch(1, 3, 1, 1);
  EXPECT_THROW(Normalize({1.0, 2.0}, {1.0, 1.0}).apply(three, gen), ShapeError);
}

TEST(Transforms, FlipAlwaysAndNever) {
  core::Generator gen(1);
  Batch b = image_batch(1, 1, 2, 3);
  RandomHorizontalFlip(1.0).apply(b, gen);
  EXPECT_EQ(b.inputs.to_vector<float>(), (std::vector<float>{2, 1, 0, 5, 4, 3}));
  Batch c = image_batch(1, 1, 2, 3);
  RandomHorizontalFlip(0.0).apply(c, gen);
  EXPECT_EQ(c.inputs.to_vector<float>(), (std::vector<float>{0, 1, 2, 3, 4, 5}));
  EXPECT_THROW(RandomHorizontalFlip(1.5), ValueError);
}

TEST(Transforms, FlipIsPerSampleAndSeeded) {
  auto flipped_mask = [](uint64_t seed) {
    Batch b = image_batch(64, 1, 1, 2);
    core::Generator gen = batch_generator(seed, 0, 0);
    RandomHorizontalFlip(0.5).apply(b, gen);
    std::vector<bool> mask;
    auto v = b.inputs.to_vector<float>();
    for (int i = 0; i < 64; ++i) mask.push_back(v[2 * i] > v[2 * i + 1]);
    return mask;
  };
  auto m = flipped_mask(3);
  EXPECT_EQ(m, flipped_mask(3));
  EXPECT_NE(m, flipped_mask(4));
  const auto flips = std::count(m.begin(), m.end(), true);
  EXPECT_GT(flips, 10);
  EXPECT_LT(flips, 54);
}

TEST(Transforms, CropWithoutPaddingIsAWindowOfTheImage) {
  core::Generator gen(5);
  Batch b = image_batch(8, 2, 5, 6);
  Tensor src = b.inputs;
  RandomCrop({.height = 3, .width = 4}).apply(b, gen);
  EXPECT_EQ(b.inputs.shape(), (core::Shape{8, 2, 3, 4}));
  // Each output sample is a contiguous window: consecutive values along W, +6 along H, same offset in both channels.
  for (int64_t i = 0; i < 8; ++i) {
    const float tl = b.inputs.at<float>({i, 0, 0, 0});
    const float base = static_cast<float>(i * 60);
    const int64_t off = static_cast<int64_t>(tl - base);
    EXPECT_LE(off / 6, 2);
    EXPECT_LE(off % 6, 2);
    for (int64_t ch = 0; ch < 2; ++ch) {
      for (int64_t r = 0; r < 3; ++r) {
        for (int64_t c = 0; c < 4; ++c) {
          EXPECT_EQ(b.inputs.at<float>({i, ch, r, c}), tl + static_cast<float>(ch * 30 + r * 6 + c));
        }
      }
    }
  }
}

TEST(Transforms, CropWithPaddingFillsZeros) {
  // Padding 2 and a crop the size of the original: each sample is the image
  // shifted by (dy, dx) in [-2, 2], zeros shifted in.
  core::Generator gen(11);
  Batch b;
  b.inputs = ops::ones({50, 1, 4, 4});
  RandomCrop(4, 2).apply(b, gen);
  EXPECT_EQ(b.inputs.shape(), (core::Shape{50, 1, 4, 4}));
  bool some_zero = false;
  for (int64_t i = 0; i < 50; ++i) {
    float total = 0;
    for (int64_t r = 0; r < 4; ++r) {
      for (int64_t c = 0; c < 4; ++c) total += b.inputs.at<float>({i, 0, r, c});
    }
    // The ones form an (4 - |dy|) x (4 - |dx|) rectangle.
    bool ok = false;
    for (int dy = 0; dy <= 2; ++dy) {
      for (int dx = 0; dx <= 2; ++dx) ok |= total == static_cast<float>((4 - dy) * (4 - dx));
    }
    EXPECT_TRUE(ok) << total;
    some_zero |= total < 16;
  }
  EXPECT_TRUE(some_zero);
  Batch small = image_batch(1, 1, 2, 2);
  EXPECT_THROW(RandomCrop(3, 0).apply(small, gen), ShapeError);
  EXPECT_THROW(RandomCrop(0, 0), ValueError);
}

TEST(Transforms, WorkOnU8Images) {
  core::Generator gen(2);
  Batch b;
  b.inputs = Tensor::from_vector<uint8_t>({1, 2, 3, 4}, {1, 1, 2, 2});
  RandomHorizontalFlip(1.0).apply(b, gen);
  EXPECT_EQ(b.inputs.to_vector<int>(), (std::vector<int>{2, 1, 4, 3}));
  RandomCrop(1).apply(b, gen);
  EXPECT_EQ(b.inputs.dtype(), DType::U8);
  EXPECT_THROW(Normalize({0.0}, {1.0}).apply(b, gen), TypeError);
}

}  // namespace
}  // namespace loom::data
