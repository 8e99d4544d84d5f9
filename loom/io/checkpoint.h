// Numbered checkpoints in one directory, the newest few kept.
//
//   // given: int64_t step, io::NamedTensors tensors, std::function<void(const io::SafetensorsFile&)> resume_from
//   io::CheckpointManager ckpts("runs/mnist", {.keep_last = 3});
//   ckpts.save(step, tensors /* model.state_dict_tensors() */, {{"step", std::to_string(step)}});
//   //  -> runs/mnist/ckpt-000001200.safetensors, written atomically; older ones pruned
//   if (auto path = ckpts.latest()) resume_from(io::read_safetensors(*path));
//
// Files are named ckpt-<step, zero-padded to 9 digits>.safetensors; steps are
// compared as numbers, so steps past 999,999,999 still sort right. A crash
// during save() leaves the previous checkpoints as they were (at most a
// hidden temporary file, never a half checkpoint under a ckpt- name).
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <vector>

#include "loom/io/safetensors.h"

namespace loom::io {

struct CheckpointOptions {
  int keep_last = 0;  // how many checkpoints save() keeps; 0 keeps them all
};

struct Checkpoint {
  int64_t step = 0;
  std::filesystem::path path;
};

class CheckpointManager {
 public:
  // Creates `dir` (and its parents) if missing; IoError naming it on failure.
  explicit CheckpointManager(std::filesystem::path dir, CheckpointOptions options = {});

  // Writes the checkpoint for `step` (replacing one of the same step), then
  // removes all but the newest keep_last. The one just written is always
  // kept, even when checkpoints of later steps exist (a run restarted from
  // an earlier step). Returns its path.
  std::filesystem::path save(int64_t step, const NamedTensors& tensors, const Metadata& metadata = {});

  // The checkpoint with the highest step, if any.
  std::optional<std::filesystem::path> latest() const;
  // All checkpoints in the directory, by increasing step.
  std::vector<Checkpoint> list() const;

  std::filesystem::path path_for(int64_t step) const;
  const std::filesystem::path& dir() const { return dir_; }

 private:
  void prune(int64_t just_saved) const;

  std::filesystem::path dir_;
  CheckpointOptions options_;
};

}  // namespace loom::io
