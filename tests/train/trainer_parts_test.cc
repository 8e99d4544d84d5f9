// The Trainer built from parts (model, loaders, loss, optimizer, strategy)
// with a local strategy: its steps are exactly the plain loop's (zero_grad,
// forward, loss, backward, optimizer step), callbacks see every step, and a
// loader that already yields a rank's share of the batch is taken as is.
#include <gtest/gtest.h>

#include "loom/autograd/engine.h"
#include "loom/data/data.h"
#include "loom/nn/nn.h"
#include "loom/ops/ops.h"
#include "loom/train/strategy.h"
#include "loom/train/trainer.h"

namespace loom {
namespace {

using core::Tensor;

constexpr int64_t kSamples = 96, kBatch = 16;

std::shared_ptr<data::TensorDataset> regression_data() {
  core::Generator g(3);
  Tensor x = ops::randn({kSamples, 4}, g);
  Tensor y = ops::add(ops::mul(ops::slice(x, 1, 0, 1), 2.0), ops::mul(ops::slice(x, 1, 1, 2), -1.0));
  return std::make_shared<data::TensorDataset>(x, ops::contiguous(y));
}

std::shared_ptr<nn::Sequential> small_model() {
  return std::make_shared<nn::Sequential>(nn::Linear({.in = 4, .out = 8, .seed = 1}), nn::Tanh(),
                                          nn::Linear({.in = 8, .out = 1, .seed = 2}));
}

const train::LossFn kMse = [](const Tensor& out, const Tensor& y) { return ops::mse_loss(out, y); };
const optim::OptimizerSpec kAdam{.rule = optim::Rule::Adam, .lr = 0.01};

std::vector<std::vector<float>> weights(nn::Module& m) {
  std::vector<std::vector<float>> w;
  for (auto& [name, p] : m.named_parameters()) w.push_back(p.to_vector<float>());
  return w;
}

TEST(TrainerParts, LocalStrategyStepsAreThePlainLoop) {
  auto data = regression_data();
  const data::LoaderOptions lo{.batch_size = kBatch, .shuffle = true, .seed = 7};

  // The plain loop.
  auto reference = small_model();
  optim::Optimizer opt = optim::make_optimizer(reference->named_parameters(), kAdam);
  data::DataLoader loader(data, lo);
  for (int64_t epoch = 0; epoch < 2; ++epoch) {
    loader.set_epoch(epoch);
    while (auto batch = loader.next()) {
      opt.zero_grad();
      autograd::backward(kMse((*reference)(batch->inputs), batch->targets));
      opt.step();
    }
  }

  // The Trainer from parts, local strategy given explicitly.
  auto model = small_model();
  std::vector<train::StepReport> steps;
  train::Trainer trainer({.model = model,
                          .train_loader = std::make_shared<data::DataLoader>(data, lo),
                          .loss = kMse,
                          .optimizer = kAdam,
                          .strategy = std::make_shared<train::LocalStrategy>()},
                         io::TrainConfig{.epochs = 2, .eval_interval = 0},
                         {.log = nullptr, .on_step_end = [&](const train::StepReport& r) { steps.push_back(r); }});
  const train::EpochReport report = trainer.fit();
  EXPECT_EQ(trainer.strategy().name(), "local");
  EXPECT_EQ(report.step, 2 * kSamples / kBatch);
  EXPECT_FALSE(report.test.has_value());  // no test loader: no evaluation
  ASSERT_EQ(steps.size(), static_cast<size_t>(2 * kSamples / kBatch));
  EXPECT_EQ(steps.back().step, report.step);
  EXPECT_EQ(weights(*model), weights(*reference));  // bitwise
}

TEST(TrainerParts, NoStrategyMeansLocalAndLearns) {
  std::vector<double> losses;
  train::Trainer trainer({.model = small_model(),
                          .train_loader = std::make_shared<data::DataLoader>(regression_data(),
                                                                             data::LoaderOptions{.batch_size = kBatch}),
                          .loss = kMse,
                          .optimizer = kAdam},
                         io::TrainConfig{.epochs = 30, .eval_interval = 0},
                         {.log = nullptr, .on_epoch_end = [&](const train::EpochReport& r) { losses.push_back(r.train_loss); }});
  EXPECT_EQ(trainer.strategy().name(), "local");
  trainer.fit();
  ASSERT_EQ(losses.size(), 30u);
  EXPECT_LT(losses.back(), losses.front() / 4);
}

// share_of_batch: rank r of n gets rows [B r / n, B (r + 1) / n); every row once.
TEST(TrainerParts, ShareOfBatchCoversEveryRowOnce) {
  auto data = regression_data();
  const data::Batch global = data->get_batch({0, 1, 2, 3, 4, 5, 6});
  for (int n : {1, 2, 3, 7, 9}) {
    int64_t rows = 0;
    for (int r = 0; r < n; ++r) {
      const train::StepBatch mine = train::share_of_batch(global, r, n);
      EXPECT_EQ(mine.global_rows, 7);
      if (mine.rows() > 0) {
        EXPECT_EQ(mine.inputs.to_vector<float>(), ops::slice(global.inputs, 0, rows, rows + mine.rows()).to_vector<float>());
      }
      rows += mine.rows();
    }
    EXPECT_EQ(rows, 7) << n;
  }
}

// A strategy that records what the Trainer hands it (a stand-in for the
// distributed ones): with per_rank_batches the batch is taken whole and
// counted as 1/world of the global batch.
class RecordingStrategy final : public train::Strategy {
 public:
  std::string_view name() const override { return "recording"; }
  int rank() const override { return 1; }
  int world_size() const override { return 3; }
  double step(const train::StepBatch& batch, train::StepParts& parts) override {
    rows.push_back(batch.rows());
    global_rows.push_back(batch.global_rows);
    return train::forward_backward(batch, parts);
  }
  std::vector<int64_t> rows, global_rows;
};

TEST(TrainerParts, PerRankBatchesAreNotSlicedAgain) {
  for (bool per_rank : {false, true}) {
    auto strategy = std::make_shared<RecordingStrategy>();
    train::Trainer trainer({.model = small_model(),
                            .train_loader = std::make_shared<data::DataLoader>(regression_data(),
                                                                               data::LoaderOptions{.batch_size = 12}),
                            .loss = kMse,
                            .optimizer = kAdam,
                            .strategy = strategy,
                            .per_rank_batches = per_rank},
                           io::TrainConfig{.epochs = 1, .max_steps = 2, .eval_interval = 0}, {.log = nullptr});
    trainer.fit();
    ASSERT_EQ(strategy->rows.size(), 2u);
    EXPECT_EQ(strategy->rows[0], per_rank ? 12 : 4);  // rank 1 of 3: rows [4, 8)
    EXPECT_EQ(strategy->global_rows[0], per_rank ? 36 : 12);
  }
}

}  // namespace
}  // namespace loom
