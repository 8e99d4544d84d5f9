#include "loom/train/checkpoint_policy.h"

namespace loom::train {

CheckpointPolicy CheckpointPolicy::from(const io::TrainConfig& train) {
  return {.every_epochs = train.checkpoint_every, .every_steps = train.checkpoint_every_steps,
          .every_minutes = train.checkpoint_every_minutes};
}

bool CheckpointPolicy::due_after_step(int64_t step, double minutes) const {
  if (every_steps > 0 && step > 0 && step % every_steps == 0) return true;
  return every_minutes > 0 && minutes >= every_minutes;
}

bool CheckpointPolicy::due_after_epoch(int64_t epochs_done, bool last, bool finished_epoch) const {
  return last || !finished_epoch || (every_epochs > 0 && epochs_done % every_epochs == 0);
}

}  // namespace loom::train
