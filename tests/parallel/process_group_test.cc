// ProcessGroup::join's failure paths (issue 10): a join that fails — no job
// secret, a rendezvous that times out, a rank that gives up half way — throws
// a typed error with a clear message, does not crash while cleaning up, and
// does not keep the other ranks waiting. Ranks run as threads over loopback.
#include "loom/parallel/process_group.h"

#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <thread>

#include "loom/comm/transport/zmq_transport.h"
#include "loom/core/error.h"

namespace loom::parallel {
namespace {

using namespace std::chrono_literals;
using Env = std::map<std::string, std::string>;
using Clock = std::chrono::steady_clock;

// A free loopback port for the coordinator rank 0 hosts.
int free_port() {
  const std::string endpoint = comm::pick_free_tcp_endpoint("127.0.0.1");
  return std::stoi(endpoint.substr(endpoint.rfind(':') + 1));
}

// torchrun's variables for `rank` of `world`, coordinator on 127.0.0.1:port.
comm::JobEnv torchrun_rank(int rank, int world, int port, bool insecure = true) {
  Env env{{"RANK", std::to_string(rank)},
          {"WORLD_SIZE", std::to_string(world)},
          {"MASTER_ADDR", "127.0.0.1"},
          {"MASTER_PORT", std::to_string(port)}};
  if (insecure) env["LOOM_INSECURE"] = "1";
  return comm::read_job_env(env);
}

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// What `mpirun -np 2 loom train` gave every rank before the fix: no secret.
// The join used to throw and the destructor then called barrier() on a client
// that never existed (SIGSEGV, nothing printed).
TEST(ProcessGroup, NoSecretUnderMpirunIsAConfigErrorThatSaysHow) {
  const comm::JobEnv env = comm::read_job_env(Env{{"OMPI_COMM_WORLD_RANK", "0"},
                                                  {"OMPI_COMM_WORLD_SIZE", "2"},
                                                  {"OMPI_COMM_WORLD_LOCAL_RANK", "0"},
                                                  {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"},
                                                  {"PMIX_NAMESPACE", "1088618497"}});
  try {
    ProcessGroup::join(env, {.timeout = 2s});
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("mpirun -x LOOM_JOB_SECRET"), std::string::npos) << what;
    EXPECT_NE(what.find("-x LOOM_JOB_SECRET"), std::string::npos) << what;
    EXPECT_NE(what.find("LOOM_JOB_SECRET_FILE"), std::string::npos) << what;
    EXPECT_NE(what.find("LOOM_INSECURE=1"), std::string::npos) << what;
  }
}

TEST(ProcessGroup, NoSecretUnderTorchrunNamesTorchrun) {
  try {
    ProcessGroup::join(torchrun_rank(1, 2, free_port(), /*insecure=*/false), {.timeout = 2s});
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("torchrun"), std::string::npos) << e.what();
  }
}

// Rank 0 hosts the coordinator and registers; rank 1 never comes. The join
// times out, and cleaning up (client, then the coordinator) neither crashes
// nor waits at a "finish" barrier for the rank that never came.
TEST(ProcessGroup, RendezvousTimeoutCleansUpPromptly) {
  const auto start = Clock::now();
  EXPECT_THROW(ProcessGroup::join(torchrun_rank(0, 2, free_port()), {.timeout = 1s}), TimeoutError);
  EXPECT_LT(seconds_since(start), 15.0);
}

// The same for a rank that is not rank 0: no coordinator answers at all.
TEST(ProcessGroup, NoCoordinatorIsATimeoutError) {
  const auto start = Clock::now();
  EXPECT_THROW(ProcessGroup::join(torchrun_rank(1, 2, free_port()), {.timeout = 1s}), TimeoutError);
  EXPECT_LT(seconds_since(start), 15.0);
}

// Rank 1 registers and then fails (an unknown transport). Rank 0 must learn
// that at once — its join fails with PeerLostError naming rank 1 — instead of
// waiting out its rendezvous timeout at the transport-ready barrier.
TEST(ProcessGroup, ARankThatFailsItsJoinFailsTheOthersPromptly) {
  const int port = free_port();
  auto rank0 = std::async(std::launch::async, [&] {
    const auto start = Clock::now();
    try {
      ProcessGroup::join(torchrun_rank(0, 2, port), {.timeout = 60s, .transport = "zmq"});
      ADD_FAILURE() << "rank 0 joined a job whose rank 1 failed";
    } catch (const PeerLostError& e) {
      EXPECT_NE(std::string(e.what()).find("worker 1"), std::string::npos) << e.what();
    } catch (const Error& e) {
      ADD_FAILURE() << "expected PeerLostError, got " << e.what();
    }
    return seconds_since(start);
  });
  EXPECT_THROW(ProcessGroup::join(torchrun_rank(1, 2, port), {.timeout = 60s, .transport = "carrier-pigeon"}),
               ConfigError);
  ASSERT_EQ(rank0.wait_for(30s), std::future_status::ready);
  EXPECT_LT(rank0.get(), 30.0);
}

// The path that works: both ranks join, all-reduce nothing, finish cleanly.
TEST(ProcessGroup, JoinAndFinish) {
  const int port = free_port();
  auto run = [&](int rank) {
    auto pg = ProcessGroup::join(torchrun_rank(rank, 2, port), {.timeout = 30s, .transport = "zmq"});
    EXPECT_EQ(pg->rank(), rank);
    EXPECT_EQ(pg->size(), 2);
    pg->finish();
    pg->finish();  // twice is harmless
  };
  auto other = std::async(std::launch::async, run, 1);
  run(0);
  ASSERT_EQ(other.wait_for(60s), std::future_status::ready);
  other.get();
}

TEST(ProcessGroup, OneProcessNeedsNoSecretAndFinishIsANoOp) {
  auto pg = ProcessGroup::join(comm::read_job_env(Env{}), {});
  EXPECT_EQ(pg->size(), 1);
  pg->finish();
}

}  // namespace
}  // namespace loom::parallel
