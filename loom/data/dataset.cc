#include "loom/data/dataset.h"

#include "loom/core/error.h"
#include "loom/ops/ops.h"

namespace loom::data {

void check_indices(const std::vector<int64_t>& indices, int64_t n, const char* who) {
  for (size_t i = 0; i < indices.size(); ++i) {
    LOOM_CHECK_T(IndexError, indices[i] >= 0 && indices[i] < n, "{}: index {} (position {}) out of range [0, {})",
                 who, indices[i], i, n);
  }
}

Batch Dataset::get_batch(const std::vector<int64_t>& indices) const {
  LOOM_CHECK(!indices.empty(), "Dataset::get_batch: empty index list");
  std::vector<Tensor> inputs, targets;
  inputs.reserve(indices.size());
  targets.reserve(indices.size());
  for (int64_t i : indices) {
    Sample s = get(i);
    inputs.push_back(std::move(s.input));
    if (s.target.defined()) targets.push_back(std::move(s.target));
  }
  LOOM_CHECK(targets.empty() || targets.size() == inputs.size(),
             "Dataset::get_batch: {} of {} samples have a target; all or none must", targets.size(), inputs.size());
  Batch b;
  b.inputs = ops::stack(inputs, 0);
  if (!targets.empty()) b.targets = ops::stack(targets, 0);
  return b;
}

TensorDataset::TensorDataset(Tensor inputs, Tensor targets) : inputs_(std::move(inputs)), targets_(std::move(targets)) {
  LOOM_CHECK(inputs_.defined(), "TensorDataset: inputs are undefined");
  LOOM_CHECK_T(ShapeError, inputs_.dim() >= 1, "TensorDataset: inputs must have a sample dim, got shape {}",
               core::to_string(inputs_.shape()));
  if (targets_.defined()) {
    LOOM_CHECK_T(ShapeError, targets_.dim() >= 1 && targets_.size(0) == inputs_.size(0),
                 "TensorDataset: inputs {} and targets {} differ in the number of samples",
                 core::to_string(inputs_.shape()), core::to_string(targets_.shape()));
  }
}

Sample TensorDataset::get(int64_t index) const {
  LOOM_CHECK_T(IndexError, index >= 0 && index < size(), "TensorDataset::get: index {} out of range [0, {})", index,
               size());
  Sample s;
  s.input = ops::select(inputs_, 0, index);
  if (targets_.defined()) s.target = ops::select(targets_, 0, index);
  return s;
}

Batch TensorDataset::get_batch(const std::vector<int64_t>& indices) const {
  LOOM_CHECK(!indices.empty(), "TensorDataset::get_batch: empty index list");
  check_indices(indices, size(), "TensorDataset::get_batch");
  Tensor idx = Tensor::from_vector<int64_t>(indices, {static_cast<int64_t>(indices.size())});
  Batch b;
  b.inputs = ops::index_select(inputs_, 0, idx);
  if (targets_.defined()) b.targets = ops::index_select(targets_, 0, idx);
  return b;
}

Subset::Subset(std::shared_ptr<const Dataset> base, std::vector<int64_t> indices)
    : base_(std::move(base)), indices_(std::move(indices)) {
  LOOM_CHECK(base_ != nullptr, "Subset: base dataset is null");
  check_indices(indices_, base_->size(), "Subset");
}

Sample Subset::get(int64_t index) const {
  LOOM_CHECK_T(IndexError, index >= 0 && index < size(), "Subset::get: index {} out of range [0, {})", index, size());
  return base_->get(indices_[static_cast<size_t>(index)]);
}

Batch Subset::get_batch(const std::vector<int64_t>& indices) const {
  check_indices(indices, size(), "Subset::get_batch");
  std::vector<int64_t> mapped;
  mapped.reserve(indices.size());
  for (int64_t i : indices) mapped.push_back(indices_[static_cast<size_t>(i)]);
  return base_->get_batch(mapped);
}

}  // namespace loom::data
