// The Trainer over parameter servers (ParameterServerStrategy) in one
// process: the job file's optimizer, every option of it, is what the servers run.
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

TEST(ParameterServerStrategy, AmsgradFromTheJobFileReachesTheServers) {
  const fs::path dir = fs::temp_directory_path() / ("loom_ps_strategy_test_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  testing::write_two_class_idx(dir);
  const io::JobConfig job = io::parse_job(testing::two_class_job_text("name = \"mlp\"", dir, 0), "ps.toml",
                                          {"optimizer.name=adam", "optimizer.lr=0.01", "optimizer.amsgrad=true",
                                           "train.epochs=1", "distributed.mode=dist_sync", "distributed.servers=1"});
  ASSERT_TRUE(job.optimizer.amsgrad);

  std::mutex mu;
  std::vector<double> accuracy;
  io::Metadata server_meta;
  ps::testing::Cluster cluster({.workers = 2, .servers = 1, .type = job.distributed.mode});
  cluster.run([&](int rank, ps::KVStore& kv) {
    train::Trainer trainer(job, {.log = nullptr}, std::make_shared<parallel::ParameterServerStrategy>(kv));
    const train::EpochReport r = trainer.fit();
    io::NamedTensors tensors;
    io::Metadata meta;
    kv.optimizer_states("", tensors, meta);  // rank 0 gets the servers' state
    std::lock_guard lock(mu);
    if (rank == 0) {
      server_meta = meta;
      if (r.test) accuracy.push_back(r.test->accuracy);
    }
  });
  fs::remove_all(dir);

  ASSERT_EQ(accuracy.size(), 1u);
  EXPECT_GT(accuracy[0], 0.8);
  // Adam keeps exp_avg and exp_avg_sq; AMSGrad adds max_exp_avg_sq on the servers.
  ASSERT_TRUE(server_meta.contains("key0.slots"));
  EXPECT_EQ(server_meta.at("key0.slots"), "3");
}

}  // namespace
}  // namespace loom
