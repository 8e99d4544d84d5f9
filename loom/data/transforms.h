// Batch transforms (augmentation and normalisation), applied by the DataLoader
// to each batch after it is gathered.
//
//   data::LoaderOptions o{.batch_size = 64, .shuffle = true, .seed = 1};
//   o.transforms = {std::make_shared<data::RandomCrop>(28, 4),
//                   std::make_shared<data::RandomHorizontalFlip>(0.5),
//                   std::make_shared<data::Normalize>(std::vector<double>{0.286},
//                                                     std::vector<double>{0.353})};
//
// Randomness comes only from the Generator passed in, which the loader derives
// from (seed, epoch, batch index) (see batch_generator in seeding.h), so an
// augmented batch is the same whatever the thread count and after a resume.
// Each random transform draws a fixed number of values per sample.
// Inputs are [N, C, H, W] (any number of dims between N and H, W); transforms
// return new tensors and never modify the dataset's memory.
#pragma once

#include <vector>

#include "loom/core/rng.h"
#include "loom/data/dataset.h"

namespace loom::data {

class Transform {
 public:
  virtual ~Transform() = default;
  // Replaces batch.inputs (and/or targets). Must be safe to call from several
  // threads at once on different batches.
  virtual void apply(Batch& batch, core::Generator& gen) const = 0;
};

// (x - mean[c]) / std[c] per channel c = dim 1 (one value applies to all
// channels). Floating inputs only.
class Normalize : public Transform {
 public:
  Normalize(std::vector<double> mean, std::vector<double> std);
  void apply(Batch& batch, core::Generator& gen) const override;

 private:
  std::vector<double> mean_, inv_std_;
};

// Mirrors each sample left-right (last dim) with probability p.
class RandomHorizontalFlip : public Transform {
 public:
  explicit RandomHorizontalFlip(double p = 0.5);
  void apply(Batch& batch, core::Generator& gen) const override;

 private:
  double p_;
};

struct RandomCropOptions {
  int64_t height = 0;
  int64_t width = 0;
  int64_t padding = 0;  // zeros added on each side of H and W before cropping
};

// Pads H and W by `padding` zeros on each side, then cuts a random
// height x width window per sample: RandomCrop(28, 4) or
// RandomCrop({.height = 24, .width = 32}).
class RandomCrop : public Transform {
 public:
  explicit RandomCrop(RandomCropOptions options);
  explicit RandomCrop(int64_t size, int64_t padding = 0)
      : RandomCrop(RandomCropOptions{.height = size, .width = size, .padding = padding}) {}
  void apply(Batch& batch, core::Generator& gen) const override;

 private:
  int64_t height_, width_, padding_;
};

}  // namespace loom::data
