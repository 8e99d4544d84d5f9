#include "loom/train/checkpoint_policy.h"

#include <gtest/gtest.h>

namespace loom::train {
namespace {

TEST(CheckpointPolicy, EveryNStepsOnMultiplesOnly) {
  const CheckpointPolicy p{.every_epochs = 100, .every_steps = 5};
  for (int64_t s = 0; s <= 20; ++s) EXPECT_EQ(p.due_after_step(s, 0.0), s > 0 && s % 5 == 0) << s;
}

TEST(CheckpointPolicy, EveryXMinutesOnceTheClockPassesIt) {
  const CheckpointPolicy p{.every_minutes = 2.5};
  EXPECT_FALSE(p.due_after_step(7, 0.0));
  EXPECT_FALSE(p.due_after_step(7, 2.49));
  EXPECT_TRUE(p.due_after_step(7, 2.5));
  EXPECT_TRUE(p.due_after_step(8, 10.0));
}

TEST(CheckpointPolicy, NoStepOrTimeIntervalNeverFiresAfterASteps) {
  const CheckpointPolicy p{};
  for (int64_t s = 0; s < 50; ++s) EXPECT_FALSE(p.due_after_step(s, 1e9));
}

TEST(CheckpointPolicy, EpochsTheLastAndAStopMidEpoch) {
  const CheckpointPolicy p{.every_epochs = 3};
  EXPECT_FALSE(p.due_after_epoch(1, false, true));
  EXPECT_FALSE(p.due_after_epoch(2, false, true));
  EXPECT_TRUE(p.due_after_epoch(3, false, true));
  EXPECT_TRUE(p.due_after_epoch(4, true, true));    // the run's end
  EXPECT_TRUE(p.due_after_epoch(1, false, false));  // max_steps stopped it mid-epoch
}

TEST(CheckpointPolicy, FromTheJobsTrainSection) {
  io::TrainConfig t;
  t.checkpoint_every = 2;
  t.checkpoint_every_steps = 100;
  t.checkpoint_every_minutes = 1.5;
  const CheckpointPolicy p = CheckpointPolicy::from(t);
  EXPECT_EQ(p.every_epochs, 2);
  EXPECT_EQ(p.every_steps, 100);
  EXPECT_DOUBLE_EQ(p.every_minutes, 1.5);
}

}  // namespace
}  // namespace loom::train
