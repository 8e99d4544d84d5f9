// Preemption and checkpoint intervals in the Trainer: a stop request after
// step k checkpoints step k (synchronously or in the background) and ends
// fit() with `preempted`; resuming from that checkpoint gives bitwise the
// weights of an undisturbed run; step intervals checkpoint on their multiples.
#include <gtest/gtest.h>

#include <filesystem>

#include "loom/core/stop_signals.h"
#include "loom/data/data.h"
#include "loom/io/checkpoint.h"
#include "loom/nn/nn.h"
#include "loom/ops/ops.h"
#include "loom/train/trainer.h"

namespace loom {
namespace {

using core::Tensor;
namespace fs = std::filesystem;

constexpr int64_t kSamples = 96, kBatch = 16;  // 6 steps an epoch

std::shared_ptr<data::TensorDataset> regression_data() {
  core::Generator g(3);
  Tensor x = ops::randn({kSamples, 4}, g);
  Tensor y = ops::add(ops::mul(ops::slice(x, 1, 0, 1), 2.0), ops::mul(ops::slice(x, 1, 1, 2), -1.0));
  return std::make_shared<data::TensorDataset>(x, ops::contiguous(y));
}

std::shared_ptr<nn::Sequential> small_model() {
  return std::make_shared<nn::Sequential>(nn::Linear({.in = 4, .out = 16, .seed = 1}), nn::Tanh(),
                                          nn::Dropout({.p = 0.2, .seed = 5}), nn::Linear({.in = 16, .out = 1, .seed = 2}));
}

std::vector<std::vector<float>> weights(nn::Module& m) {
  std::vector<std::vector<float>> w;
  for (auto& [name, p] : m.named_parameters()) w.push_back(p.to_vector<float>());
  return w;
}

class Preemption : public ::testing::Test {
 protected:
  void SetUp() override {
    core::clear_stop_request();
    dir_ = fs::temp_directory_path() / ("loom_preempt_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
  }
  void TearDown() override {
    core::clear_stop_request();
    fs::remove_all(dir_);
  }

  // A trainer of the small model; stop_at > 0 requests a stop after that step.
  std::unique_ptr<train::Trainer> trainer(io::TrainConfig loop, int64_t stop_at = 0) {
    model_ = small_model();
    const data::LoaderOptions lo{.batch_size = kBatch, .shuffle = true, .seed = 7};
    train::TrainerOptions o{.checkpoint_dir = dir_.string(), .log = nullptr};
    if (stop_at > 0) {
      o.on_step_end = [stop_at](const train::StepReport& r) {
        if (r.step == stop_at) core::request_stop(SIGTERM);
      };
    }
    return std::make_unique<train::Trainer>(
        train::TrainerParts{.model = model_,
                            .train_loader = std::make_shared<data::DataLoader>(regression_data(), lo),
                            .loss = [](const Tensor& out, const Tensor& y) { return ops::mse_loss(out, y); },
                            .optimizer = {.rule = optim::Rule::Adam, .lr = 0.01}},
        loop, o);
  }

  std::vector<std::vector<float>> undisturbed(const io::TrainConfig& loop) {
    auto t = trainer(loop);
    t->fit();
    fs::remove_all(dir_);
    return weights(*model_);
  }

  fs::path dir_;
  std::shared_ptr<nn::Sequential> model_;
};

io::TrainConfig three_epochs(bool async) {
  io::TrainConfig loop{.epochs = 3, .eval_interval = 0};
  loop.checkpoint_async = async;
  return loop;
}

TEST_F(Preemption, StopMidEpochCheckpointsThatStepAndResumesBitwise) {
  for (bool async : {true, false}) {
    SCOPED_TRACE(async ? "async" : "sync");
    const auto expected = undisturbed(three_epochs(async));
    {
      auto t = trainer(three_epochs(async), 8);  // epoch 2, its second step
      const train::EpochReport r = t->fit();
      EXPECT_TRUE(r.preempted);
      EXPECT_EQ(r.step, 8);
      ASSERT_TRUE(r.checkpoint.has_value());
      EXPECT_EQ(r.checkpoint->filename(), "ckpt-000000008.safetensors");
      EXPECT_TRUE(fs::exists(*r.checkpoint));
      EXPECT_EQ(io::CheckpointManager(dir_).latest(), *r.checkpoint);
    }
    core::clear_stop_request();
    auto resumed = trainer(three_epochs(async));
    ASSERT_TRUE(resumed->resume_from_latest());
    EXPECT_EQ(resumed->step(), 8);
    const train::EpochReport r = resumed->fit();
    EXPECT_FALSE(r.preempted);
    EXPECT_EQ(r.step, 18);
    EXPECT_EQ(weights(*model_), expected);  // bitwise: dropout's generator and the loader resume too
    fs::remove_all(dir_);
  }
}

TEST_F(Preemption, StopAtAnEpochsLastStepResumesIntoTheNextEpoch) {
  const auto expected = undisturbed(three_epochs(true));
  {
    auto t = trainer(three_epochs(true), 6);
    EXPECT_TRUE(t->fit().preempted);
  }
  core::clear_stop_request();
  auto resumed = trainer(three_epochs(true));
  ASSERT_TRUE(resumed->resume_from_latest());
  resumed->fit();
  EXPECT_EQ(weights(*model_), expected);
}

TEST_F(Preemption, WithoutACheckpointDirTheStopSavesNothing) {
  model_ = small_model();
  train::Trainer t({.model = model_,
                    .train_loader = std::make_shared<data::DataLoader>(regression_data(),
                                                                       data::LoaderOptions{.batch_size = kBatch}),
                    .loss = [](const Tensor& out, const Tensor& y) { return ops::mse_loss(out, y); },
                    .optimizer = {.rule = optim::Rule::Sgd, .lr = 0.01}},
                   three_epochs(true),
                   {.log = nullptr, .on_step_end = [](const train::StepReport& r) {
                      if (r.step == 3) core::request_stop();
                    }});
  const train::EpochReport r = t.fit();
  EXPECT_TRUE(r.preempted);
  EXPECT_EQ(r.step, 3);
  EXPECT_FALSE(r.checkpoint.has_value());
}

TEST_F(Preemption, NoStopSignalsInTheJobIgnoresTheRequest) {
  io::TrainConfig loop = three_epochs(true);
  loop.stop_signals.clear();
  auto t = trainer(loop, 2);
  const train::EpochReport r = t->fit();
  EXPECT_FALSE(r.preempted);
  EXPECT_EQ(r.step, 18);
}

TEST_F(Preemption, StepIntervalCheckpointsOnItsMultiplesAndEpochEndsToo) {
  io::TrainConfig loop = three_epochs(true);
  loop.checkpoint_every_steps = 4;
  loop.checkpoint_every = 3;
  loop.checkpoint_keep = 100;
  const auto expected_weights = [&] {
    io::TrainConfig plain = three_epochs(true);
    plain.checkpoint_keep = 100;
    return undisturbed(plain);
  }();
  auto t = trainer(loop);
  t->fit();
  std::vector<int64_t> steps;
  for (const io::Checkpoint& c : io::CheckpointManager(dir_).list()) steps.push_back(c.step);
  EXPECT_EQ(steps, (std::vector<int64_t>{4, 8, 12, 16, 18}));
  EXPECT_EQ(weights(*model_), expected_weights);  // checkpoints do not change the run
}

TEST_F(Preemption, MinuteIntervalCheckpointsOnceTheClockPassesIt) {
  io::TrainConfig loop = three_epochs(false);
  loop.checkpoint_every_minutes = 1e-9;  // due after every step
  loop.checkpoint_keep = 100;
  auto t = trainer(loop);
  t->fit();
  EXPECT_EQ(io::CheckpointManager(dir_).list().size(), 18u);
}

}  // namespace
}  // namespace loom
