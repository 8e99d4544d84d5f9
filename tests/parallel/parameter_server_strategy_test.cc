// The Trainer over parameter servers (ParameterServerStrategy) in one
// process: the job file's optimizer, every option of it, is what the servers
// run; checkpoints hold the servers' optimizer state in the layout a local
// run writes, so a run resumes under the other strategy.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>

#include "loom/io/checkpoint.h"
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

class CrossStrategyResume : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / format("loom_cross_resume_{}_{}", ::getpid(), GetParam());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    testing::write_two_class_idx(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  io::JobConfig job(int epochs) const {
    std::vector<std::string> set = {"train.epochs=" + std::to_string(epochs)};
    if (GetParam() == "adam") set.insert(set.end(), {"optimizer.name=adam", "optimizer.lr=0.01"});
    return io::parse_job(testing::two_class_job_text("name = \"mlp\"", dir_, 0), "job.toml", set);
  }
  // `epochs` in all, resuming from `ckpt` when it holds a checkpoint; one
  // process, or one worker and one dist_sync server.
  // `then`: called with the servers' store after training.
  void train(int epochs, const fs::path& ckpt, bool servers, std::function<void(ps::KVStore&)> then = {}) const {
    auto fit = [&](std::shared_ptr<train::Strategy> strategy) {
      train::Trainer trainer(job(epochs), {.checkpoint_dir = ckpt.string(), .log = nullptr}, std::move(strategy));
      trainer.resume_from_latest();
      trainer.fit();
    };
    if (!servers) return fit(nullptr);
    ps::testing::Cluster cluster({.workers = 1, .servers = 1, .type = io::Mode::DistSync});
    cluster.run([&](int, ps::KVStore& kv) {
      fit(std::make_shared<parallel::ParameterServerStrategy>(kv));
      if (then) then(kv);
    });
  }
  // Every tensor of the last checkpoint in `ckpt`, by name.
  static std::map<std::string, core::Tensor> last(const fs::path& ckpt) {
    std::map<std::string, core::Tensor> out;
    for (auto& [name, t] : io::read_safetensors(*io::CheckpointManager(ckpt).latest()).tensors) out.emplace(name, t);
    return out;
  }
  static void expect_same_bits(const std::map<std::string, core::Tensor>& got,
                               const std::map<std::string, core::Tensor>& want, const std::string& what) {
    ASSERT_EQ(got.size(), want.size()) << what;
    for (const auto& [name, w] : want) {
      auto it = got.find(name);
      ASSERT_NE(it, got.end()) << what << ": no " << name;
      const core::Tensor& g = it->second;
      ASSERT_EQ(g.shape(), w.shape()) << what << ": " << name;
      ASSERT_EQ(g.dtype(), w.dtype()) << what << ": " << name;
      EXPECT_EQ(std::memcmp(g.data_ptr(), w.data_ptr(), w.nbytes()), 0) << what << ": " << name << " differs";
    }
  }

  fs::path dir_;
};

// 2 epochs local + 2 on a dist_sync server, and the other way round, end
// with the checkpoint of 4 local epochs, every tensor bit for bit: weights,
// momentum or Adam moments, step counts and lr. With one worker the server
// applies the same rule to the same gradient (a round of one push is that
// push), so the arithmetic is the same.
TEST_P(CrossStrategyResume, LocalAndParameterServersContinueEachOther) {
  train(4, dir_ / "straight", false);
  const auto want = last(dir_ / "straight");
  size_t params = 0, steps = 0, slots = 0;
  for (const auto& [name, t] : want) {
    params += name.starts_with("model.");
    steps += name.starts_with("optim.") && name.ends_with(".step") && name != "optim.step";
    slots += name.ends_with(GetParam() == "adam" ? ".exp_avg_sq" : ".momentum_buffer");
  }
  EXPECT_EQ(steps, params);  // every parameter was updated and has its state
  EXPECT_EQ(slots, params);

  train(2, dir_ / "local_then_ps", false);
  train(4, dir_ / "local_then_ps", true);
  expect_same_bits(last(dir_ / "local_then_ps"), want, "2 epochs local, 2 on servers");

  train(2, dir_ / "ps_then_local", true);
  train(4, dir_ / "ps_then_local", false);
  expect_same_bits(last(dir_ / "ps_then_local"), want, "2 epochs on servers, 2 local");
}

// A checkpoint in the layout parameter-server runs wrote before (the
// servers' state as "servers.key<k>", "servers.key<k>.state<j>" and their
// metadata, exactly what KVStore::optimizer_states writes under "servers.";
// "optim.*" only the idle local optimizer's step 0 and lr) resumes under
// either strategy, renamed into today's layout, and ends as 4 straight epochs.
TEST_P(CrossStrategyResume, OldParameterServerCheckpointsResumeUnderEither) {
  train(4, dir_ / "straight", false);
  const auto want = last(dir_ / "straight");
  io::NamedTensors servers;
  io::Metadata servers_meta;
  train(2, dir_ / "new", true, [&](ps::KVStore& kv) { kv.optimizer_states("servers.", servers, servers_meta); });
  const fs::path written = *io::CheckpointManager(dir_ / "new").latest();
  io::SafetensorsFile f = io::read_safetensors(written);
  io::NamedTensors old;
  for (auto& [name, t] : f.tensors) {
    if (name == "optim.step") old.emplace_back(name, core::Tensor::scalar<int64_t>(0));
    else if (!name.starts_with("optim.") || name == "optim.lr") old.emplace_back(name, t);
  }
  old.insert(old.end(), servers.begin(), servers.end());
  f.metadata.insert(servers_meta.begin(), servers_meta.end());
  ASSERT_TRUE(f.metadata.contains("servers.key0.updates"));
  for (const char* resumed : {"old_then_local", "old_then_ps"}) {
    io::write_safetensors(io::CheckpointManager(dir_ / resumed).path_for(24), old, f.metadata);
    train(4, dir_ / resumed, std::string(resumed) == "old_then_ps");
    expect_same_bits(last(dir_ / resumed), want, resumed);
  }
  // With a key past the model's parameters (a server-embedding table then), it is refused, naming the old layout.
  old.emplace_back("servers.key6", core::Tensor::scalar<float>(0));
  io::write_safetensors(io::CheckpointManager(dir_ / "old_table").path_for(24), old, f.metadata);
  try {
    train(4, dir_ / "old_table", false);
    ADD_FAILURE() << "a key past the parameters was accepted";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("old parameter-server layout (servers.key<k>)"), std::string::npos) << e.what();
  }
}

INSTANTIATE_TEST_SUITE_P(Rules, CrossStrategyResume, ::testing::Values("sgd", "adam"));

}  // namespace
}  // namespace loom
