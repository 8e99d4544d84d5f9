// Datasets: random access to samples, and to whole batches.
//
//   // given: Tensor images, Tensor labels
//   auto ds = std::make_shared<data::TensorDataset>(images, labels);  // [N, 1, 28, 28], [N]
//   data::Sample s = ds->get(7);                      // s.input [1, 28, 28], s.target []
//   data::Batch b = ds->get_batch({3, 1, 4});         // b.inputs [3, 1, 28, 28], b.targets [3]
//   auto val = std::make_shared<data::Subset>(ds, std::vector<int64_t>{0, 2, 5});
//
// get and get_batch are const and must be safe to call from several threads at
// once: the DataLoader's prefetch threads call them concurrently.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "loom/core/tensor.h"

namespace loom::data {

using core::Tensor;

struct Sample {
  Tensor input;
  Tensor target;  // undefined for unlabelled data
};

// Row i of inputs/targets is sample i of the batch.
struct Batch {
  Tensor inputs;   // [B, ...]
  Tensor targets;  // [B, ...], undefined for unlabelled data
  int64_t size() const { return inputs.defined() ? inputs.size(0) : 0; }
};

class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual int64_t size() const = 0;
  // Throws IndexError for an index outside [0, size()).
  virtual Sample get(int64_t index) const = 0;
  // The samples at `indices`, stacked along a new dim 0. The default calls get()
  // per index; datasets that hold their data in memory override it with a gather.
  virtual Batch get_batch(const std::vector<int64_t>& indices) const;
};

// In-memory data: inputs [N, ...] and targets [N, ...] (or none). get_batch is
// one index_select per tensor.
class TensorDataset : public Dataset {
 public:
  TensorDataset(Tensor inputs, Tensor targets);
  explicit TensorDataset(Tensor inputs) : TensorDataset(std::move(inputs), Tensor()) {}

  int64_t size() const override { return inputs_.size(0); }
  Sample get(int64_t index) const override;  // views of row `index`
  Batch get_batch(const std::vector<int64_t>& indices) const override;

  const Tensor& inputs() const { return inputs_; }
  const Tensor& targets() const { return targets_; }

 private:
  Tensor inputs_;
  Tensor targets_;
};

// The samples of `base` at `indices` (in that order; repeats allowed).
class Subset : public Dataset {
 public:
  Subset(std::shared_ptr<const Dataset> base, std::vector<int64_t> indices);

  int64_t size() const override { return static_cast<int64_t>(indices_.size()); }
  Sample get(int64_t index) const override;
  Batch get_batch(const std::vector<int64_t>& indices) const override;  // forwards to base->get_batch

  const std::vector<int64_t>& indices() const { return indices_; }
  const Dataset& base() const { return *base_; }

 private:
  std::shared_ptr<const Dataset> base_;
  std::vector<int64_t> indices_;
};

// Throws IndexError unless every index is in [0, n); `who` names the caller.
void check_indices(const std::vector<int64_t>& indices, int64_t n, const char* who);

}  // namespace loom::data
