#include "loom/parallel/pipeline/module_stage.h"

#include <utility>

#include "loom/autograd/engine.h"
#include "loom/core/error.h"
#include "loom/nn/normalization.h"
#include "loom/parallel/data_parallel_atoms.h"
#include "loom/parallel/data_parallel_fixed_point.h"
#include "loom/ops/ops.h"

namespace loom::parallel::pipeline {

ModuleStage::ModuleStage(std::map<int, Layers> chunks, int num_chunks, std::vector<bool> recompute)
    : chunks_(std::move(chunks)), num_chunks_(num_chunks), recompute_(std::move(recompute)) {
  for (const auto& [c, layers] : chunks_) {
    LOOM_CHECK(c >= 0 && c < num_chunks_ && !layers.empty(), "pipeline: chunk {} of {} with {} layers", c,
               num_chunks_, layers.size());
    const size_t first = params_.size();
    for (size_t l = 0; l < layers.size(); ++l) {
      for (const auto& [name, p] : layers[l]->named_parameters()) {
        params_.push_back(p);
        param_names_.push_back(format("'{}' of layer {} of chunk {}", name, l, c));
      }
    }
    chunk_params_[c] = {first, params_.size()};
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
  tied_grads_.assign(micro_.size(), core::Tensor());
  loss_ = &loss;
  loss_sum_ = 0;
  atoms_.reset();
}

void ModuleStage::begin_step(std::vector<train::StepBatch> microbatches, const train::LossFn& loss, Atoms atoms) {
  LOOM_CHECK(atoms.index.size() == microbatches.size(), "pipeline: {} atoms for {} micro-batches",
             atoms.index.size(), microbatches.size());
  begin_step(std::move(microbatches), loss);
  atoms_ = std::move(atoms);
  seeds_.clear();
  for (const auto& [c, layers] : chunks_) {
    for (core::Generator* g : generators_of(c)) seeds_[g] = g->seed();
  }
  if (sums_.empty()) {
    for (const core::Tensor& p : params_) sums_.push_back(ops::zeros({p.numel()}, core::DType::I64));
    std::vector<nn::Module*> modules;
    for (const auto& [c, layers] : chunks_) {
      for (const auto& layer : layers) modules.push_back(layer.get());
    }
    factors_ = std::make_unique<WeightFactors>(modules);
  }
  factors_->clear();  // a step that failed may have left some
  factors_->drop_gradients();  // a .grad after a backward is then a dense use (add_to_sums)
  summed_.assign(params_.size(), false);
}

void ModuleStage::end_step() {
  for (const auto& [g, seed] : seeds_) g->set_state(seed, 0);
  flush_factors();
  for (size_t k = 0; k < sums_.size(); ++k) {
    if (!summed_[k]) ops::fill_(sums_[k], 0.0);  // no atom gave it a gradient
  }
}

void ModuleStage::reseed(int chunk, int i) {
  if (!atoms_) return;
  const int64_t atom = atoms_->index[static_cast<size_t>(i)];
  for (core::Generator* g : generators_of(chunk)) g->set_state(atom_seed(seeds_.at(g), atoms_->step, atom), 0);
}

// The chunk's gradients of one atom, rounded into the sums; .grad is zeroed for the next.
void ModuleStage::add_to_sums(int chunk) {
  const auto [first, last] = chunk_params_.at(chunk);
  for (size_t k = first; k < last; ++k) {
    const core::Tensor g = params_[k].grad();
    if (!g.defined()) continue;  // unused by this atom, or the tied weight (taken already)
    round_into(k, g, !summed_[k], /*zero=*/true);
  }
  if (factors_) factors_->drop_gradients();  // (a dense use of a taken weight is rare: its zeroed .grad goes)
}

// sums_[k] (+)= round(g 2^40); g = 0 if `zero` (a .grad the next atom adds into).
void ModuleStage::round_into(size_t k, const core::Tensor& g, bool first, bool zero) {
  LOOM_CHECK(g.is_contiguous(), "pipeline: the gradient of {} is not contiguous", param_names_[k]);
  const auto bad = fixed_point::accumulate(
      g, sums_[k], {.mode = first ? fixed_point::Mode::Assign : fixed_point::Mode::Add, .zero_grad = zero});
  LOOM_CHECK_T(ValueError, !bad,
               "deterministic pipeline: element {} of the gradient of {} is {}, outside the range of the exact "
               "sums (|g| <= {}): the step cannot be made deterministic", bad ? bad->index : 0, param_names_[k],
               bad ? bad->value : 0.0, fixed_point::kMaxMagnitude);
  summed_[k] = true;
}

void ModuleStage::take_factors(std::optional<ops::TakeWeightFactors>& taking) {
  if (atoms_) taking.emplace(factors_->taker());
}

// The step's terms of each linear weight, rounded into its sums in one pass
// (parallel::WeightFactors; the same terms as deterministic data parallelism's).
void ModuleStage::flush_factors() {
  if (!factors_) return;
  for (size_t k = 0; k < params_.size(); ++k) {
    if (factors_->pending(params_[k]) == 0) continue;
    const auto bad = factors_->flush(params_[k], sums_[k], summed_[k] ? fixed_point::Mode::Add : fixed_point::Mode::Assign);
    summed_[k] = true;
    LOOM_CHECK_T(ValueError, !bad,
                 "deterministic pipeline: element {} of the gradient of {} is {} for one atom, outside the range of "
                 "the exact sums (|g| <= {}): the step cannot be made deterministic", bad ? bad->index : 0,
                 param_names_[k], bad ? bad->value : 0.0, fixed_point::kMaxMagnitude);
  }
}

void ModuleStage::tie(core::Tensor weight) {
  LOOM_CHECK(idle(), "pipeline: tie() during a step");
  tied_ = std::move(weight);
}

std::vector<core::Tensor> ModuleStage::take_tied_gradients() { return std::exchange(tied_grads_, {}); }

void ModuleStage::add_to_sum(const core::Tensor& param, const core::Tensor& g) {
  for (size_t k = 0; k < params_.size(); ++k) {
    if (params_[k].impl_ptr() != param.impl_ptr()) continue;
    // end_step zeroed the sums no atom reached; nobody reads g again.
    round_into(k, ops::contiguous(g), /*first=*/false, /*zero=*/false);
    return;
  }
  LOOM_CHECK(false, "pipeline: add_to_sum of a tensor that is none of this rank's parameters");
}

void ModuleStage::after_backward(int chunk, int i) {
  if (tied_.defined()) {
    core::Tensor g = tied_.grad();
    if (g.defined()) {
      tied_.set_grad(core::Tensor());
      core::Tensor& kept = tied_grads_.at(static_cast<size_t>(i));
      kept = kept.defined() ? ops::add(kept, g) : g;  // the head's use, then the embedding's: autograd's sum
    }
  }
  if (atoms_) add_to_sums(chunk);
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
  reseed(chunk, i);
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

core::Tensor ModuleStage::run_backward(int chunk, int i, core::Tensor output_grad, autograd::DeferredWeights* later) {
  auto it = saved_.find({chunk, i});
  LOOM_CHECK(it != saved_.end(), "pipeline: backward of micro-batch {} on chunk {} before its forward", i, chunk);
  Saved s = std::move(it->second);
  saved_.erase(it);
  LOOM_CHECK(s.output.defined(), "pipeline: backward of micro-batch {} on chunk {} before its recompute", i, chunk);
  autograd::BackwardOptions o{.defer_weights = later};
  if (chunk > 0) o.now = {s.input};
  if (chunk + 1 < num_chunks_) {
    LOOM_CHECK(output_grad.defined(), "pipeline: chunk {} got no output gradient for micro-batch {}", chunk, i);
    if (!s.output.requires_grad()) return chunk == 0 ? core::Tensor() : ops::zeros_like(s.input);
    o.grad = output_grad;
  }
  {
    std::optional<ops::TakeWeightFactors> taking;
    take_factors(taking);
    autograd::backward(s.output, o);
  }
  if (chunk == 0) return {};
  const core::Tensor g = s.input.grad();
  return g.defined() ? g : ops::zeros_like(s.input);  // a chunk whose output ignores its input
}

core::Tensor ModuleStage::backward(int chunk, int i, core::Tensor output_grad) {
  core::Tensor g = run_backward(chunk, i, std::move(output_grad), nullptr);
  after_backward(chunk, i);
  return g;
}

core::Tensor ModuleStage::backward_input(int chunk, int i, core::Tensor output_grad) {
  return run_backward(chunk, i, std::move(output_grad), &deferred_[{chunk, i}]);
}

void ModuleStage::backward_weight(int chunk, int i) {
  auto it = deferred_.find({chunk, i});
  LOOM_CHECK(it != deferred_.end(), "pipeline: weight gradient of micro-batch {} on chunk {} before its input "
             "gradient", i, chunk);
  {
    std::optional<ops::TakeWeightFactors> taking;
    take_factors(taking);
    autograd::backward_weights(it->second);
  }
  deferred_.erase(it);
  after_backward(chunk, i);
}

}  // namespace loom::parallel::pipeline
