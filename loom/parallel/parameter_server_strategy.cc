#include "loom/parallel/parameter_server_strategy.h"

#include <algorithm>
#include <cstring>
#include <map>

#include "loom/autograd/engine.h"
#include "loom/core/error.h"
#include "loom/nn/normalization.h"
#include "loom/ops/math.h"
#include "loom/parallel/data_parallel_atoms.h"
#include "loom/parallel/data_parallel_fixed_point.h"
#include "loom/ops/creation.h"
#include "loom/ops/view.h"

namespace loom::parallel {

ParameterServerStrategy::ParameterServerStrategy(std::unique_ptr<ps::KVStore> kv,
                                                 ParameterServerStrategyOptions options)
    : owned_(std::move(kv)), kv_(owned_.get()), options_(options) {
  LOOM_ASSERT(kv_ != nullptr);
}

ParameterServerStrategy::ParameterServerStrategy(ps::KVStore& kv, ParameterServerStrategyOptions options)
    : kv_(&kv), options_(options) {}

// What deterministic mode needs, refused before anything reaches the servers.
void ParameterServerStrategy::check_deterministic(nn::Module& model) const {
  LOOM_CHECK_T(ConfigError, kv_->type() == io::Mode::DistSync,
               "[distributed] deterministic = true with mode = \"{}\": only dist_sync can be deterministic (its "
               "servers add every worker's push of a step before updating); dist_async and dist_ssp apply each push "
               "as it arrives, so the weights depend on the order the pushes reach the servers", kv_->type());
  check_atoms(options_.deterministic_atoms, world_size());
  for (auto& [name, m] : model.named_modules()) {
    LOOM_CHECK_T(ConfigError, dynamic_cast<nn::BatchNorm2d*>(m) == nullptr,
                 "[distributed] deterministic = true on parameter servers: module '{}' is a batch norm, whose running "
                 "statistics would need a collective among the workers (the servers hold only parameters); use "
                 "mode = \"allreduce\" for deterministic training of this model", name);
    LOOM_CHECK_T(ConfigError, dynamic_cast<ServerEmbedding*>(m) == nullptr,
                 "[distributed] deterministic = true on parameter servers: module '{}' is a server embedding, whose "
                 "row-sparse pushes are merged in floating point", name);
  }
}

std::string_view ParameterServerStrategy::name() const { return io::name(kv_->type()); }

void ParameterServerStrategy::attach(nn::Module& model, const optim::OptimizerSpec& spec) {
  if (options_.deterministic) check_deterministic(model);
  for (const auto& [name, p] : model.named_parameters()) {
    keys_.push_back(static_cast<int64_t>(keys_.size()));
    params_.push_back(p);
    names_.push_back(name);
    if (options_.deterministic) sums_.push_back(ops::zeros(p.shape(), core::DType::I64));
    else grads_.push_back(ops::zeros(p.shape(), p.dtype()));
  }
  kv_->init(keys_, params_);
  int64_t next_key = static_cast<int64_t>(keys_.size());
  for (auto& [name, m] : model.named_modules()) {
    if (auto* e = dynamic_cast<ServerEmbedding*>(m)) {
      e->bind(*kv_, next_key++);
      embeddings_.push_back(e);
      table_names_.push_back(name + ".weight");
    }
  }
  const auto rule = optim::make_update_rule(spec);
  rule_ = std::string(rule->name());
  slots_ = rule->state_names();
  kv_->set_optimizer(spec);
  kv_->pull(keys_, params_);  // everyone starts from rank 0's weights
}

double ParameterServerStrategy::step(const train::StepBatch& batch, train::StepParts& parts) {
  parts.optimizer.zero_grad();
  if (options_.deterministic) {
    const double loss = deterministic_forward_backward(batch, parts);
    kv_->pushpull_fixed_point(keys_, sums_, params_);
    ++steps_;
    return loss;
  }
  const double loss = train::forward_backward(batch, parts);
  for (ServerEmbedding* e : embeddings_) e->push_gradients();
  for (size_t i = 0; i < params_.size(); ++i) {
    const core::Tensor g = params_[i].grad();
    if (g.defined()) {
      const core::Tensor c = ops::contiguous(g);
      std::memcpy(grads_[i].data_ptr(), c.data_ptr(), c.nbytes());
    } else {
      std::memset(grads_[i].data_ptr(), 0, grads_[i].nbytes());
    }
  }
  kv_->pushpull(keys_, grads_, params_);
  kv_->advance_clock();
  ++steps_;
  return loss;
}

namespace {
constexpr uint32_t kStop = 1, kCheckpoint = 2;  // the agreement's bits
train::StepVote from_bits(uint32_t bits) {
  return {.stop = (bits & kStop) != 0, .checkpoint = (bits & kCheckpoint) != 0};
}
}  // namespace

train::StepVote ParameterServerStrategy::vote(train::StepVote mine) {
  return from_bits(kv_->vote((mine.stop ? kStop : 0) | (mine.checkpoint ? kCheckpoint : 0), steps_));
}

std::optional<train::StepVote> ParameterServerStrategy::final_vote() {
  const std::optional<uint32_t> bits = kv_->finish_votes(steps_);
  if (!bits) return std::nullopt;
  return from_bits(*bits);
}

// As DataParallelStrategy's deterministic step, less the collectives: each
// atom's gradient (its mean loss scaled by its rows / the global batch) is
// rounded into the fixed-point sums as soon as its backward is done; the
// servers add every worker's sums. Dropout masks belong to the atom (AtomScope).
double ParameterServerStrategy::deterministic_forward_backward(const train::StepBatch& batch,
                                                               train::StepParts& parts) {
  const int64_t global_rows = batch.global_rows, rows = batch.rows();
  const int r = rank(), n = world_size();
  LOOM_CHECK(rows == global_rows * (r + 1) / n - global_rows * r / n,
             "deterministic parameter servers: worker {} of {} got {} rows of a global batch of {}; it needs rows "
             "[B r / N, B (r + 1) / N) (train::share_of_batch)", r, n, rows, global_rows);
  for (core::Tensor& s : sums_) std::memset(s.data_ptr(), 0, s.nbytes());
  const std::vector<Atom> atoms = atoms_of_rank(global_rows, options_.deterministic_atoms, r, n);
  AtomScope scope(parts.model, steps_, atoms);
  // Linear layers hand over their weight gradients as factors (as DataParallel's), rounded after the atoms.
  if (!factors_) factors_ = std::make_unique<WeightFactors>(std::vector<nn::Module*>{&parts.model});
  factors_->clear();
  factors_->drop_gradients();  // a .grad after an atom is then a dense use: added below
  double loss_sum = 0.0;
  for (const Atom& atom : atoms) {
    if (atom.rows() == 0) continue;  // a batch with fewer rows than atoms
    const ops::TakeWeightFactors taking(factors_->taker());
    scope.begin_atom(atom);
    core::Tensor loss = parts.loss(parts.model(ops::slice(batch.inputs, 0, atom.begin, atom.end)),
                                   ops::slice(batch.targets, 0, atom.begin, atom.end));
    autograd::backward(ops::mul(loss, static_cast<double>(atom.rows()) / static_cast<double>(global_rows)));
    for (size_t i = 0; i < params_.size(); ++i) {
      core::Tensor g = params_[i].grad();
      if (!g.defined()) continue;
      if (!g.is_contiguous()) g = ops::contiguous(g);
      const auto bad = fixed_point::accumulate(g, sums_[i]);
      LOOM_CHECK(!bad, "deterministic parameter servers: the gradient of '{}' has {} at element {}, outside the "
                 "exact fixed-point range (|g| <= {}); the step cannot be summed exactly", names_[i],
                 bad ? bad->value : 0.0, bad ? bad->index : 0, fixed_point::kMaxMagnitude);
    }
    parts.optimizer.zero_grad();  // the next atom's gradient starts from nothing
    factors_->drop_gradients();
    scope.end_atom(atom);
    loss_sum += loss.item<double>() * static_cast<double>(atom.rows());
  }
  for (size_t i = 0; i < params_.size(); ++i) {
    if (factors_->pending(params_[i]) == 0) continue;
    const auto bad = factors_->flush(params_[i], sums_[i], fixed_point::Mode::Add);
    LOOM_CHECK(!bad, "deterministic parameter servers: the gradient of '{}' has {} at element {} for one atom, outside "
               "the exact fixed-point range (|g| <= {}); the step cannot be summed exactly", names_[i],
               bad ? bad->value : 0.0, bad ? bad->index : 0, fixed_point::kMaxMagnitude);
  }
  return rows > 0 ? loss_sum / static_cast<double>(rows) : 0.0;
}

// The Trainer's local optimizer is over the same tensors, in the same order, as the keys.
void ParameterServerStrategy::check_parameters(const optim::Optimizer& local) const {
  LOOM_CHECK(local.params().size() == params_.size(), "parameter servers: the optimizer has {} parameters, the servers "
             "hold {} keys for the model's", local.params().size(), params_.size());
  for (size_t i = 0; i < params_.size(); ++i) {
    LOOM_CHECK(local.params()[i].impl() == params_[i].impl(), "parameter servers: the optimizer's parameter {} ('{}') "
               "is not the model's parameter of key {}", i, local.param_names()[i], keys_[i]);
  }
}

optim::OptimizerState ParameterServerStrategy::optimizer_state(const optim::Optimizer& local) {
  check_parameters(local);
  std::map<int64_t, ps::KeySnapshot> keys = kv_->key_states(keys_);
  optim::OptimizerState state{.step = steps_, .lr = local.lr()};
  for (size_t i = 0; i < keys_.size(); ++i) {
    ps::KeySnapshot& k = keys.at(keys_[i]);
    core::Tensor& w = params_[i];
    std::memcpy(w.data_ptr(), k.value.data_ptr(), w.nbytes());  // as a pull: the weights this state goes with
    optim::ParamState& p = state.params.emplace_back();
    p.step = k.updates;
    if (p.step == 0) continue;
    p.slots = std::move(k.slots);
    // Updated before the servers had an optimizer: zero, as the rule starts them.
    if (p.slots.empty()) {
      for (size_t j = 0; j < slots_.size(); ++j) p.slots.push_back(ops::zeros(w.shape(), w.dtype()));
    }
  }
  return state;
}

void ParameterServerStrategy::load_optimizer_state(const optim::OptimizerState& state, optim::Optimizer& local) {
  check_parameters(local);
  optim::check_state(local.state_layout(), state);
  std::map<int64_t, ps::KeySnapshot> keys;
  if (rank() == 0) {
    for (size_t i = 0; i < keys_.size(); ++i) {
      const optim::ParamState& p = state.params[i];
      ps::KeySnapshot& k = keys[keys_[i]];
      k.value = params_[i];  // the checkpoint's weights, loaded into the model
      for (const core::Tensor& slot : p.slots) {
        k.slots.push_back(ops::contiguous(ops::to_dtype(slot, params_[i].dtype())));
      }
      k.updates = p.step;
    }
  }
  kv_->restore_key_states(keys);  // rank 0 sends, everyone waits
  kv_->pull(keys_, params_);
  steps_ = state.step;
}

optim::StateLayout ParameterServerStrategy::table_layout(std::vector<core::Shape> shapes) const {
  return {.rule = rule_, .slots = slots_, .params = table_names_, .shapes = std::move(shapes), .counters = false};
}

void ParameterServerStrategy::add_checkpoint_state(io::NamedTensors& tensors, io::Metadata& meta) {
  if (embeddings_.empty()) return;
  std::vector<int64_t> table_keys;
  for (const ServerEmbedding* e : embeddings_) table_keys.push_back(e->key());
  std::map<int64_t, ps::KeySnapshot> keys = kv_->key_states(table_keys);
  std::vector<core::Shape> shapes;
  optim::OptimizerState state;
  for (size_t i = 0; i < table_keys.size(); ++i) {
    ps::KeySnapshot& k = keys.at(table_keys[i]);
    tensors.emplace_back(train::kServerStatePrefix + table_names_[i], k.value);
    shapes.push_back(k.value.shape());
    state.params.push_back({.step = k.updates, .slots = std::move(k.slots)});
  }
  for (auto& [name, t] : optim::to_state_dict(table_layout(std::move(shapes)), state)) {
    tensors.emplace_back(train::kServerStatePrefix + name, std::move(t));
  }
}

void ParameterServerStrategy::restore_checkpoint_state(const io::SafetensorsFile& file, const std::string& source) {
  if (embeddings_.empty()) {
    train::Strategy::restore_checkpoint_state(file, source);  // no tables here: refuses a checkpoint with some
    return;
  }
  const std::string prefix = train::kServerStatePrefix;
  std::vector<core::Shape> shapes;
  std::map<int64_t, ps::KeySnapshot> keys;
  for (size_t i = 0; i < embeddings_.size(); ++i) {
    const core::Tensor* value = file.find(prefix + table_names_[i]);
    LOOM_CHECK_T(IoError, value != nullptr, "{}: the checkpoint has no '{}{}' for this model's server-embedding "
                 "table (it was written by a model without it)", source, prefix, table_names_[i]);
    shapes.push_back(value->shape());
    keys[embeddings_[i]->key()].value = ops::contiguous(*value);
  }
  io::NamedTensors entries;
  for (const auto& [name, t] : file.tensors) {
    if (name.rfind(prefix, 0) != 0) continue;
    const std::string rest = name.substr(prefix.size());
    if (std::find(table_names_.begin(), table_names_.end(), rest) == table_names_.end()) entries.emplace_back(rest, t);
  }
  optim::OptimizerState state;
  try {
    state = optim::from_state_dict(table_layout(std::move(shapes)), entries);
  } catch (const ValueError& e) {
    throw IoError(format("{}: the server-embedding tables' state does not fit: {}", source, e.what()));
  }
  for (size_t i = 0; i < embeddings_.size(); ++i) {
    ps::KeySnapshot& k = keys[embeddings_[i]->key()];
    for (const core::Tensor& slot : state.params[i].slots) {
      k.slots.push_back(ops::contiguous(ops::to_dtype(slot, k.value.dtype())));
    }
    k.updates = state.params[i].step;
  }
  kv_->restore_key_states(rank() == 0 ? keys : std::map<int64_t, ps::KeySnapshot>{});
}

}  // namespace loom::parallel
