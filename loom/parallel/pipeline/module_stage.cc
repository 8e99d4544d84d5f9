#include "loom/parallel/pipeline/module_stage.h"

#include "loom/autograd/engine.h"
#include "loom/core/error.h"
#include "loom/nn/normalization.h"
#include "loom/ops/ops.h"

namespace loom::parallel::pipeline {

ModuleStage::ModuleStage(std::map<int, Layers> chunks, int num_chunks, std::vector<bool> recompute)
    : chunks_(std::move(chunks)), num_chunks_(num_chunks), recompute_(std::move(recompute)) {
  for (const auto& [c, layers] : chunks_) {
    LOOM_CHECK(c >= 0 && c < num_chunks_ && !layers.empty(), "pipeline: chunk {} of {} with {} layers", c,
               num_chunks_, layers.size());
    if (!recomputes(c)) continue;
    for (const auto& layer : layers) {
      for (auto& [name, m] : layer->named_modules()) {
        LOOM_CHECK_T(ConfigError, dynamic_cast<nn::BatchNorm2d*>(m) == nullptr,
                     "pipeline: chunk {} recomputes its forward and holds a batch norm ({}), whose running "
                     "statistics the second forward would update again: turn recomputation off for it", c,
                     m->describe());
      }
    }
  }
}

void ModuleStage::begin_step(std::vector<train::StepBatch> microbatches, const train::LossFn& loss) {
  LOOM_CHECK(idle(), "pipeline: a step began with {} micro-batches not finished", saved_.size());
  micro_ = std::move(microbatches);
  loss_ = &loss;
  loss_sum_ = 0;
}

const Layers& ModuleStage::layers_of(int chunk) const {
  auto it = chunks_.find(chunk);
  LOOM_CHECK(it != chunks_.end(), "pipeline: chunk {} does not run on this rank", chunk);
  return it->second;
}

const train::StepBatch& ModuleStage::microbatch(int i) const {
  LOOM_CHECK(i >= 0 && i < static_cast<int>(micro_.size()), "pipeline: micro-batch {} of {}", i, micro_.size());
  return micro_[static_cast<size_t>(i)];
}

std::vector<core::Generator*> ModuleStage::generators_of(int chunk) const {
  std::vector<core::Generator*> out;
  for (const auto& layer : layers_of(chunk)) {
    for (auto& [name, m] : layer->named_modules()) {
      if (core::Generator* g = m->random_generator()) out.push_back(g);
    }
  }
  return out;
}

core::Tensor ModuleStage::run(int chunk, int i, core::Tensor x, bool count_loss) {
  for (const auto& layer : layers_of(chunk)) x = (*layer)(x);
  if (chunk + 1 < num_chunks_) return x;
  const train::StepBatch& mb = microbatch(i);
  const core::Tensor loss = (*loss_)(x, mb.targets);
  const auto rows = static_cast<double>(mb.rows());
  if (count_loss) loss_sum_ += loss.item<double>() * rows;
  return mb.rows() == mb.global_rows ? loss : ops::mul(loss, rows / static_cast<double>(mb.global_rows));
}

core::Tensor ModuleStage::forward(int chunk, int i, core::Tensor input) {
  const train::StepBatch& mb = microbatch(i);
  Saved s;
  if (chunk == 0) {
    s.input = mb.inputs;
  } else {
    LOOM_CHECK(input.defined(), "pipeline: chunk {} got no input for micro-batch {}", chunk, i);
    s.input = input.detach();
    if (core::is_floating(s.input.dtype())) s.input.set_requires_grad(true);
  }
  core::Tensor out;
  if (recomputes(chunk)) {
    for (core::Generator* g : generators_of(chunk)) s.generators.emplace_back(g->seed(), g->offset());
    core::NoGradGuard no_graph;
    out = run(chunk, i, s.input, true);
  } else {
    out = run(chunk, i, s.input, true);
    s.output = out;
  }
  saved_[{chunk, i}] = std::move(s);
  return chunk + 1 < num_chunks_ ? out.detach() : core::Tensor();
}

void ModuleStage::recompute(int chunk, int i) {
  auto it = saved_.find({chunk, i});
  LOOM_CHECK(it != saved_.end() && recomputes(chunk), "pipeline: recompute of micro-batch {} on chunk {} without its "
             "forward, or on a chunk without recomputation", i, chunk);
  Saved& s = it->second;
  const std::vector<core::Generator*> gens = generators_of(chunk);
  std::vector<std::pair<uint64_t, uint64_t>> after;
  for (size_t k = 0; k < gens.size(); ++k) {
    after.emplace_back(gens[k]->seed(), gens[k]->offset());
    gens[k]->set_state(s.generators[k].first, s.generators[k].second);
  }
  s.output = run(chunk, i, s.input, false);
  for (size_t k = 0; k < gens.size(); ++k) gens[k]->set_state(after[k].first, after[k].second);
}

core::Tensor ModuleStage::backward(int chunk, int i, core::Tensor output_grad) {
  auto it = saved_.find({chunk, i});
  LOOM_CHECK(it != saved_.end(), "pipeline: backward of micro-batch {} on chunk {} before its forward", i, chunk);
  Saved s = std::move(it->second);
  saved_.erase(it);
  LOOM_CHECK(s.output.defined(), "pipeline: backward of micro-batch {} on chunk {} before its recompute", i, chunk);
  if (chunk + 1 < num_chunks_) {
    LOOM_CHECK(output_grad.defined(), "pipeline: chunk {} got no output gradient for micro-batch {}", chunk, i);
    if (s.output.requires_grad()) autograd::backward(s.output, output_grad);
  } else {
    autograd::backward(s.output);
  }
  if (chunk == 0) return {};
  const core::Tensor g = s.input.grad();
  return g.defined() ? g : ops::zeros_like(s.input);  // a chunk whose output ignores its input
}

core::Tensor ModuleStage::backward_input(int chunk, int i, core::Tensor output_grad) {
  return backward(chunk, i, std::move(output_grad));
}

}  // namespace loom::parallel::pipeline
