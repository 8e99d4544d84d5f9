// The canonical atoms of deterministic data parallelism: a global batch of B
// rows is cut into A atoms, atom k holding rows [B k / A, B (k + 1) / A).
// The cut does not depend on the world size N; when N divides A, rank r's
// share of the batch ([B r / N, B (r + 1) / N), train::share_of_batch) is
// exactly atoms [A r / N, A (r + 1) / N). Each atom's forward and backward is
// one batched pass whose bits depend only on the atom, so adding the atoms'
// gradients exactly (parallel::fixed_point) gives the same bits for any N.
//
//   // given: nn::Module& model, comm::Communicator& c, Tensor x, int64_t step
//   const int64_t global_rows = 128, atoms = 8;
//   parallel::check_atoms(atoms, c.size);   // ConfigError unless c.size divides atoms (<= 4096)
//   const std::vector<parallel::Atom> mine = parallel::atoms_of_rank(global_rows, atoms, c.rank, c.size);
//   parallel::AtomScope scope(model, step, mine);
//   for (const parallel::Atom& a : mine) {
//     scope.begin_atom(a);   // dropout masks from (seed, step, a.index)
//     Tensor y = model(ops::slice(x, 0, a.begin, a.end));   // x: this rank's rows
//     scope.end_atom(a);     // the atom's batch-norm statistics, kept aside
//   }
//   scope.apply_statistics(c);   // every atom's, in atom order, on every rank
//
// AtomScope makes the model's state canonical per atom for one step: batch
// norm normalises over the atom (a ghost batch of B / A rows) and its running
// statistics are updated from every atom in atom order (all-gathered, so
// every rank applies the same sequence); each Dropout's and attention
// dropout's generator is reseeded before each atom from its seed, the step and
// the atom's global index, and is back at (seed, offset 0) after the step.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "loom/comm/collectives/communicator.h"
#include "loom/core/rng.h"
#include "loom/nn/module.h"
#include "loom/nn/normalization.h"

namespace loom::parallel {

struct Atom {
  int64_t index = 0;           // in the global batch, 0 .. atoms - 1
  int64_t begin = 0, end = 0;  // rows of the rank's share (not of the global batch)
  int64_t rows() const { return end - begin; }
};

// ConfigError unless 1 <= atoms <= fixed_point::kMaxAtoms and world_size
// divides atoms (naming both numbers and the [distributed] key to set).
void check_atoms(int64_t atoms, int world_size);

// Rank `rank`'s atoms, in order, with rows relative to its share of a global
// batch of `global_rows`; an atom may be empty when global_rows < atoms.
std::vector<Atom> atoms_of_rank(int64_t global_rows, int64_t atoms, int rank, int world_size);

// The seed of a generator with seed `seed` for atom `atom` of step `step`:
// Philox under key `seed` at a counter made of (step, atom), so every
// (step, atom) gets its own stream whatever the rank that runs it.
uint64_t atom_seed(uint64_t seed, int64_t step, int64_t atom);

class AtomScope {
 public:
  // Defers the running statistics of every BatchNorm2d that tracks them and
  // notes the seed of every dropout generator of `model`; `atoms` are this
  // rank's (atoms_of_rank), the same count on every rank.
  AtomScope(nn::Module& model, int64_t step, const std::vector<Atom>& atoms);
  // The batch norms update in place again; the generators are back at (seed, 0).
  ~AtomScope();
  AtomScope(const AtomScope&) = delete;
  AtomScope& operator=(const AtomScope&) = delete;

  void begin_atom(const Atom& atom);  // before the atom's forward (skip empty atoms)
  void end_atom(const Atom& atom);    // after it: keeps its batch-norm statistics
  // All-gathers every rank's atoms' statistics (ranks hold consecutive
  // atoms, so rank order is atom order) and applies them in atom order
  // (BatchNorm2d::apply_batch_statistics). Collective; nothing to do and no
  // communication for a model without batch norm.
  void apply_statistics(comm::Communicator& c);

 private:
  struct Norm {
    std::string name;
    nn::BatchNorm2d* module;
  };
  struct Random {
    core::Generator* generator;
    uint64_t seed;
  };
  int64_t step_;
  int64_t first_atom_ = 0;  // global index of this rank's first atom
  int64_t atoms_per_rank_ = 0;
  std::vector<Norm> norms_;
  std::vector<Random> randoms_;
  int64_t slot_numel_ = 0;      // per atom: for each norm, [ran, mean[C], var[C]]
  std::vector<double> slots_;   // atoms_per_rank * slot_numel
};

}  // namespace loom::parallel
