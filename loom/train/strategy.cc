#include "loom/train/strategy.h"

#include "loom/autograd/engine.h"
#include "loom/core/error.h"
#include "loom/ops/ops.h"

namespace loom::train {

using core::Tensor;

StepBatch share_of_batch(const data::Batch& global, int rank, int world_size) {
  LOOM_ASSERT(world_size >= 1 && rank >= 0 && rank < world_size);
  const int64_t b = global.inputs.size(0);
  if (world_size == 1) return {global.inputs, global.targets, b};
  const int64_t begin = b * rank / world_size, end = b * (rank + 1) / world_size;
  return {ops::slice(global.inputs, 0, begin, end), ops::slice(global.targets, 0, begin, end), b};
}

std::vector<StepBatch> microbatches_of(const StepBatch& batch, int64_t m) {
  LOOM_CHECK_T(ConfigError, m >= 1, "[train] microbatches = {}: at least 1", m);
  const int64_t rows = batch.rows();
  if (m == 1) return rows == 0 ? std::vector<StepBatch>{} : std::vector<StepBatch>{batch};
  std::vector<StepBatch> out;
  for (int64_t k = 0; k < m; ++k) {
    const int64_t begin = rows * k / m, end = rows * (k + 1) / m;
    if (begin == end) continue;
    out.push_back({ops::slice(batch.inputs, 0, begin, end), ops::slice(batch.targets, 0, begin, end), batch.global_rows});
  }
  return out;
}

double forward_backward(const StepBatch& batch, StepParts& parts, const BeforeBackward& before_backward) {
  const std::vector<StepBatch> micro = microbatches_of(batch, parts.microbatches);
  double loss_sum = 0.0;
  for (size_t k = 0; k < micro.size(); ++k) {
    const int64_t rows = micro[k].rows();
    Tensor loss = parts.loss(parts.model(micro[k].inputs), micro[k].targets);
    if (before_backward) before_backward(k + 1 == micro.size());
    if (rows == batch.global_rows) {
      autograd::backward(loss);
    } else {
      autograd::backward(ops::mul(loss, static_cast<double>(rows) / static_cast<double>(batch.global_rows)));
    }
    if (micro.size() == 1) return loss.item<double>();
    loss_sum += loss.item<double>() * static_cast<double>(rows);
  }
  return micro.empty() ? 0.0 : loss_sum / static_cast<double>(batch.rows());
}

void Strategy::restore_checkpoint_state(const io::SafetensorsFile& file, const std::string& source) {
  // Tables that live only on parameter servers (server embeddings) have no
  // home without them: refused.
  for (const auto& [name, t] : file.tensors) {
    LOOM_CHECK_T(IoError, name.rfind(kServerStatePrefix, 0) != 0,
                 "{}: the checkpoint holds a table that lives on parameter servers ('{}'): resume it with a parameter-"
                 "server [distributed] mode (dist_sync, dist_async or dist_ssp)", source, name);
  }
}

double LocalStrategy::step(const StepBatch& batch, StepParts& parts) {
  parts.optimizer.zero_grad();
  const double loss = forward_backward(batch, parts);
  parts.optimizer.step();
  return loss;
}

}  // namespace loom::train
