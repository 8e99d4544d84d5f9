// comm::join_job (the join every role runs) and the rendezvous names
// (comm/rendezvous/rendezvous_keys.h). Processes run as threads over loopback.
#include "loom/comm/rendezvous/join_job.h"

#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <string>

#include "loom/comm/rendezvous/rendezvous_keys.h"
#include "loom/comm/transport/zmq_transport.h"
#include "loom/core/error.h"

namespace loom::comm {
namespace {

using namespace std::chrono_literals;

// The names are what processes of one job agree on; a rename is a protocol change.
TEST(RendezvousKeys, AreTheNamesTheJobsUse) {
  EXPECT_STREQ(rendezvous::kPsConfig, "ps/config");
  EXPECT_STREQ(rendezvous::kPsType, "ps/type");
  EXPECT_STREQ(rendezvous::kPsFinished, "ps/finished");
  EXPECT_STREQ(rendezvous::kDone, "1");
  EXPECT_EQ(rendezvous::ssp_clock(3, 17), "ssp/3/17");
  EXPECT_EQ(rendezvous::ssp_clock(0, int64_t{1} << 40), "ssp/0/1099511627776");
  EXPECT_STREQ(rendezvous::kTransportReady, "transport-ready");
  EXPECT_STREQ(rendezvous::kFinish, "finish");
  EXPECT_STREQ(rendezvous::kKvClose, "kv-close");
  EXPECT_EQ(rendezvous::kv_barrier(0), "kv-barrier-0");
  EXPECT_EQ(rendezvous::kv_barrier(12), "kv-barrier-12");
}

int port_of(const std::string& endpoint) { return std::stoi(endpoint.substr(endpoint.rfind(':') + 1)); }

JobEnv loom_env(const std::string& role, int rank, int port, int workers, int servers) {
  JobEnv env;
  env.source = "LOOM";
  env.role = role;
  env.rank = rank;
  env.world_size = workers;
  env.num_servers = servers;
  env.coordinator_host = "127.0.0.1";
  env.coordinator_port = port;
  env.host = "join-test-host";
  env.secret = "join-job-test-secret";
  return env;
}

// Two workers and a server meet; the server registers the endpoint its
// callback opened once connected, the workers none.
TEST(JoinJob, RegistersEveryRoleWithItsEndpoint) {
  Coordinator coord({.num_workers = 2, .num_servers = 1, .security = {.secret = "join-job-test-secret"}});
  const int port = port_of(coord.endpoint());
  auto server = std::async(std::launch::async, [&] {
    const JoinOptions options{.role = "server", .timeout = 10s, .data_endpoint = [] { return std::string("tcp://s:1"); }};
    JoinedJob job = join_job(loom_env("server", 0, port, 2, 1), options);
    job.client->leave();
    return job.membership;
  });
  auto worker = [&](int rank) {
    JoinedJob job = join_job(loom_env("worker", rank, port, 2, 1), {.role = "worker", .timeout = 10s});
    EXPECT_EQ(job.coordinator, nullptr);  // a LOOM job has its own
    job.client->leave();
    return job.membership;
  };
  auto worker1 = std::async(std::launch::async, worker, 1);
  const Membership m0 = worker(0);
  const Membership m1 = worker1.get();
  const Membership ms = server.get();
  EXPECT_EQ(m0.rank, 0);
  EXPECT_EQ(m1.rank, 1);
  EXPECT_EQ(ms.role, "server");
  EXPECT_EQ(ms.rank, 0);
  EXPECT_EQ(m0.num_workers, 2);
  EXPECT_EQ(m0.num_servers, 1);
  EXPECT_EQ(m0.endpoints("server"), std::vector<std::string>{"tcp://s:1"});
  EXPECT_EQ(m0.endpoints("worker"), (std::vector<std::string>{"", ""}));
  EXPECT_EQ(m0.self().host, "join-test-host");
}

// The secret is checked before anything connects or binds: the endpoint
// callback never runs, and the error is the one that says how to pass a secret.
TEST(JoinJob, NoSecretIsAConfigErrorBeforeConnecting) {
  JobEnv env = loom_env("worker", 0, port_of(pick_free_tcp_endpoint("127.0.0.1")), 2, 0);
  env.secret.clear();
  bool opened = false;
  const JoinOptions options{.timeout = 30s, .data_endpoint = [&] {
                              opened = true;
                              return std::string();
                            }};
  try {
    join_job(env, options);
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("LOOM_JOB_SECRET"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(opened);
}

// Under a foreign launcher worker 0 hosts the coordinator when asked to; the
// others join it.
TEST(JoinJob, WorkerZeroHostsTheCoordinatorUnderAForeignLauncher) {
  const int port = port_of(pick_free_tcp_endpoint("127.0.0.1"));
  auto join = [&](int rank) {
    JobEnv env = loom_env("worker", rank, port, 2, 0);
    env.source = "torchrun";
    return join_job(env, {.role = "worker", .timeout = 10s, .host_coordinator = true});
  };
  auto rank1 = std::async(std::launch::async, join, 1);
  JoinedJob job0 = join(0);
  JoinedJob job1 = rank1.get();
  ASSERT_NE(job0.coordinator, nullptr);
  EXPECT_EQ(job1.coordinator, nullptr);
  EXPECT_EQ(job0.membership.rank, 0);
  EXPECT_EQ(job1.membership.rank, 1);
  job1.client->leave();
  job0.client->leave();
}

}  // namespace
}  // namespace loom::comm
