#include "loom/parallel/pipeline_strategy.h"

#include <map>
#include <unordered_map>

#include "loom/comm/collectives/collectives.h"
#include "loom/comm/transport/sub_transport.h"
#include "loom/core/error.h"
#include "loom/nn/normalization.h"
#include "loom/ops/ops.h"
#include "loom/parallel/data_parallel_atoms.h"
#include "loom/parallel/data_parallel_fixed_point.h"
#include "loom/parallel/pipeline/executor.h"
#include "loom/parallel/step_vote.h"

namespace loom::parallel {

using core::Tensor;

namespace {

// Point-to-point tags of the strategy's own messages: bit 53 set, above
// every tag of pipeline::CommLinks (activations and gradients).
enum class Message : uint64_t { Tensor = 1, OptimizerState = 2, Loss = 3, TiedGradient = 4 };
uint64_t tag(Message kind, uint64_t value) {
  LOOM_ASSERT(value < (uint64_t{1} << 48));
  return (uint64_t{1} << 53) | (static_cast<uint64_t>(kind) << 48) | value;
}

// What gather() moves of a layer: its parameters, its buffers, and the
// states of its generators (checkpoints record them) as (seed, offset) pairs.
std::vector<Tensor> tensors_of(nn::Module& layer) {
  std::vector<Tensor> out;
  for (const auto& [name, p] : layer.named_parameters()) out.push_back(p);
  for (const auto& [name, b] : layer.named_buffers()) out.push_back(b);
  return out;
}
std::vector<core::Generator*> generators_of(nn::Module& layer) {
  std::vector<core::Generator*> out;
  for (auto& [name, m] : layer.named_modules()) {
    if (core::Generator* g = m->random_generator()) out.push_back(g);
  }
  return out;
}

}  // namespace

PipelineStrategy::PipelineStrategy(std::unique_ptr<ProcessGroup> group, PipelineStrategyOptions options)
    : group_(std::move(group)), comm_(&group_->comm()), options_(std::move(options)) {}

PipelineStrategy::PipelineStrategy(comm::Communicator comm, PipelineStrategyOptions options)
    : own_comm_(std::move(comm)), comm_(&own_comm_), options_(std::move(options)) {}

void PipelineStrategy::attach(nn::Module& model, const optim::OptimizerSpec&) {
  LOOM_CHECK_T(ConfigError, options_.stages >= 1 && options_.data_parallel >= 1 &&
                                options_.stages * options_.data_parallel == comm_->size,
               "pipeline: [distributed] stages = {} x data_parallel = {} processes, but the job has {}",
               options_.stages, options_.data_parallel, comm_->size);
  plan_ = pipeline::compile_schedule({.kind = options_.schedule, .stages = options_.stages,
                                      .microbatches = options_.microbatches, .virtual_stages = options_.virtual_stages,
                                      .recompute = options_.recompute});
  layers_ = pipeline::pipeline_layers(model);
  tied_ = pipeline::tied_weight(model);
  if (options_.deterministic) {
    steps_.atoms = static_cast<int64_t>(options_.data_parallel) * options_.microbatches;
    check_atoms(steps_.atoms, options_.data_parallel);
    for (auto& [name, m] : model.named_modules()) {
      LOOM_CHECK_T(ConfigError, dynamic_cast<nn::BatchNorm2d*>(m) == nullptr,
                   "deterministic pipeline: batch norm '{}' is not supported (its statistics would need the atoms' "
                   "all-gather deterministic data parallelism does); use layer norm or deterministic = false", name);
    }
  }
  const int replica = data_rank(), P = options_.stages;
  std::vector<int> stage_ranks, replicas;
  for (int s = 0; s < P; ++s) stage_ranks.push_back(replica * P + s);
  for (int d = 0; d < options_.data_parallel; ++d) replicas.push_back(d * P + stage());
  links_ = std::make_unique<pipeline::CommLinks>(*comm_, std::move(stage_ranks));
  if (options_.data_parallel > 1) replicas_ = comm::sub_communicator(*comm_, replicas, /*channel=*/3);
  if (!options_.placement.empty()) {
    build_stage(pipeline::cut_at(options_.placement, static_cast<int64_t>(layers_.size())));
  } else if (options_.balance == StageBalance::Parameters) {
    build_stage(pipeline::balance(pipeline::parameter_costs(layers_), plan_.num_chunks()));
  }  // StageBalance::Time: at the first step, on its first micro-batch (measured_cut)
}

void PipelineStrategy::build_stage(std::vector<pipeline::LayerRange> chunks) {
  const int parts = plan_.num_chunks();
  LOOM_CHECK_T(ConfigError, static_cast<int>(chunks.size()) == parts,
               "pipeline: the placement names {} chunks, the pipeline has {} (stages {} x virtual_stages {})",
               chunks.size(), parts, options_.stages, options_.virtual_stages);
  chunks_ = std::move(chunks);
  // A parameter registered in layers of two ranks would get two updates from halves of its gradient.
  std::unordered_map<const void*, std::pair<int, std::string>> rank_of_param;
  for (int c = 0; c < parts; ++c) {
    for (int64_t l = chunks_[static_cast<size_t>(c)].begin; l < chunks_[static_cast<size_t>(c)].end; ++l) {
      for (const auto& [name, p] : layers_[static_cast<size_t>(l)]->named_parameters()) {
        const auto [it, fresh] = rank_of_param.try_emplace(p.impl_ptr().get(), plan_.rank_of(c), name);
        LOOM_CHECK_T(ConfigError, fresh || it->second.first == plan_.rank_of(c),
                     "pipeline: one parameter is '{}' of a layer on stage {} and '{}' of layer {} on stage {}: a "
                     "weight shared across stages is supported only as a GPT's tied embedding", it->second.second,
                     it->second.first, name, l, plan_.rank_of(c));
      }
    }
  }
  std::map<int, pipeline::Layers> mine;
  own_params_.clear();
  for (int c = 0; c < parts; ++c) {
    if (plan_.rank_of(c) != stage()) continue;
    const auto& r = chunks_[static_cast<size_t>(c)];
    mine[c] = pipeline::Layers(layers_.begin() + r.begin, layers_.begin() + r.end);
    for (const auto& layer : mine[c]) {
      for (const auto& [name, p] : layer->named_parameters()) own_params_.push_back(p);
    }
  }
  stage_ = std::make_unique<pipeline::ModuleStage>(std::move(mine), parts, options_.recompute);
  if (tied_.defined() && (stage() == plan_.rank_of(0) || stage() == plan_.rank_of(parts - 1))) stage_->tie(tied_);
}

// Rank 0 times every layer's forward and backward on `sample` and cuts there;
// every rank takes its cut (collective). The model's buffers and generators
// are put back as they were, so measuring changes no result.
std::vector<pipeline::LayerRange> PipelineStrategy::measured_cut(const Tensor& sample) {
  const int parts = plan_.num_chunks();
  Tensor firsts = ops::zeros({parts}, core::DType::I64);
  if (rank() == 0) {
    std::vector<Tensor> kept;  // copies of the buffers (batch norm's statistics)
    std::vector<std::pair<core::Generator*, std::pair<uint64_t, uint64_t>>> generators;
    for (const auto& layer : layers_) {
      for (const auto& [name, b] : layer->named_buffers()) kept.push_back(ops::contiguous(ops::mul(b, 1.0)));
      for (auto& [name, m] : layer->named_modules()) {
        if (core::Generator* g = m->random_generator()) generators.push_back({g, {g->seed(), g->offset()}});
      }
    }
    const auto cut = pipeline::balance(pipeline::measured_costs(layers_, sample), parts);
    size_t k = 0;
    for (const auto& layer : layers_) {
      for (auto [name, b] : layer->named_buffers()) ops::copy_(b, kept[k++]);
    }
    for (auto& [g, state] : generators) g->set_state(state.first, state.second);
    std::vector<int64_t> v;
    for (const auto& r : cut) v.push_back(r.begin);
    firsts = Tensor::from_vector<int64_t>(v, {parts});
  }
  comm::broadcast(*comm_, firsts, 0, {.timeout = options_.timeout});
  return pipeline::cut_at(firsts.to_vector<int64_t>(), static_cast<int64_t>(layers_.size()));
}

double PipelineStrategy::step(const train::StepBatch& batch, train::StepParts& parts) {
  LOOM_CHECK(plan_.num_chunks() > 0, "PipelineStrategy::step before attach");
  if (!stage_) {
    const auto micro = train::microbatches_of(batch, options_.microbatches);
    build_stage(measured_cut(micro.empty() ? batch.inputs : micro.front().inputs));
  }
  parts.optimizer.zero_grad();
  std::vector<int64_t> atoms;
  std::vector<train::StepBatch> micro = options_.deterministic ? atom_microbatches(batch, atoms)
                                                               : train::microbatches_of(batch, options_.microbatches);
  if (micro.empty()) return 0.0;
  pipeline::Plan fewer;  // a batch with fewer rows than micro-batches (the end of an epoch)
  if (static_cast<int>(micro.size()) != options_.microbatches) {
    pipeline::ScheduleOptions o = plan_.options;
    o.microbatches = static_cast<int>(micro.size());
    LOOM_CHECK_T(ConfigError, o.kind != io::PipelineSchedule::Interleaved || o.microbatches % o.stages == 0,
                 "pipeline: a batch of {} rows makes {} micro-batches, and the interleaved schedule needs a multiple "
                 "of stages = {}: use batches of at least microbatches = {} rows (drop the last, smaller batch)",
                 batch.rows(), micro.size(), o.stages, options_.microbatches);
    fewer = pipeline::compile_schedule(o);
  }
  if (options_.deterministic) {
    stage_->begin_step(std::move(micro), parts.loss, {.step = steps_.step, .index = std::move(atoms)});
  } else {
    stage_->begin_step(std::move(micro), parts.loss);
  }
  pipeline::run_rank(fewer.ranks.empty() ? plan_ : fewer, stage(), *stage_, *links_,
                     std::chrono::steady_clock::now() + options_.timeout);
  if (options_.deterministic) stage_->end_step();
  if (tied_.defined()) add_tied_gradients();
  if (options_.deterministic) {
    exact_gradients();
    ++steps_.step;
  } else if (options_.data_parallel > 1) {
    sync_gradients();
  }
  if (tied_.defined()) share_tied_gradient();
  parts.optimizer.step();
  // The last chunk's rank knows the loss of its replica's rows; rank 0 reports replica 0's.
  const int last = plan_.rank_of(plan_.num_chunks() - 1);
  Tensor loss = Tensor::scalar(stage_->loss_sum() / static_cast<double>(batch.rows()));
  if (last == 0) return loss.item<double>();
  if (rank() == last) comm::send(*comm_, loss, 0, {.tag = tag(Message::Loss, 0)});
  if (rank() == 0) comm::recv(*comm_, loss, last, {.tag = tag(Message::Loss, 0), .timeout = options_.timeout});
  return loss.item<double>();
}

std::vector<train::StepBatch> PipelineStrategy::atom_microbatches(const train::StepBatch& batch,
                                                                  std::vector<int64_t>& index) const {
  std::vector<train::StepBatch> out;
  for (const Atom& a : atoms_of_rank(batch.global_rows, steps_.atoms, data_rank(), options_.data_parallel)) {
    if (a.rows() == 0) continue;  // a batch with fewer rows than atoms
    out.push_back({ops::slice(batch.inputs, 0, a.begin, a.end), ops::slice(batch.targets, 0, a.begin, a.end),
                   batch.global_rows});
    index.push_back(a.index);
  }
  return out;
}

void PipelineStrategy::exact_gradients() {
  const std::vector<Tensor>& sums = stage_->fixed_point_sums();
  if (sums.empty()) return;
  std::vector<Tensor> parts(sums.begin(), sums.end());
  Tensor flat = ops::concat(parts, 0);  // i64, the stage's parameters in order
  if (options_.data_parallel > 1) comm::allreduce(replicas_, flat, {.timeout = options_.timeout});
  int64_t at = 0;
  for (Tensor p : stage_->params()) {
    if (!p.grad().defined()) p.set_grad(ops::zeros_like(p));
    Tensor g = p.grad();
    fixed_point::to_float(ops::slice(flat, 0, at, at + p.numel()), g);
    at += p.numel();
  }
}

// The embedding's rank and the head's rank of this replica (the same one when v = 1 and P = 1).
std::pair<int, int> PipelineStrategy::tied_ranks() const {
  const int first = data_rank() * options_.stages;
  return {first + plan_.rank_of(0), first + plan_.rank_of(plan_.num_chunks() - 1)};
}

// Each micro-batch's gradient of the tied weight is the sum of its two uses'
// (the head's rank sends its part to the embedding's), and the step's is the
// sum over the micro-batches in their order: what autograd and gradient
// accumulation give in one process, bit for bit. Deterministic: each
// micro-batch's (atom's) whole gradient is rounded into the fixed-point sum,
// as one process rounds the atom's.
void PipelineStrategy::add_tied_gradients() {
  const auto [owner, user] = tied_ranks();
  if (rank() != owner && rank() != user) return;
  std::vector<Tensor> kept = stage_->take_tied_gradients();
  comm::SendRecvOptions o{.timeout = options_.timeout};
  if (owner != user) {
    for (size_t i = 0; i < kept.size(); ++i) {
      o.tag = tag(Message::TiedGradient, i);
      if (rank() == user) {
        LOOM_CHECK(kept[i].defined(), "pipeline: the head left no gradient of the tied weight in micro-batch {}", i);
        comm::send(*comm_, kept[i], owner, o);
      } else {
        Tensor head = ops::empty_like(tied_);
        comm::recv(*comm_, head, user, o);
        kept[i] = kept[i].defined() ? ops::add(kept[i], head) : head;
      }
    }
    if (rank() == user) return;
  }
  Tensor sum;
  for (const Tensor& g : kept) {
    if (!g.defined()) continue;
    if (options_.deterministic) {
      stage_->add_to_sum(tied_, g);
    } else {
      sum = sum.defined() ? ops::add(sum, g) : g;
    }
  }
  if (sum.defined()) tied_.set_grad(ops::contiguous(sum));
}

// The embedding's rank sends the tied weight's final gradient (summed over
// the replicas) to the head's, so both take the same update.
void PipelineStrategy::share_tied_gradient() {
  const auto [owner, user] = tied_ranks();
  if (owner == user || (rank() != owner && rank() != user)) return;
  const comm::SendRecvOptions o{.tag = tag(Message::TiedGradient, uint64_t{1} << 40), .timeout = options_.timeout};
  if (rank() == owner) {
    LOOM_CHECK(tied_.grad().defined(), "pipeline: the tied weight has no gradient after the step");
    comm::send(*comm_, tied_.grad(), user, o);
  } else {
    Tensor g = ops::empty_like(tied_);
    comm::recv(*comm_, g, owner, o);
    tied_.set_grad(g);
  }
}

void PipelineStrategy::add_checkpoint_state(io::NamedTensors&, io::Metadata& meta) {
  if (options_.deterministic) steps_.add_to(meta);
}

void PipelineStrategy::restore_checkpoint_state(const io::SafetensorsFile& file, const std::string& source) {
  train::Strategy::restore_checkpoint_state(file, source);
  if (options_.deterministic) steps_.restore(file, source);
}

void PipelineStrategy::sync_gradients() {
  // One flat buffer: the stage's gradients in parameter order, summed over its replicas.
  int64_t numel = 0;
  for (const Tensor& p : own_params_) numel += p.numel();
  if (numel == 0) return;
  Tensor flat = ops::empty({numel}, own_params_.front().dtype());
  int64_t at = 0;
  for (const Tensor& p : own_params_) {
    const Tensor g = p.grad();
    Tensor slot = ops::slice(flat, 0, at, at + p.numel());
    if (g.defined()) {
      ops::copy_(slot, ops::reshape(g, {p.numel()}));
    } else {
      ops::fill_(slot, 0.0);
    }
    at += p.numel();
  }
  comm::allreduce(replicas_, flat, {.timeout = options_.timeout});
  at = 0;
  for (Tensor p : own_params_) {
    Tensor g = p.grad();
    const Tensor sum = ops::reshape(ops::slice(flat, 0, at, at + p.numel()), p.shape());
    if (g.defined()) {
      ops::copy_(g, sum);
    } else {
      p.set_grad(ops::contiguous(sum));
    }
    at += p.numel();
  }
}

void PipelineStrategy::gather(nn::Module& model, optim::Optimizer* local) {
  if (!stage_) return;  // not cut yet (balance by time, before the first step): every rank holds the initial model
  if (data_rank() != 0) return;  // the replicas hold the same weights: replica 0's stages send theirs
  const comm::SendRecvOptions base{.timeout = options_.timeout};
  // Parameters and buffers, chunk by chunk, from their rank to rank 0.
  std::unordered_map<const void*, int> owner;  // a parameter's TensorImpl -> its rank
  for (int c = 0; c < plan_.num_chunks(); ++c) {
    const int from = plan_.rank_of(c);
    const auto& r = chunks_[static_cast<size_t>(c)];
    uint64_t index = static_cast<uint64_t>(c) << 24;
    for (int64_t l = r.begin; l < r.end; ++l) {
      for (const auto& [name, p] : layers_[static_cast<size_t>(l)]->named_parameters()) owner[p.impl_ptr().get()] = from;
      nn::Module& layer = *layers_[static_cast<size_t>(l)];
      for (Tensor t : tensors_of(layer)) {
        comm::SendRecvOptions o = base;
        o.tag = tag(Message::Tensor, index++);
        if (from != 0 && rank() == from) comm::send(*comm_, t, 0, o);
        if (from != 0 && rank() == 0) comm::recv(*comm_, t, from, o);
      }
      for (core::Generator* g : generators_of(layer)) {
        comm::SendRecvOptions o = base;
        o.tag = tag(Message::Tensor, index++);
        Tensor state = Tensor::from_vector<int64_t>({static_cast<int64_t>(g->seed()), static_cast<int64_t>(g->offset())}, {2});
        if (from != 0 && rank() == from) comm::send(*comm_, state, 0, o);
        if (from != 0 && rank() == 0) {
          comm::recv(*comm_, state, from, o);
          const auto v = state.to_vector<int64_t>();
          g->set_state(static_cast<uint64_t>(v[0]), static_cast<uint64_t>(v[1]));
        }
      }
    }
  }
  if (local == nullptr) return;
  // The optimizer's state of each parameter from its rank: the step count, then the slots.
  optim::OptimizerState state = local->state_snapshot();
  const optim::StateLayout layout = local->state_layout();
  const auto& params = local->params();
  for (size_t i = 0; i < params.size(); ++i) {
    auto it = owner.find(params[i].impl_ptr().get());
    const int from = it == owner.end() ? 0 : it->second;
    if (from == 0 || (rank() != 0 && rank() != from)) continue;
    optim::ParamState& ps = state.params[i];
    comm::SendRecvOptions o = base;
    o.tag = tag(Message::OptimizerState, i);
    Tensor step = Tensor::scalar<int64_t>(ps.step);
    if (rank() == from) comm::send(*comm_, step, 0, o);
    if (rank() == 0) {
      comm::recv(*comm_, step, from, o);
      ps.step = step.item<int64_t>();
      ps.slots.clear();
      for (size_t s = 0; ps.step > 0 && s < layout.slots.size(); ++s) ps.slots.push_back(ops::empty_like(params[i]));
    }
    for (Tensor& slot : ps.slots) {
      if (rank() == from) comm::send(*comm_, ops::contiguous(slot), 0, o);
      if (rank() == 0) comm::recv(*comm_, slot, from, o);
    }
  }
  if (rank() == 0) local->load_state(state);
}

train::StepVote PipelineStrategy::vote(train::StepVote mine) { return allreduce_vote(*comm_, mine); }

void PipelineStrategy::barrier(std::optional<std::chrono::milliseconds> timeout) {
  comm::barrier(*comm_, {.timeout = timeout.value_or(options_.timeout)});
}

void PipelineStrategy::finish() {
  if (group_) group_->finish();
}

}  // namespace loom::parallel
