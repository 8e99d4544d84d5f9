// The distributed strategies behind a Trainer built from parts, in one
// process: DataParallelStrategy with its `deterministic` option gives the
// same bits for 1, 2 and 3 ranks (threads over in-process queues; more in
// deterministic_test.cc); a
// ServerEmbedding on a local KVStore trains only the rows its batches touch,
// and its table with its optimizer state goes into checkpoints.
#include <gtest/gtest.h>

#include <filesystem>
#include <thread>

#include "loom/comm/transport/inproc_transport.h"
#include "loom/data/data.h"
#include "loom/io/checkpoint.h"
#include "loom/nn/nn.h"
#include "loom/ops/ops.h"
#include "loom/parallel/data_parallel_strategy.h"
#include "loom/parallel/parameter_server_strategy.h"
#include "loom/parallel/server_embedding.h"
#include "loom/train/trainer.h"

namespace loom::parallel {
namespace {

using core::Tensor;

std::shared_ptr<data::TensorDataset> regression_data() {
  core::Generator g(11);
  Tensor x = ops::randn({60, 5}, g);
  Tensor y = ops::contiguous(ops::sum(ops::mul(x, 0.5), {1}, true));
  return std::make_shared<data::TensorDataset>(x, y);
}

const train::LossFn kMse = [](const Tensor& out, const Tensor& y) { return ops::mse_loss(out, y); };

// Final weights after 2 epochs on `world` ranks (rank 0's; all ranks agree).
std::vector<std::vector<float>> train_data_parallel(int world, bool deterministic, int64_t microbatches = 1) {
  auto hub = std::make_shared<comm::InProcHub>(world);
  std::vector<std::vector<std::vector<float>>> weights(static_cast<size_t>(world));
  std::vector<std::exception_ptr> errors(static_cast<size_t>(world));
  std::vector<std::thread> ranks;
  for (int r = 0; r < world; ++r) {
    ranks.emplace_back([&, r] {
      try {
        auto model = std::make_shared<nn::Sequential>(nn::Linear({.in = 5, .out = 6, .seed = 1}), nn::Tanh(),
                                                      nn::Linear({.in = 6, .out = 1, .seed = 2}));
        auto strategy = std::make_shared<DataParallelStrategy>(
            comm::make_communicator(hub->transport(r)),
            DataParallelStrategyOptions{.data_parallel = {.timeout = std::chrono::milliseconds(20000)},
                                        .deterministic = deterministic,
                                        .deterministic_atoms = 6});  // worlds 1, 2, 3; batches of 7 and 4 rows
        train::Trainer trainer({.model = model,
                                .train_loader = std::make_shared<data::DataLoader>(
                                    regression_data(), data::LoaderOptions{.batch_size = 7, .shuffle = true, .seed = 3}),
                                .loss = kMse,
                                .optimizer = {.rule = optim::Rule::Sgd, .lr = 0.1, .momentum = 0.9},
                                .strategy = strategy},
                               io::TrainConfig{.epochs = 2, .eval_interval = 0, .microbatches = microbatches},
                               {.log = nullptr});
        trainer.fit();
        for (auto& [name, p] : model->named_parameters()) weights[static_cast<size_t>(r)].push_back(p.to_vector<float>());
      } catch (...) {
        errors[static_cast<size_t>(r)] = std::current_exception();
      }
    });
  }
  for (auto& t : ranks) t.join();
  for (auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }
  for (int r = 1; r < world; ++r) EXPECT_EQ(weights[static_cast<size_t>(r)], weights[0]) << "rank " << r;
  return weights[0];
}

TEST(DataParallelStrategy, DeterministicIsBitwiseTheSameForAnyWorldSize) {
  const auto one = train_data_parallel(1, true);
  EXPECT_EQ(train_data_parallel(2, true), one);
  EXPECT_EQ(train_data_parallel(3, true), one);
}

// The control: without the option, float sums grouped by rank differ in the
// last bits (so the test above can fail), but stay close.
TEST(DataParallelStrategy, WithoutDeterministicCloseToOneRank) {
  const auto one = train_data_parallel(1, false), three = train_data_parallel(3, false);
  EXPECT_NE(one, three);
  ASSERT_EQ(one.size(), three.size());
  for (size_t i = 0; i < one.size(); ++i) {
    for (size_t j = 0; j < one[i].size(); ++j) EXPECT_NEAR(one[i][j], three[i][j], 1e-4);
  }
}

// Gradient accumulation under data parallelism: the all-reduce waits for the
// last micro-batch (DataParallel::no_sync for the others), so 3 ranks with 2
// micro-batches each stay as close to one rank as without micro-batches;
// deterministic mode's atoms already are its micro-batches (its bits do not
// change), and more micro-batches than a rank's atoms are refused.
TEST(DataParallelStrategy, MicrobatchesSyncOnceAStep) {
  const auto one = train_data_parallel(1, false);
  const auto three = train_data_parallel(3, false, 2);
  ASSERT_EQ(one.size(), three.size());
  for (size_t i = 0; i < one.size(); ++i) {
    for (size_t j = 0; j < one[i].size(); ++j) EXPECT_NEAR(one[i][j], three[i][j], 1e-4);
  }
  EXPECT_EQ(train_data_parallel(3, true, 2), train_data_parallel(1, true));
  EXPECT_THROW(train_data_parallel(3, true, 3), ConfigError);  // 6 atoms: 2 a rank
}

// ids i64 [B, 2] -> ServerEmbedding [B, 2, 3] -> Linear -> [B, 1].
struct TableModel : nn::Module {
  std::shared_ptr<ServerEmbedding> table =
      register_module("table", ServerEmbedding({.rows = 50, .dim = 3, .init_std = 0.1, .seed = 5}));
  std::shared_ptr<nn::Linear> head = register_module("head", nn::Linear({.in = 6, .out = 1, .seed = 6}));
  Tensor forward(const Tensor& ids) override { return (*head)(ops::reshape((*table)(ids), {ids.size(0), 6})); }
};

TEST(ServerEmbedding, TrainsOnlyTheRowsItsBatchesTouch) {
  auto strategy = std::make_shared<ParameterServerStrategy>(ps::KVStore::create(io::Mode::Local));
  std::vector<int64_t> ids;
  for (int64_t i = 0; i < 40; ++i) ids.push_back((i * 7) % 20);  // rows 0..19 only
  auto set = std::make_shared<data::TensorDataset>(Tensor::from_vector<int64_t>(ids, {20, 2}),
                                                   ops::ones({20, 1}));
  auto model = std::make_shared<TableModel>();
  train::Trainer trainer({.model = model,
                          .train_loader = std::make_shared<data::DataLoader>(set, data::LoaderOptions{.batch_size = 5}),
                          .loss = kMse,
                          .optimizer = {.rule = optim::Rule::Sgd, .lr = 0.5},
                          .strategy = strategy},
                         io::TrainConfig{.epochs = 1, .eval_interval = 0}, {.log = nullptr});
  Tensor before = ops::zeros({50, 3});
  strategy->kv().pull(model->table->key(), before);
  trainer.fit();
  Tensor after = ops::zeros({50, 3});
  strategy->kv().pull(model->table->key(), after);
  EXPECT_EQ(model->table->key(), 2);  // after the head's weight and bias
  EXPECT_GT(model->table->rows_pulled(), 0);
  const auto b = before.to_vector<float>(), a = after.to_vector<float>();
  for (int64_t row = 0; row < 50; ++row) {
    bool changed = false;
    for (int64_t k = 0; k < 3; ++k) changed |= a[static_cast<size_t>(row * 3 + k)] != b[static_cast<size_t>(row * 3 + k)];
    EXPECT_EQ(changed, row < 20) << "row " << row;
  }
  strategy->finish();
}

// The table and its Adam moments live only on the servers: checkpoints hold
// them as "servers.table.weight" with its state beside, and 2 epochs + 2
// resumed equal 4 straight, bit for bit.
TEST(ServerEmbedding, TableAndItsStateResume) {
  const auto dir = std::filesystem::temp_directory_path() / ("loom_table_resume_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::vector<int64_t> ids;
  for (int64_t i = 0; i < 40; ++i) ids.push_back((i * 7) % 20);
  auto set = std::make_shared<data::TensorDataset>(Tensor::from_vector<int64_t>(ids, {20, 2}), ops::ones({20, 1}));
  // The weights after `epochs` (the table, then the head's), resuming from `ckpt`.
  auto run = [&](int64_t epochs, const std::string& ckpt) {
    auto strategy = std::make_shared<ParameterServerStrategy>(ps::KVStore::create(io::Mode::Local));
    auto model = std::make_shared<TableModel>();
    train::Trainer trainer(
        {.model = model,
         .train_loader = std::make_shared<data::DataLoader>(set, data::LoaderOptions{.batch_size = 5, .shuffle = true}),
         .loss = kMse,
         .optimizer = {.rule = optim::Rule::Adam, .lr = 0.05},
         .strategy = strategy},
        io::TrainConfig{.epochs = epochs, .eval_interval = 0}, {.checkpoint_dir = (dir / ckpt).string(), .log = nullptr});
    trainer.resume_from_latest();
    trainer.fit();
    Tensor table = ops::zeros({50, 3});
    strategy->kv().pull(model->table->key(), table);
    std::vector<std::vector<float>> out = {table.to_vector<float>()};
    for (auto& [name, p] : model->named_parameters()) out.push_back(p.to_vector<float>());
    strategy->finish();
    return out;
  };
  const auto straight = run(4, "straight");
  run(2, "resumed");
  const io::SafetensorsFile f = io::read_safetensors(*io::CheckpointManager(dir / "resumed").latest());
  for (const char* name : {"servers.table.weight", "servers.table.weight.exp_avg", "servers.table.weight.exp_avg_sq",
                           "servers.table.weight.step", "optim.head.weight.exp_avg"}) {
    EXPECT_NE(f.find(name), nullptr) << name;
  }
  EXPECT_EQ(run(4, "resumed"), straight);

  // Without the table's state the checkpoint is refused, naming what is missing.
  io::NamedTensors without;
  for (const auto& [name, t] : f.tensors) {
    if (name != "servers.table.weight.exp_avg") without.emplace_back(name, t);
  }
  io::write_safetensors(io::CheckpointManager(dir / "broken").path_for(8), without, f.metadata);
  try {
    run(4, "broken");
    ADD_FAILURE() << "a table without its state was accepted";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("exp_avg"), std::string::npos) << e.what();
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace loom::parallel
