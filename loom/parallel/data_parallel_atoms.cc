#include "loom/parallel/data_parallel_atoms.h"

#include <algorithm>

#include "loom/comm/collectives/collectives.h"
#include "loom/core/error.h"
#include "loom/ops/ops.h"
#include "loom/parallel/data_parallel_fixed_point.h"

namespace loom::parallel {

using core::Tensor;

namespace {

constexpr int kAtomBits = 12;  // atom indices below 2^12 = fixed_point::kMaxAtoms
static_assert((int64_t{1} << kAtomBits) == fixed_point::kMaxAtoms);

}  // namespace

void check_atoms(int64_t atoms, int world_size) {
  LOOM_CHECK_T(ConfigError, atoms >= 1 && atoms <= fixed_point::kMaxAtoms,
               "deterministic data parallelism: deterministic_atoms = {} must be between 1 and {} (the exact "
               "int64 sums hold at most {} atoms' gradients); set [distributed] deterministic_atoms", atoms,
               fixed_point::kMaxAtoms, fixed_point::kMaxAtoms);
  LOOM_CHECK_T(ConfigError, world_size >= 1 && atoms % world_size == 0,
               "deterministic data parallelism cuts every batch into deterministic_atoms = {} atoms and gives each "
               "worker whole atoms, so the number of workers must divide it, and {} does not: set [distributed] "
               "deterministic_atoms to a multiple of {} (the same value in every run to compare bit for bit), or "
               "use a number of workers that divides {}", atoms, world_size, world_size, atoms);
}

std::vector<Atom> atoms_of_rank(int64_t global_rows, int64_t atoms, int rank, int world_size) {
  check_atoms(atoms, world_size);
  LOOM_ASSERT(global_rows >= 0 && rank >= 0 && rank < world_size);
  const int64_t per_rank = atoms / world_size, first = per_rank * rank;
  // B r / N == B (A r / N) / A exactly, since N divides A: the share starts on an atom.
  const int64_t share_begin = global_rows * rank / world_size;
  std::vector<Atom> out;
  out.reserve(static_cast<size_t>(per_rank));
  for (int64_t k = first; k < first + per_rank; ++k) {
    out.push_back({.index = k,
                   .begin = global_rows * k / atoms - share_begin,
                   .end = global_rows * (k + 1) / atoms - share_begin});
  }
  return out;
}

uint64_t atom_seed(uint64_t seed, int64_t step, int64_t atom) {
  LOOM_ASSERT(step >= 0 && atom >= 0 && atom < fixed_point::kMaxAtoms);
  const auto words = core::Generator::philox(seed, (static_cast<uint64_t>(step) << kAtomBits) | static_cast<uint64_t>(atom));
  return (static_cast<uint64_t>(words[0]) << 32) | words[1];
}

AtomScope::AtomScope(nn::Module& model, int64_t step, const std::vector<Atom>& atoms)
    : step_(step), first_atom_(atoms.empty() ? 0 : atoms.front().index),
      atoms_per_rank_(static_cast<int64_t>(atoms.size())) {
  for (auto& [name, m] : model.named_modules()) {
    if (auto* bn = dynamic_cast<nn::BatchNorm2d*>(m); bn && bn->options().track_running_stats) {
      bn->defer_running_stats(true);
      norms_.push_back({name, bn});
      slot_numel_ += 1 + 2 * bn->options().num_features;
    } else if (core::Generator* g = m->random_generator()) {
      randoms_.push_back({g, g->seed()});
    }
  }
  slots_.assign(static_cast<size_t>(atoms_per_rank_ * slot_numel_), 0.0);
}

AtomScope::~AtomScope() {
  for (auto& n : norms_) n.module->defer_running_stats(false);
  for (auto& r : randoms_) r.generator->set_state(r.seed, 0);
}

void AtomScope::begin_atom(const Atom& atom) {
  for (auto& r : randoms_) r.generator->set_state(atom_seed(r.seed, step_, atom.index), 0);
}

void AtomScope::end_atom(const Atom& atom) {
  const int64_t local = atom.index - first_atom_;
  LOOM_ASSERT(local >= 0 && local < atoms_per_rank_);
  double* slot = slots_.data() + local * slot_numel_;
  for (auto& n : norms_) {
    const auto stats = n.module->take_batch_statistics();
    LOOM_CHECK(stats.size() <= 1,
               "deterministic data parallelism: batch norm '{}' ran {} times in one forward; its running "
               "statistics can be made canonical only for a module that runs once", n.name, stats.size());
    const int64_t c = n.module->options().num_features;
    if (!stats.empty()) {
      slot[0] = 1.0;
      const auto mean = ops::to_dtype(stats[0].mean, core::DType::F64).to_vector<double>();
      const auto var = ops::to_dtype(stats[0].var, core::DType::F64).to_vector<double>();
      std::copy(mean.begin(), mean.end(), slot + 1);
      std::copy(var.begin(), var.end(), slot + 1 + c);
    }
    slot += 1 + 2 * c;
  }
}

void AtomScope::apply_statistics(comm::Communicator& c) {
  if (norms_.empty()) return;
  // The values came from the modules' dtypes: f64 holds them exactly.
  Tensor mine = Tensor::from_vector<double>(slots_, {static_cast<int64_t>(slots_.size())});
  Tensor all;
  comm::all_gather(c, mine, all);
  const auto values = all.to_vector<double>();
  const int64_t atoms = atoms_per_rank_ * c.size;
  LOOM_ASSERT(static_cast<int64_t>(values.size()) == atoms * slot_numel_);
  for (int64_t k = 0; k < atoms; ++k) {
    const double* slot = values.data() + k * slot_numel_;
    for (auto& n : norms_) {
      const int64_t ch = n.module->options().num_features;
      if (slot[0] != 0.0) {
        const core::DType dtype = n.module->running_mean().dtype();
        std::vector<double> mean(slot + 1, slot + 1 + ch), var(slot + 1 + ch, slot + 1 + 2 * ch);
        nn::BatchNorm2d::BatchStatistics stats{ops::to_dtype(Tensor::from_vector<double>(mean, {ch}), dtype),
                                               ops::to_dtype(Tensor::from_vector<double>(var, {ch}), dtype)};
        n.module->apply_batch_statistics(stats);
      }
      slot += 1 + 2 * ch;
    }
  }
}

}  // namespace loom::parallel
