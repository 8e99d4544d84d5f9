// A small synthetic IDX task for Trainer tests: 8x8 images of two classes told
// apart by the mean brightness of the left vs the right half, plus noise.
// Writes train-images.gz, train-labels (384 samples), test-images.gz and
// test-labels (128) into `dir`; job_text() is a job file that trains on them.
#pragma once

#include <filesystem>
#include <string>

#include "loom/core/error.h"
#include "loom/data/idx.h"
#include "loom/ops/ops.h"

namespace loom::testing {

inline void write_two_class_idx(const std::filesystem::path& dir) {
  core::Generator gen(3);
  for (const char* split : {"train", "test"}) {
    const int64_t n = std::string(split) == "train" ? 384 : 128;
    core::Tensor noise = ops::rand({n, 8, 8}, gen, core::DType::F32, 0, 100);
    core::Tensor labels = ops::to_dtype(ops::mul(ops::rand({n}, gen), 2.0), core::DType::I64);
    auto img = noise.to_vector<float>();
    auto lab = labels.to_vector<int64_t>();
    for (int64_t i = 0; i < n; ++i)
      for (int64_t r = 0; r < 8; ++r)
        for (int64_t c = 0; c < 8; ++c)
          if ((c < 4) == (lab[i] == 0)) img[(i * 8 + r) * 8 + c] += 120;
    core::Tensor images = ops::to_dtype(core::Tensor::from_vector<float>(img, {n, 8, 8}), core::DType::U8);
    data::write_idx((dir / (std::string(split) + "-images.gz")).string(), images);
    data::write_idx((dir / (std::string(split) + "-labels")).string(), ops::to_dtype(labels, core::DType::U8));
  }
}

// `model`: the [model] table's body; `num_workers`: prefetch threads.
inline std::string two_class_job_text(const std::string& model, const std::filesystem::path& dir, int num_workers = 2) {
  return format(R"(
[model]
{}
[data]
dataset = "idx"
root = "{}"
train_file = "train-images.gz"
train_labels = "train-labels"
test_file = "test-images.gz"
test_labels = "test-labels"
batch_size = 32
num_workers = {}
[optimizer]
name = "sgd"
lr = 0.05
momentum = 0.9
[train]
epochs = 4
seed = 5
threads = 1
)", model, dir.string(), num_workers);
}

}  // namespace loom::testing
