// What deterministic training adds to checkpoints: the step count (dropout
// masks are drawn per (step, atom)) and the atoms per global batch (other
// atoms give other bits), as metadata "loom.deterministic.step" / ".atoms".
// Every deterministic strategy (all-reduce, pipeline) keeps its count here.
//
//   // given: io::Metadata& meta, const io::SafetensorsFile& file
//   parallel::DeterministicSteps steps{.atoms = 8};
//   ++steps.step;                       // after each step
//   steps.add_to(meta);                 // when writing a checkpoint
//   steps.restore(file, "ckpt.safetensors");   // ConfigError if the file's atoms differ
#pragma once

#include <cstdint>
#include <string>

#include "loom/io/checkpoint.h"

namespace loom::parallel {

struct DeterministicSteps {
  int64_t step = 0;   // steps taken: the dropout streams' counter
  int64_t atoms = 0;  // atoms per global batch

  void add_to(io::Metadata& meta) const;
  // The file's step (a checkpoint of a run without deterministic mode: its
  // "loom.step"); ConfigError when it was written with other atoms, naming
  // the setting; IoError for a count that is not a number.
  void restore(const io::SafetensorsFile& file, const std::string& source);
};

}  // namespace loom::parallel
