// The strategy factory: which strategy or role a job and a launcher's
// environment give (choose_role is pure: no sockets), and make_strategy's
// objects, including data parallelism joined by ranks as threads, where the
// job's `deterministic` is the strategy's option.
#include "loom/parallel/strategy_factory.h"

#include <gtest/gtest.h>

#include <future>
#include <thread>

#include "loom/comm/transport/zmq_transport.h"
#include "loom/core/error.h"
#include "loom/parallel/parameter_server_strategy.h"

namespace loom::parallel {
namespace {

using Env = std::map<std::string, std::string>;

io::JobConfig job_with(io::Mode mode, int64_t workers = 1, int64_t servers = 0, bool deterministic = false) {
  io::JobConfig job;
  job.path = "job.toml";
  job.distributed.mode = mode;
  job.distributed.workers = workers;
  job.distributed.servers = servers;
  job.distributed.deterministic = deterministic;
  return job;
}

const comm::JobEnv kNoJob = comm::read_job_env(Env{});

comm::JobEnv loom_worker(int rank, int world) {
  return comm::read_job_env(Env{{"LOOM_RANK", std::to_string(rank)},
                                {"LOOM_WORLD_SIZE", std::to_string(world)},
                                {"LOOM_COORDINATOR", "127.0.0.1:29400"},
                                {"LOOM_INSECURE", "1"}});
}

comm::JobEnv mxnet(const std::string& role) {
  return comm::read_job_env(Env{{"DMLC_ROLE", role},
                                {"DMLC_PS_ROOT_URI", "127.0.0.1"},
                                {"DMLC_PS_ROOT_PORT", "29400"},
                                {"DMLC_NUM_WORKER", "2"},
                                {"DMLC_NUM_SERVER", "1"},
                                {"LOOM_INSECURE", "1"}});
}

void expect_role(const ProcessRole& got, Role role, io::Mode mode, int workers = 1, int servers = 0) {
  EXPECT_EQ(name(got.role), name(role));
  EXPECT_EQ(got.mode, mode);
  if (role == Role::Launch) {
    EXPECT_EQ(got.workers, workers);
    EXPECT_EQ(got.servers, servers);
  }
}

TEST(ChooseRole, OneProcessOutsideAJobTrainsLocally) {
  expect_role(choose_role(job_with(io::Mode::Local), kNoJob), Role::Train, io::Mode::Local);
  // allreduce with one worker needs no second process
  expect_role(choose_role(job_with(io::Mode::Allreduce), kNoJob), Role::Train, io::Mode::Local);
}

TEST(ChooseRole, SeveralWorkersOutsideAJobLaunchThem) {
  expect_role(choose_role(job_with(io::Mode::Allreduce, 4), kNoJob), Role::Launch, io::Mode::Allreduce, 4);
  // --workers on the command line wins over the job file, also in local mode
  expect_role(choose_role(job_with(io::Mode::Allreduce, 4), kNoJob, {.workers = 2}), Role::Launch,
              io::Mode::Allreduce, 2);
  expect_role(choose_role(job_with(io::Mode::Local), kNoJob, {.workers = 3}), Role::Launch, io::Mode::Local, 3);
  // deterministic runs one worker through the data-parallel path too
  expect_role(choose_role(job_with(io::Mode::Allreduce, 1, 0, true), kNoJob), Role::Launch, io::Mode::Allreduce, 1);
}

TEST(ChooseRole, WorkersInLocalModeWithoutTheFlagIsAConfigError) {
  try {
    choose_role(job_with(io::Mode::Local, 2), kNoJob);
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("needs mode = \"allreduce\""), std::string::npos) << e.what();
  }
}

TEST(ChooseRole, AWorkerOfAJobTrainsWithAllreduce) {
  expect_role(choose_role(job_with(io::Mode::Allreduce, 2), loom_worker(1, 2)), Role::Train, io::Mode::Allreduce);
  // whatever the file says about workers: the launcher decides the world
  expect_role(choose_role(job_with(io::Mode::Local), loom_worker(0, 3)), Role::Train, io::Mode::Allreduce);
  // a world of one: local, unless deterministic
  expect_role(choose_role(job_with(io::Mode::Allreduce), loom_worker(0, 1)), Role::Train, io::Mode::Local);
  expect_role(choose_role(job_with(io::Mode::Allreduce, 1, 0, true), loom_worker(0, 1)), Role::Train,
              io::Mode::Allreduce);
}

TEST(ChooseRole, ParameterServerModes) {
  for (io::Mode mode : {io::Mode::DistSync, io::Mode::DistAsync, io::Mode::DistSsp}) {
    expect_role(choose_role(job_with(mode, 2, 3), kNoJob), Role::Launch, mode, 2, 3);
    expect_role(choose_role(job_with(mode, 2, 1), loom_worker(1, 2)), Role::Train, mode);
    expect_role(choose_role(job_with(mode, 2, 1), mxnet("worker")), Role::Train, mode);
    expect_role(choose_role(job_with(mode, 2, 1), mxnet("server")), Role::Server, mode);
    expect_role(choose_role(job_with(mode, 2, 1), mxnet("scheduler")), Role::Coordinator, mode);
    EXPECT_THROW(choose_role(job_with(mode, 2, 0), kNoJob), ConfigError);  // who would start the servers?
  }
}

// Deterministic: the launcher refuses a worker count that does not divide the atoms.
TEST(ChooseRole, DeterministicWorkersMustDivideTheAtoms) {
  io::JobConfig job = job_with(io::Mode::Allreduce, 3, 0, true);
  EXPECT_THROW(choose_role(job, kNoJob), ConfigError);  // 8 atoms
  job.distributed.deterministic_atoms = 6;
  expect_role(choose_role(job, kNoJob), Role::Launch, io::Mode::Allreduce, 3);
}

TEST(MakeStrategy, LocalAndRefusals) {
  const io::JobConfig job = job_with(io::Mode::Local);
  auto s = make_strategy(choose_role(job, kNoJob), job, kNoJob);
  EXPECT_EQ(s->name(), "local");
  EXPECT_EQ(s->world_size(), 1);
  EXPECT_THROW(make_strategy({.role = Role::Server}, job, kNoJob), ValueError);
}

TEST(MakeStrategy, JobOptionsReachTheStrategies) {
  io::JobConfig job = job_with(io::Mode::Allreduce, 2, 0, true);
  job.distributed.bucket_mb = 2;
  job.distributed.algorithm = "tree";
  job.distributed.timeout_s = 5;
  job.distributed.deterministic_atoms = 16;
  const DataParallelStrategyOptions o = data_parallel_options(job.distributed);
  EXPECT_TRUE(o.deterministic);
  EXPECT_EQ(o.deterministic_atoms, 16);
  EXPECT_EQ(o.data_parallel.bucket_bytes, size_t{2} << 20);
  EXPECT_EQ(o.data_parallel.algorithm, comm::Algorithm::Tree);
  EXPECT_EQ(o.data_parallel.timeout.count(), 5000);
  job.distributed.staleness = 3;
  EXPECT_EQ(kvstore_options(job.distributed).staleness, 3);
}

// Two ranks as threads under torchrun's variables: make_strategy joins them
// into a DataParallelStrategy that carries the job's deterministic option.
TEST(MakeStrategy, AllreduceJoinsTheJob) {
  const std::string endpoint = comm::pick_free_tcp_endpoint("127.0.0.1");
  const std::string port = endpoint.substr(endpoint.rfind(':') + 1);
  const io::JobConfig job = job_with(io::Mode::Allreduce, 2, 0, true);
  auto rank = [&](int r) {
    const comm::JobEnv env = comm::read_job_env(Env{{"RANK", std::to_string(r)},
                                                    {"WORLD_SIZE", "2"},
                                                    {"MASTER_ADDR", "127.0.0.1"},
                                                    {"MASTER_PORT", port},
                                                    {"LOOM_INSECURE", "1"}});
    const ProcessRole role = choose_role(job, env);
    auto strategy = make_strategy(role, job, env);
    auto* dp = dynamic_cast<DataParallelStrategy*>(strategy.get());
    if (!dp) throw std::runtime_error("not a DataParallelStrategy");
    if (!dp->deterministic()) throw std::runtime_error("deterministic was lost");
    strategy->barrier();
    strategy->finish();
    return std::make_pair(strategy->rank(), strategy->world_size());
  };
  auto f0 = std::async(std::launch::async, rank, 0);
  auto f1 = std::async(std::launch::async, rank, 1);
  EXPECT_EQ(f0.get(), std::make_pair(0, 2));
  EXPECT_EQ(f1.get(), std::make_pair(1, 2));
}

}  // namespace
}  // namespace loom::parallel
