// Deterministic dist_sync through the Trainer (ParameterServerStrategy with
// deterministic = true), coordinator, servers and workers as threads of this
// process: the final weights are bitwise equal for 1, 2 and 4 workers; the
// modes and models it cannot make deterministic are refused at attach.
#include <gtest/gtest.h>

#include <filesystem>
#include <mutex>

#include "loom/io/config.h"
#include "loom/parallel/parameter_server_strategy.h"
#include "loom/train/trainer.h"
#include "tests/ps/ps_cluster.h"
#include "tests/train/two_class_idx.h"

namespace loom {
namespace {

namespace fs = std::filesystem;

class PsDeterministic : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / format("loom_ps_deterministic_{}", ::getpid());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    testing::write_two_class_idx(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  io::JobConfig job(const std::string& layers) const {
    return io::parse_job(testing::two_class_job_text(layers, dir_, 0), "ps.toml",
                         {"train.epochs=1", "train.max_steps=12", "distributed.mode=dist_sync",
                          "distributed.servers=2"});
  }
  // Rank 0's parameters after training on `workers` workers.
  std::vector<std::vector<double>> train(const io::JobConfig& j, int workers) const {
    std::mutex mu;
    std::vector<std::vector<double>> weights;
    ps::testing::Cluster cluster({.workers = workers, .servers = 2, .split_bound = 64});
    cluster.run([&](int rank, ps::KVStore& kv) {
      auto strategy = std::make_shared<parallel::ParameterServerStrategy>(
          kv, parallel::ParameterServerStrategyOptions{.deterministic = true, .deterministic_atoms = 4});
      train::Trainer trainer(j, {.log = nullptr}, strategy);
      trainer.fit();
      if (rank != 0) return;
      std::lock_guard lock(mu);
      for (const auto& [name, p] : trainer.model().named_parameters()) weights.push_back(p.to_vector<double>());
    });
    return weights;
  }
  fs::path dir_;
};

const char* kMlpWithDropout = R"(
[[model.layers]]
type = "flatten"
[[model.layers]]
type = "linear"
out = 8
[[model.layers]]
type = "relu"
[[model.layers]]
type = "dropout"
p = 0.3
[[model.layers]]
type = "linear"
out = 2)";

TEST_F(PsDeterministic, WeightsAreBitwiseEqualForOneTwoAndFourWorkers) {
  const io::JobConfig j = job(kMlpWithDropout);
  const auto one = train(j, 1);
  ASSERT_FALSE(one.empty());
  EXPECT_EQ(train(j, 2), one);
  EXPECT_EQ(train(j, 4), one);
}

TEST_F(PsDeterministic, BatchNormAndAsyncModesAreRefusedAtAttach) {
  const io::JobConfig j = job(R"(
[[model.layers]]
type = "conv2d"
out = 2
kernel = 3
[[model.layers]]
type = "batchnorm2d"
[[model.layers]]
type = "flatten"
[[model.layers]]
type = "linear"
out = 2)");
  ps::testing::Cluster cluster({.workers = 1, .servers = 1});
  cluster.run([&](int, ps::KVStore& kv) {
    auto strategy = std::make_shared<parallel::ParameterServerStrategy>(
        kv, parallel::ParameterServerStrategyOptions{.deterministic = true});
    try {
      train::Trainer trainer(j, {.log = nullptr}, strategy);
      trainer.fit();
      ADD_FAILURE() << "a batch norm model trained deterministically on servers";
    } catch (const ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find("is a batch norm"), std::string::npos) << e.what();
    }
  });
  ps::testing::Cluster async({.workers = 1, .servers = 1, .type = io::Mode::DistAsync});
  async.run([&](int, ps::KVStore& kv) {
    auto strategy = std::make_shared<parallel::ParameterServerStrategy>(
        kv, parallel::ParameterServerStrategyOptions{.deterministic = true});
    try {
      train::Trainer trainer(job(kMlpWithDropout), {.log = nullptr}, strategy);
      trainer.fit();
      ADD_FAILURE() << "dist_async trained deterministically";
    } catch (const ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find("only dist_sync can be deterministic"), std::string::npos) << e.what();
    }
  });
}

}  // namespace
}  // namespace loom
