// When the training loop writes a checkpoint: every N epochs ([train]
// checkpoint_every), every N optimizer steps (checkpoint_every_steps) and
// every X minutes (checkpoint_every_minutes), whichever comes first; pure
// decisions, tested alone.
//
//   train::CheckpointPolicy policy{.every_epochs = 1, .every_steps = 500, .every_minutes = 10};
//   bool now = policy.due_after_step(1000, 3.5);         // true: 1000 is a multiple of 500
//   bool at_end = policy.due_after_epoch(3, false, true);  // true: every epoch
//
// The step and minute intervals are checked after every optimizer step; a
// checkpoint written then resets the minute clock (the caller keeps it). In
// a distributed job only the main rank's clock counts: its decision is voted
// to the other ranks (Strategy::vote), so that every rank takes part in the
// same checkpoint.
#pragma once

#include <cstdint>

#include "loom/io/config.h"

namespace loom::train {

struct CheckpointPolicy {
  int64_t every_epochs = 1;   // >= 1
  int64_t every_steps = 0;    // 0: not by steps
  double every_minutes = 0;   // 0: not by time

  static CheckpointPolicy from(const io::TrainConfig& train);

  // After an optimizer step: `step` steps done in all, `minutes` since the
  // last checkpoint (or since training started).
  bool due_after_step(int64_t step, double minutes) const;
  // At the end of an epoch's training: `epochs_done` epochs finished
  // (1-based), `last` the run's end (the last epoch or max_steps reached),
  // `finished_epoch` false when max_steps stopped it mid-epoch.
  bool due_after_epoch(int64_t epochs_done, bool last, bool finished_epoch) const;
};

}  // namespace loom::train
