// The transport contract (transport_contract.h) for the in-process transport
// and the ZeroMQ transport (CURVE and plaintext, tcp and ipc, 2-4 ranks as
// threads), then what only ZeroMQ has: send deadlines, shutdown, and real
// processes over loopback (authentication and malformed peers:
// zmq_peers_test.cc).
#include "loom/comm/transport/zmq_transport.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "loom/comm/transport/inproc_transport.h"
#include "loom/comm/wire/security.h"
#include "loom/comm/wire/wire.h"
#include "transport_contract.h"
#include "zmq_test_worlds.h"

extern char** environ;

namespace loom::comm {
namespace {

using namespace std::chrono_literals;
using contract::patient;
using contract::pattern;
using contract::World;
using namespace testing_worlds;

// ---- worlds ----

World make_inproc(int n) {
  auto hub = std::make_shared<InProcHub>(n);
  World world;
  for (int r = 0; r < n; ++r) {
    std::shared_ptr<Transport> t = hub->transport(r);
    world.push_back(std::shared_ptr<Transport>(t.get(), [t, hub](Transport*) {}));  // keeps the hub alive
  }
  return world;
}

contract::Factory factory(const std::string& kind) {
  if (kind == "inproc") return make_inproc;
  if (kind == "zmq_curve_tcp") return [](int n) { return make_zmq(tcp_endpoints(n), curve()); };
  if (kind == "zmq_plain_tcp") return [](int n) { return make_zmq(tcp_endpoints(n), plaintext()); };
  if (kind == "zmq_curve_ipc") return [](int n) { return make_zmq(ipc_endpoints(n), curve()); };
  if (kind == "zmq_curve_tcp_copy") {  // every payload copied: the other send path
    return [](int n) {
      ZmqOptions o = test_options();
      o.zero_copy_min_nbytes = SIZE_MAX;
      return make_zmq(tcp_endpoints(n), curve(), o);
    };
  }
  throw std::logic_error("unknown transport kind " + kind);
}

// ---- the contract, for every transport and world size ----

struct ContractCase {
  std::string kind;
  int n;
};

class TransportContract : public ::testing::TestWithParam<ContractCase> {
 protected:
  contract::Factory make() const { return factory(GetParam().kind); }
  int n() const { return GetParam().n; }
};

TEST_P(TransportContract, Ordering) { contract::check_ordering(make(), n()); }
TEST_P(TransportContract, OutOfOrderTags) { contract::check_out_of_order_tags(make(), n()); }
TEST_P(TransportContract, RingExchange) { contract::check_ring_exchange(make(), n()); }
TEST_P(TransportContract, AllToAll) { contract::check_all_to_all(make(), n()); }
TEST_P(TransportContract, RecvTimeout) { contract::check_recv_timeout(make(), n()); }
TEST_P(TransportContract, FailPeer) { contract::check_fail_peer(make(), n()); }
TEST_P(TransportContract, WrongSize) { contract::check_wrong_size(make(), n()); }
TEST_P(TransportContract, BadPeer) { contract::check_bad_peer(make(), n()); }
TEST_P(TransportContract, ConcurrentSenders) { contract::check_concurrent_senders(make(), n()); }

std::vector<ContractCase> contract_cases() {
  std::vector<ContractCase> cases;
  for (const char* kind : {"inproc", "zmq_curve_tcp", "zmq_plain_tcp", "zmq_curve_ipc", "zmq_curve_tcp_copy"}) {
    for (int n : {2, 3, 4}) cases.push_back({kind, n});
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(All, TransportContract, ::testing::ValuesIn(contract_cases()),
                         [](const ::testing::TestParamInfo<ContractCase>& info) {
                           return info.param.kind + "_n" + std::to_string(info.param.n);
                         });

// ---- deadlines and shutdown ----

TEST(ZmqTransportTest, SendToAnUnreachablePeerTimesOutWhenTheQueueIsFull) {
  auto endpoints = tcp_endpoints(2);  // nobody listens at endpoints[1]
  ZmqOptions o = test_options();
  o.send_queue_messages = 1;
  ZmqTransport rank0(0, endpoints, curve(), o);
  rank0.send(1, 1, pattern(10, 0, 1, 1), Deadline::in(1s));  // fits in the queue
  const auto start = Clock::now();
  EXPECT_THROW(rank0.send(1, 1, pattern(10, 0, 1, 1), Deadline::in(300ms)), TimeoutError);
  const auto took = Clock::now() - start;
  EXPECT_GE(took, 250ms);
  EXPECT_LE(took, 1500ms);
}

TEST(ZmqTransportTest, ZeroCopySendTimesOutAndReleasesTheBuffer) {
  auto endpoints = tcp_endpoints(2);
  ZmqTransport rank0(0, endpoints, plaintext(), test_options());
  auto buffer = std::make_unique<std::vector<std::byte>>(pattern(1 << 20, 0, 1, 1));
  const auto start = Clock::now();
  EXPECT_THROW(rank0.send(1, 1, *buffer, Deadline::in(300ms)), TimeoutError);
  EXPECT_LE(Clock::now() - start, 1500ms);
  buffer.reset();  // ZeroMQ no longer points at it
  EXPECT_EQ(rank0.stats().zero_copy_sends, 1u);
  // The link is re-made on the next send, and works once the peer is up.
  ZmqTransport rank1(1, endpoints, plaintext(), test_options());
  rank0.send(1, 2, pattern(100000, 0, 1, 2), patient());
  std::vector<std::byte> got(100000);
  rank1.recv(0, 2, got, patient());
  EXPECT_EQ(got, pattern(100000, 0, 1, 2));
}

TEST(ZmqTransportTest, PeersMayStartLate) {
  const auto endpoints = tcp_endpoints(2);
  ZmqTransport rank0(0, endpoints, curve(), test_options());
  rank0.send(1, 4, pattern(50, 0, 1, 4), patient());  // rank 1 does not exist yet
  std::this_thread::sleep_for(300ms);
  ZmqTransport rank1(1, endpoints, curve(), test_options());
  std::vector<std::byte> got(50);
  rank1.recv(0, 4, got, patient());
  EXPECT_EQ(got, pattern(50, 0, 1, 4));
}

TEST(ZmqTransportTest, SendToALostPeerIsPeerLostError) {
  const auto endpoints = tcp_endpoints(2);
  ZmqTransport rank0(0, endpoints, plaintext(), test_options());
  rank0.fail_peer(1, "stopped answering");
  try {
    rank0.send(1, 1, pattern(4, 0, 1, 1), patient());
    ADD_FAILURE() << "no error";
  } catch (const PeerLostError& e) {
    EXPECT_NE(std::string(e.what()).find("stopped answering"), std::string::npos) << e.what();
  }
}

TEST(ZmqTransportTest, DestructionDoesNotHangWithMessagesQueuedToADeadPeer) {
  auto endpoints = tcp_endpoints(3);
  ZmqOptions o = test_options();
  o.linger = 500ms;
  auto start = Clock::now();
  {
    ZmqTransport rank0(0, endpoints, curve(), o);
    for (int i = 0; i < 10; ++i) rank0.send(1, 1, pattern(100, 0, 1, 1), patient());  // nobody at rank 1
  }
  EXPECT_LE(Clock::now() - start, 2s);  // linger bounds it
  start = Clock::now();
  {
    ZmqTransport rank0(0, endpoints, curve(), o);
    for (int i = 0; i < 10; ++i) rank0.send(2, 1, pattern(100, 0, 2, 1), patient());
    rank0.fail_peer(2, "gone");  // a lost peer gets no linger at all
  }
  EXPECT_LE(Clock::now() - start, 400ms);
}

TEST(ZmqTransportTest, QueuedMessagesLeaveBeforeTheSenderCloses) {
  const auto endpoints = tcp_endpoints(2);
  ZmqTransport rank1(1, endpoints, curve(), test_options());
  {
    ZmqTransport rank0(0, endpoints, curve(), test_options());
    for (int i = 0; i < 20; ++i) rank0.send(1, 1, pattern(1000, 0, 1, 1, i), patient());
  }  // closed right after sending: linger lets the queue drain
  for (int i = 0; i < 20; ++i) {
    std::vector<std::byte> got(1000);
    rank1.recv(0, 1, got, patient());
    EXPECT_EQ(got, pattern(1000, 0, 1, 1, i));
  }
}

TEST(ZmqTransportTest, EndpointErrors) {
  EXPECT_THROW(ZmqTransport(0, {"127.0.0.1:5000"}, plaintext()), ValueError);
  EXPECT_THROW(ZmqTransport(2, {"tcp://127.0.0.1:1", "tcp://127.0.0.1:2"}, plaintext()), ValueError);
  EXPECT_THROW(ZmqTransport(0, {}, plaintext()), ValueError);
  const auto endpoints = tcp_endpoints(2);
  ZmqTransport first(0, endpoints, plaintext(), test_options());
  try {
    ZmqTransport second(0, endpoints, plaintext(), test_options());
    ADD_FAILURE() << "two transports bound the same endpoint";
  } catch (const CommError& e) {
    EXPECT_NE(std::string(e.what()).find(endpoints[0]), std::string::npos) << e.what();
  }
}

TEST(ZmqTransportTest, LargePayloadsGoWithoutCopyAndSmallOnesAreCopied) {
  const auto endpoints = tcp_endpoints(2);
  ZmqTransport rank0(0, endpoints, curve(), test_options());
  ZmqTransport rank1(1, endpoints, curve(), test_options());
  const size_t big = size_t{8} << 20;
  rank0.send(1, 1, pattern(big, 0, 1, 1), patient());
  rank0.send(1, 2, pattern(100, 0, 1, 2), patient());
  std::vector<std::byte> got(big), small(100);
  rank1.recv(0, 1, got, patient());
  rank1.recv(0, 2, small, patient());
  EXPECT_TRUE(got == pattern(big, 0, 1, 1));
  EXPECT_EQ(small, pattern(100, 0, 1, 2));
  EXPECT_EQ(rank0.stats().zero_copy_sends, 1u);
  EXPECT_EQ(rank0.stats().copied_sends, 1u);
  EXPECT_EQ(rank1.stats().messages_received, 2u);
  EXPECT_TRUE(rank0.secure());
}

TEST(ZmqTransportTest, PickFreeTcpEndpoint) {
  const std::string e = pick_free_tcp_endpoint("127.0.0.1");
  EXPECT_EQ(e.rfind("tcp://127.0.0.1:", 0), 0u) << e;
  const int port = std::stoi(e.substr(e.rfind(':') + 1));
  EXPECT_GT(port, 0);
  EXPECT_LT(port, 65536);
  EXPECT_THROW(pick_free_tcp_endpoint("not-an-address"), ValueError);
}

// ---- real processes ----

constexpr char kChildRankVar[] = "LOOM_ZMQ_TEST_CHILD_RANK";
constexpr char kChildEndpointsVar[] = "LOOM_ZMQ_TEST_ENDPOINTS";

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& e : v) s += (s.empty() ? "" : ",") + e;
  return s;
}

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> v;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');) v.push_back(item);
  return v;
}

// What every process of the multi-process test does: ring exchanges, an
// all-to-all, then a goodbye through rank 0 so nobody leaves early.
void run_process_rank(int rank, const std::vector<std::string>& endpoints) {
  ZmqTransport t(rank, endpoints, security_from_env(), test_options());
  ASSERT_TRUE(t.secure());
  const int n = t.size();
  const int right = (rank + 1) % n, left = (rank + n - 1) % n;
  const std::vector<size_t> sizes = {0, 1, 7, 1000, (size_t{1} << 20) + 3, size_t{8} << 20};
  for (size_t i = 0; i < sizes.size(); ++i) {
    t.send(right, 1, pattern(sizes[i], rank, right, 1, i), patient());
    std::vector<std::byte> got(sizes[i]);
    t.recv(left, 1, got, patient());
    EXPECT_TRUE(got == pattern(sizes[i], left, rank, 1, i)) << "rank " << rank << " ring round " << i;
  }
  for (int peer = 0; peer < n; ++peer) t.send(peer, 2, pattern(777, rank, peer, 2), patient());
  for (int peer = 0; peer < n; ++peer) {
    std::vector<std::byte> got(777);
    t.recv(peer, 2, got, patient());
    EXPECT_EQ(got, pattern(777, peer, rank, 2)) << "rank " << rank << " from " << peer;
  }
  std::vector<std::byte> bye(3);
  if (rank == 0) {
    for (int peer = 1; peer < n; ++peer) t.recv(peer, 3, bye, patient());
    for (int peer = 1; peer < n; ++peer) t.send(peer, 3, pattern(3, 0, peer, 3), patient());
  } else {
    t.send(0, 3, pattern(3, rank, 0, 3), patient());
    t.recv(0, 3, bye, patient());
  }
}

// The child side: runs only when the parent test starts this binary with the
// rank in the environment.
TEST(ZmqMultiProcessChild, Rank) {
  const char* rank = std::getenv(kChildRankVar);
  if (rank == nullptr) GTEST_SKIP() << "runs only as a child of ZmqMultiProcess.ThreeProcessesOverCurveTcp";
  ::alarm(120);  // never outlive a parent that stopped waiting
  run_process_rank(std::atoi(rank), split(std::getenv(kChildEndpointsVar)));
}

TEST(ZmqMultiProcess, ThreeProcessesOverCurveTcp) {
  const int n = 3;
  const auto endpoints = tcp_endpoints(n);
  ::setenv("LOOM_JOB_SECRET", kSecret, 1);

  std::vector<pid_t> children;
  for (int r = 1; r < n; ++r) {
    std::vector<std::string> env_strings;
    for (char** e = environ; *e != nullptr; ++e) {
      if (std::strncmp(*e, "LOOM_ZMQ_TEST_", 14) != 0) env_strings.emplace_back(*e);
    }
    env_strings.push_back(std::string(kChildRankVar) + "=" + std::to_string(r));
    env_strings.push_back(std::string(kChildEndpointsVar) + "=" + join(endpoints));
    std::vector<char*> envp;
    for (auto& s : env_strings) envp.push_back(s.data());
    envp.push_back(nullptr);
    std::string exe = "/proc/self/exe";
    std::string filter = "--gtest_filter=ZmqMultiProcessChild.Rank";
    std::string brief = "--gtest_brief=1";
    char* argv[] = {exe.data(), filter.data(), brief.data(), nullptr};
    pid_t pid = 0;
    const int rc = ::posix_spawn(&pid, exe.c_str(), nullptr, nullptr, argv, envp.data());
    ASSERT_EQ(rc, 0) << std::strerror(rc);
    children.push_back(pid);
  }

  std::string failure;
  try {
    run_process_rank(0, endpoints);
  } catch (const std::exception& e) {
    failure = e.what();
  }
  ::unsetenv("LOOM_JOB_SECRET");

  // Reap every child, whatever happened; kill those that outstay 60 s.
  const auto until = Clock::now() + 60s;
  for (pid_t pid : children) {
    int status = 0;
    pid_t done = 0;
    while ((done = ::waitpid(pid, &status, WNOHANG)) == 0 && Clock::now() < until) std::this_thread::sleep_for(20ms);
    if (done == 0) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      ADD_FAILURE() << "child " << pid << " did not finish in time";
      continue;
    }
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child " << pid << " status " << status;
  }
  EXPECT_TRUE(failure.empty()) << "rank 0: " << failure;
}

// ---- copy vs zero copy (run by hand: --gtest_also_run_disabled_tests) ----

double seconds_for_one(ZmqTransport& from, ZmqTransport& to, std::vector<std::byte>& payload,
                       std::vector<std::byte>& out, int repeats) {
  const auto start = Clock::now();
  for (int i = 0; i < repeats; ++i) {
    std::thread sender([&] { from.send(1, 1, payload, patient()); });
    to.recv(0, 1, out, patient());
    sender.join();
  }
  return std::chrono::duration<double>(Clock::now() - start).count() / repeats;
}

TEST(ZmqTransportBench, DISABLED_CopyVsZeroCopy64MB) {
  const size_t nbytes = size_t{64} << 20;
  std::vector<std::byte> payload = pattern(nbytes, 0, 1, 1), out(nbytes);
  for (bool secure : {false, true}) {
    for (bool zero_copy : {false, true}) {
      ZmqOptions o = test_options();
      o.zero_copy_min_nbytes = zero_copy ? size_t{64} << 10 : SIZE_MAX;
      const auto endpoints = tcp_endpoints(2);
      const SecurityOptions sec = secure ? curve() : plaintext();
      ZmqTransport a(0, endpoints, sec, o), b(1, endpoints, sec, o);
      seconds_for_one(a, b, payload, out, 1);  // connect, warm up
      const double s = seconds_for_one(a, b, payload, out, 5);
      std::printf("64 MB over loopback tcp, %s, %s: %.1f ms per message, %.2f GB/s\n", secure ? "CURVE" : "plaintext",
                  zero_copy ? "zero-copy send" : "copied send", s * 1e3, nbytes / s / 1e9);
    }
  }
}

}  // namespace
}  // namespace loom::comm
