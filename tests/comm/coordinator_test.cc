#include "loom/comm/rendezvous/coordinator.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <thread>
#include <vector>

#include "loom/core/error.h"

namespace loom::comm {
namespace {

using namespace std::chrono_literals;

const SecurityOptions kSecure{.secret = "coordinator-test-secret", .insecure = false};
const SecurityOptions kPlain{.secret = "", .insecure = true};

CoordinatorOptions options(int workers, int servers = 0, SecurityOptions security = kSecure) {
  return {.bind = "tcp://127.0.0.1:0",
          .num_workers = workers,
          .num_servers = servers,
          .security = std::move(security),
          .heartbeat_interval = 200ms,
          .heartbeat_timeout = 1000ms};
}

// Runs `fn` in a child process (exit 0 when it returns, 1 when it throws);
// alarm() ends a child that hangs anyway.
pid_t spawn(const std::function<void()>& fn, unsigned alarm_s = 30) {
  std::fflush(nullptr);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::alarm(alarm_s);
    int rc = 0;
    try {
      fn();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "child %d: %s\n", ::getpid(), e.what());
      rc = 1;
    } catch (...) {
      rc = 2;
    }
    std::fflush(nullptr);
    ::_exit(rc);
  }
  return pid;
}

// The child's exit status (128 + signal if killed), or -1 (after killing it)
// if it runs past `timeout`.
int reap(pid_t pid, std::chrono::milliseconds timeout = 30s) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    int status = 0;
    pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (r < 0) return -2;
    if (std::chrono::steady_clock::now() > until) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return -1;
    }
    std::this_thread::sleep_for(2ms);
  }
}

// A line through a pipe, with a timeout (for children reporting to the parent).
class Pipe {
 public:
  Pipe() {
    if (::pipe(fds_) != 0) throw std::runtime_error("pipe");
  }
  ~Pipe() {
    ::close(fds_[0]);
    ::close(fds_[1]);
  }
  void write_line(const std::string& s) {
    std::string line = s + "\n";
    if (::write(fds_[1], line.data(), line.size()) != static_cast<ssize_t>(line.size()))
      throw std::runtime_error("write");
  }
  std::string read_line(std::chrono::milliseconds timeout = 20s) {
    const auto until = std::chrono::steady_clock::now() + timeout;
    std::string line;
    for (;;) {
      auto nl = buffered_.find('\n');
      if (nl != std::string::npos) {
        line = buffered_.substr(0, nl);
        buffered_.erase(0, nl + 1);
        return line;
      }
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
      if (left <= 0ms) throw std::runtime_error("pipe: no line in time");
      zmq_pollitem_t item{nullptr, fds_[0], ZMQ_POLLIN, 0};
      if (zmq_poll(&item, 1, static_cast<long>(left.count())) > 0) {
        char buf[4096];
        ssize_t n = ::read(fds_[0], buf, sizeof buf);
        if (n <= 0) throw std::runtime_error("pipe closed");
        buffered_.append(buf, static_cast<size_t>(n));
      }
    }
  }

 private:
  int fds_[2];
  std::string buffered_;
};

// Collects a client's lost-peer callbacks.
struct LossLog {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<LostPeer> seen;
  std::function<void(const LostPeer&)> callback() {
    return [this](const LostPeer& p) {
      std::lock_guard lock(mu);
      seen.push_back(p);
      cv.notify_all();
    };
  }
  bool wait_for(size_t n, std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu);
    return cv.wait_for(lock, timeout, [&] { return seen.size() >= n; });
  }
  std::vector<LostPeer> get() {
    std::lock_guard lock(mu);
    return seen;
  }
};

std::string endpoint_of(const std::string& role, int i) {
  return format("tcp://127.0.0.1:{}", role == "worker" ? 7000 + i : 8000 + i);
}

TEST(Coordinator, RendezvousAsThreadsGroupsHostsAndExchangesEndpoints) {
  Coordinator coord(options(4, 2));
  EXPECT_NE(coord.endpoint().find("tcp://127.0.0.1:"), std::string::npos);
  EXPECT_EQ(coord.endpoint().find(":0"), std::string::npos) << coord.endpoint();
  struct Ask {
    std::string role, host;
    int rank;
  };
  // Worker 3 asks for rank 3; the others get the free ranks grouped by host.
  const std::vector<Ask> asks = {{"worker", "hostA", -1}, {"worker", "hostB", 3},  {"worker", "hostB", -1},
                                 {"worker", "hostA", -1}, {"server", "hostB", -1}, {"server", "hostA", -1}};
  std::vector<Membership> got(asks.size());
  std::vector<std::string> errors(asks.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < asks.size(); ++i) {
    threads.emplace_back([&, i] {
      try {
        CoordinatorClient client(coord.endpoint(), kSecure, 10s);
        got[i] = client.register_process({.role = asks[i].role,
                                          .host = asks[i].host,
                                          .rank = asks[i].rank,
                                          .endpoint = endpoint_of(asks[i].role, static_cast<int>(i))},
                                         10s);
        client.barrier("done", 10s);
        client.leave();
      } catch (const std::exception& e) {
        errors[i] = e.what();
      }
    });
  }
  for (auto& t : threads) t.join();
  for (size_t i = 0; i < asks.size(); ++i) ASSERT_EQ(errors[i], "") << "client " << i;
  EXPECT_TRUE(coord.formed());
  EXPECT_TRUE(coord.wait_finished(5s));
  EXPECT_TRUE(coord.lost().empty());

  std::map<std::string, std::set<int>> ranks;
  for (size_t i = 0; i < asks.size(); ++i) {
    const Membership& m = got[i];
    EXPECT_EQ(m.role, asks[i].role);
    ranks[m.role].insert(m.rank);
    EXPECT_EQ(m.num_workers, 4);
    EXPECT_EQ(m.num_servers, 2);
    EXPECT_EQ(m.world_size, asks[i].role == "worker" ? 4 : 2);
    EXPECT_EQ(m.num_hosts, 2);
    ASSERT_EQ(m.processes.size(), 6u);
    EXPECT_EQ(m.self().host, asks[i].host);
    EXPECT_EQ(m.self().endpoint, endpoint_of(asks[i].role, static_cast<int>(i)));
    // Everybody sees the same table.
    for (size_t k = 0; k < m.processes.size(); ++k) {
      EXPECT_EQ(m.processes[k].endpoint, got[0].processes[k].endpoint);
      EXPECT_EQ(m.processes[k].host_index, got[0].processes[k].host_index);
    }
  }
  EXPECT_EQ(ranks["worker"], (std::set<int>{0, 1, 2, 3}));
  EXPECT_EQ(ranks["server"], (std::set<int>{0, 1}));
  EXPECT_EQ(got[1].rank, 3);  // asked for
  const Membership& m = got[0];
  // hostA's two workers got ranks 0 and 1; hostB has 2 and 3.
  EXPECT_EQ(m.at("worker", 0).host, "hostA");
  EXPECT_EQ(m.at("worker", 1).host, "hostA");
  EXPECT_EQ(m.at("worker", 2).host, "hostB");
  EXPECT_EQ(m.at("worker", 3).host, "hostB");
  EXPECT_EQ(m.host_indices("worker"), (std::vector<int>{0, 0, 1, 1}));
  EXPECT_EQ(m.at("worker", 1).local_rank, 1);
  EXPECT_EQ(m.at("worker", 2).local_rank, 0);
  EXPECT_EQ(m.at("server", 0).host, "hostA");  // servers by host name too
  EXPECT_EQ(m.at("server", 0).host_index, 0);
  EXPECT_EQ(m.at("server", 1).host_index, 1);
  EXPECT_EQ(m.endpoints("worker")[3], endpoint_of("worker", 1));
  EXPECT_EQ(m.endpoints("server").size(), 2u);
}

TEST(Coordinator, RendezvousAsProcesses) {
  constexpr int kWorkers = 3;
  Coordinator coord(options(kWorkers));
  const std::string ep = coord.endpoint();
  Pipe pipe;
  std::vector<pid_t> children;
  for (int i = 0; i < kWorkers; ++i) {
    children.push_back(spawn([&, i] {
      CoordinatorClient client(ep, kSecure, 10s);
      Membership m = client.register_process(
          {.role = "worker", .host = format("node{}", i % 2), .endpoint = format("tcp://127.0.0.1:{}", 9100 + i)}, 10s);
      std::string line = format("{} {}", m.rank, m.self().endpoint);
      for (const auto& e : m.endpoints("worker")) line += " " + e;
      pipe.write_line(line);
      client.barrier("exit", 10s);
      client.leave();
    }));
  }
  std::set<int> ranks;
  std::set<std::string> tables;
  for (int i = 0; i < kWorkers; ++i) {
    std::istringstream in(pipe.read_line());
    int rank = -1;
    std::string self, rest;
    in >> rank >> self;
    std::getline(in, rest);
    ranks.insert(rank);
    tables.insert(rest);
    EXPECT_NE(rest.find(self), std::string::npos);
  }
  for (pid_t c : children) EXPECT_EQ(reap(c), 0);
  EXPECT_EQ(ranks, (std::set<int>{0, 1, 2}));
  EXPECT_EQ(tables.size(), 1u) << "every process must see the same endpoints";
  EXPECT_TRUE(coord.wait_finished(5s));
  EXPECT_TRUE(coord.lost().empty());
}

// Registers n workers from threads; returns the clients (rank order).
std::vector<std::unique_ptr<CoordinatorClient>> join_workers(const Coordinator& coord, int n,
                                                             SecurityOptions security = kSecure) {
  std::vector<std::unique_ptr<CoordinatorClient>> clients(static_cast<size_t>(n));
  std::vector<std::thread> threads;
  std::vector<std::string> errors(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    threads.emplace_back([&, i] {
      try {
        auto c = std::make_unique<CoordinatorClient>(coord.endpoint(), security, 10s);
        c->register_process({.role = "worker", .host = "h", .rank = i, .endpoint = ""}, 10s);
        clients[static_cast<size_t>(i)] = std::move(c);
      } catch (const std::exception& e) {
        errors[static_cast<size_t>(i)] = e.what();
      }
    });
  }
  for (auto& t : threads) t.join();
  for (const auto& e : errors) {
    if (!e.empty()) throw std::runtime_error(e);
  }
  return clients;
}

TEST(Coordinator, BarrierWaitsForEveryoneAndTimesOutNamingTheMissing) {
  Coordinator coord(options(3));
  auto clients = join_workers(coord, 3);
  for (int round = 0; round < 2; ++round) {  // a barrier name can be used again
    const auto start = std::chrono::steady_clock::now();
    std::vector<std::thread> threads;
    std::atomic<int> passed{0};
    for (int i = 0; i < 3; ++i) {
      threads.emplace_back([&, i] {
        if (i == 2) std::this_thread::sleep_for(200ms);
        clients[static_cast<size_t>(i)]->barrier("step", 5s);
        ++passed;
      });
    }
    for (auto& t : threads) t.join();
    EXPECT_EQ(passed.load(), 3);
    EXPECT_GE(std::chrono::steady_clock::now() - start, 200ms);
  }
  // Rank 2 never comes: the others time out, told who is missing.
  std::vector<std::thread> threads;
  std::vector<std::string> errors(2);
  for (int i = 0; i < 2; ++i) {
    threads.emplace_back([&, i] {
      try {
        clients[static_cast<size_t>(i)]->barrier("never", 300ms);
      } catch (const TimeoutError& e) {
        errors[static_cast<size_t>(i)] = e.what();
      }
    });
  }
  for (auto& t : threads) t.join();
  for (const auto& e : errors) EXPECT_NE(e.find("worker 2"), std::string::npos) << e;
  // Scoped to a role that does not exist in this job / the wrong role.
  EXPECT_THROW(clients[0]->barrier("servers", 1s, "server"), ConfigError);
  for (auto& c : clients) c->leave();
}

TEST(Coordinator, KeyValueStore) {
  Coordinator coord(options(2));
  auto clients = join_workers(coord, 2);
  clients[0]->set("nccl_id", std::string("\0\1binary\xff", 10));
  EXPECT_EQ(clients[1]->get("nccl_id", 1s), std::string("\0\1binary\xff", 10));
  // get() waits for a later set().
  std::thread setter([&] {
    std::this_thread::sleep_for(200ms);
    clients[0]->set("late", "v");
  });
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(clients[1]->get("late", 5s), "v");
  EXPECT_GE(std::chrono::steady_clock::now() - start, 150ms);
  setter.join();
  clients[0]->set("late", "v2");  // overwrite
  EXPECT_EQ(clients[1]->get("late", 1s), "v2");
  // Missing: TimeoutError at about the timeout.
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_THROW(clients[1]->get("missing", 300ms), TimeoutError);
  const auto waited = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(waited, 300ms);
  EXPECT_LT(waited, 2s);
  EXPECT_THROW(clients[0]->set("big", std::string((1 << 20) + 1, 'x')), ValueError);
  for (auto& c : clients) c->leave();
}

// The step-boundary agreement: every worker proposes at once, one proposal
// wins and every caller (and every later one) learns the same winner.
TEST(Coordinator, ConcurrentProposalsAllLearnTheSameWinner) {
  constexpr int kWorkers = 4;
  Coordinator coord(options(kWorkers));
  auto clients = join_workers(coord, kWorkers);
  for (int round = 0; round < 5; ++round) {
    const std::string key = format("stop_at/{}", round);
    EXPECT_EQ(clients[0]->try_get(key), std::nullopt);
    std::string waited;  // a get waiting before any proposal is answered with the winner
    std::thread getter([&] { waited = clients[0]->get(key, 5s); });
    std::this_thread::sleep_for(50ms);
    std::vector<std::string> won(kWorkers);
    std::vector<std::thread> threads;
    std::atomic<int> ready{0};
    for (int i = 0; i < kWorkers; ++i) {
      threads.emplace_back([&, i] {
        ++ready;
        while (ready.load() < kWorkers) std::this_thread::yield();
        won[static_cast<size_t>(i)] = clients[static_cast<size_t>(i)]->propose(key, format("step {}", 100 + i));
      });
    }
    for (auto& t : threads) t.join();
    getter.join();
    EXPECT_TRUE(won[0].starts_with("step 10")) << won[0];
    for (int i = 0; i < kWorkers; ++i) EXPECT_EQ(won[static_cast<size_t>(i)], won[0]) << "worker " << i;
    EXPECT_EQ(waited, won[0]);
    for (auto& c : clients) EXPECT_EQ(c->try_get(key), std::optional<std::string>(won[0]));
    EXPECT_EQ(clients[1]->propose(key, "step 7"), won[0]);  // a late proposal loses too
  }
  // try_get does not wait: it answers at once for a key nobody sets.
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(clients[2]->try_get("never"), std::nullopt);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1s);
  clients[3]->set("empty", "");
  EXPECT_EQ(clients[2]->try_get("empty"), std::optional<std::string>(""));
  EXPECT_THROW(clients[0]->propose("big", std::string((1 << 20) + 1, 'x')), ValueError);
  EXPECT_THROW(clients[0]->try_get(std::string(4097, 'k')), ValueError);
  for (auto& c : clients) c->leave();
}

// With the coordinator stopped, propose and try_get time out like get; once
// the client has declared the coordinator lost they throw PeerLostError.
TEST(Coordinator, ProposeAndTryGetReportAStoppedCoordinator) {
  CoordinatorOptions opt = options(1);
  opt.heartbeat_timeout = 2000ms;  // room for the calls that time out first
  Coordinator coord(opt);
  auto clients = join_workers(coord, 1);
  CoordinatorClient& client = *clients[0];
  LossLog log;
  client.on_peer_lost(log.callback());
  EXPECT_EQ(client.propose("stop_at", "120"), "120");
  coord.stop();
  const auto start = std::chrono::steady_clock::now();
  EXPECT_THROW(client.try_get("stop_at", 200ms), TimeoutError);
  EXPECT_THROW(client.propose("stop_at", "95", 200ms), TimeoutError);
  EXPECT_THROW(client.get("stop_at", 200ms), TimeoutError);
  EXPECT_GE(std::chrono::steady_clock::now() - start, 600ms);
  ASSERT_TRUE(log.wait_for(1, 2000ms + 1500ms)) << "the coordinator was not reported lost";
  EXPECT_EQ(log.get()[0].role, "coordinator");
  for (auto call : {std::function<void()>([&] { client.try_get("stop_at", 5s); }),
                    std::function<void()>([&] { client.propose("stop_at", "95", 5s); }),
                    std::function<void()>([&] { client.get("stop_at", 5s); })}) {
    const auto t0 = std::chrono::steady_clock::now();
    try {
      call();
      ADD_FAILURE() << "a call to a lost coordinator returned";
    } catch (const PeerLostError& e) {
      EXPECT_NE(std::string(e.what()).find("the coordinator at"), std::string::npos) << e.what();
    }
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s);  // at once, not at the timeout
  }
}

TEST(Coordinator, RefusesBadRegistrations) {
  Coordinator coord(options(2, 1));
  CoordinatorClient a(coord.endpoint(), kSecure, 10s);
  CoordinatorClient b(coord.endpoint(), kSecure, 10s);
  CoordinatorClient c(coord.endpoint(), kSecure, 10s);
  EXPECT_THROW(a.register_process({.role = "boss", .host = "h", .endpoint = ""}, 1s), ValueError);
  EXPECT_THROW(a.register_process({.role = "worker", .host = "h", .rank = 2, .endpoint = ""}, 1s), ConfigError);
  // One worker asks for rank 1; a second asking for rank 1 is refused while the first waits.
  std::thread first([&] {
    EXPECT_THROW(a.register_process({.role = "worker", .host = "h", .rank = 1, .endpoint = ""}, 600ms), TimeoutError);
  });
  std::this_thread::sleep_for(100ms);
  try {
    b.register_process({.role = "worker", .host = "h2", .rank = 1, .endpoint = ""}, 1s);
    ADD_FAILURE() << "a taken rank was given twice";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("rank 1 is taken"), std::string::npos) << e.what();
  }
  // The rendezvous never completes (no server): the first times out saying what is missing.
  first.join();
  // After that timeout its slot is free again.
  std::thread again([&] {
    try {
      b.register_process({.role = "worker", .host = "h2", .rank = 1, .endpoint = ""}, 500ms);
      ADD_FAILURE() << "the rendezvous cannot complete without a server";
    } catch (const TimeoutError& e) {
      EXPECT_NE(std::string(e.what()).find("1 of 2 workers"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("0 of 1 servers"), std::string::npos) << e.what();
    }
  });
  again.join();
  (void)c;
}

TEST(Coordinator, KilledProcessIsReportedToEveryoneWithinTheHeartbeatTimeout) {
  Coordinator coord(options(3));
  const std::string ep = coord.endpoint();
  Pipe pipe;
  pid_t victim = spawn([&] {
    CoordinatorClient client(ep, kSecure, 10s);
    Membership m = client.register_process({.role = "worker", .host = "victim-host", .rank = 2, .endpoint = ""}, 10s);
    pipe.write_line(std::to_string(m.rank));
    ::pause();
  });
  LossLog logs[2];
  std::vector<std::unique_ptr<CoordinatorClient>> clients(2);
  std::vector<std::thread> threads;
  for (int i = 0; i < 2; ++i) {
    threads.emplace_back([&, i] {
      auto c = std::make_unique<CoordinatorClient>(ep, kSecure, 10s);
      c->on_peer_lost(logs[i].callback());
      c->register_process({.role = "worker", .host = "survivor", .rank = i, .endpoint = ""}, 10s);
      clients[static_cast<size_t>(i)] = std::move(c);
    });
  }
  for (auto& t : threads) t.join();
  ASSERT_EQ(pipe.read_line(), "2");
  ASSERT_TRUE(clients[0] && clients[1]);
  // A barrier that waits for the victim fails with PeerLostError once it is lost.
  std::string barrier_error;
  std::thread waiter([&] {
    try {
      clients[0]->barrier("with-victim", 10s);
    } catch (const PeerLostError& e) {
      barrier_error = e.what();
    }
  });
  std::this_thread::sleep_for(100ms);
  const auto start = std::chrono::steady_clock::now();
  ::kill(victim, SIGKILL);
  for (auto& log : logs) ASSERT_TRUE(log.wait_for(1, 1000ms + 1500ms)) << "no loss reported in time";
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_GE(took, 800ms);  // not before the timeout (less the last heartbeat's age)
  waiter.join();
  EXPECT_NE(barrier_error.find("worker 2 on host victim-host"), std::string::npos) << barrier_error;
  for (auto& log : logs) {
    auto seen = log.get();
    ASSERT_EQ(seen.size(), 1u);
    EXPECT_EQ(seen[0].role, "worker");
    EXPECT_EQ(seen[0].rank, 2);
    EXPECT_EQ(seen[0].host, "victim-host");
    EXPECT_NE(seen[0].describe().find("no heartbeat"), std::string::npos) << seen[0].describe();
  }
  EXPECT_EQ(coord.lost().size(), 1u);
  EXPECT_EQ(reap(victim), 128 + SIGKILL);
  // A callback set later still hears about it.
  LossLog late;
  clients[1]->on_peer_lost(late.callback());
  EXPECT_TRUE(late.wait_for(1, 2s));
  for (auto& c : clients) c->leave();
  EXPECT_TRUE(coord.wait_finished(2s));
}

TEST(Coordinator, ClientDestroyedWithoutLeaveIsLostAtOnceCleanLeaveIsNot) {
  Coordinator coord(options(3));
  auto clients = join_workers(coord, 3);
  LossLog log;
  clients[0]->on_peer_lost(log.callback());
  clients[1]->leave();
  clients[1].reset();
  clients[2].reset();                   // e.g. unwound by an exception
  ASSERT_TRUE(log.wait_for(1, 900ms));  // well before the heartbeat timeout
  auto seen = log.get();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].rank, 2);
  EXPECT_NE(seen[0].reason.find("without leaving"), std::string::npos) << seen[0].reason;
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(log.get().size(), 1u);  // the clean leave was not reported
  clients[0]->leave();
}

TEST(Coordinator, ClientsNoticeWhenTheCoordinatorDies) {
  Pipe pipe;
  pid_t coordinator = spawn([&] {
    Coordinator coord(options(2));
    pipe.write_line(coord.endpoint());
    ::pause();
  });
  const std::string ep = pipe.read_line();
  LossLog logs[2];
  std::vector<std::unique_ptr<CoordinatorClient>> clients(2);
  std::vector<std::thread> threads;
  for (int i = 0; i < 2; ++i) {
    threads.emplace_back([&, i] {
      auto c = std::make_unique<CoordinatorClient>(ep, kSecure, 10s);
      c->on_peer_lost(logs[i].callback());
      c->register_process({.role = "worker", .host = "h", .rank = i, .endpoint = ""}, 10s);
      clients[static_cast<size_t>(i)] = std::move(c);
    });
  }
  for (auto& t : threads) t.join();
  ASSERT_TRUE(clients[0] && clients[1]);
  std::string get_error;
  std::thread waiter([&] {
    try {
      clients[0]->get("never-set", 20s);
    } catch (const PeerLostError& e) {
      get_error = e.what();
    }
  });
  std::this_thread::sleep_for(100ms);
  const auto start = std::chrono::steady_clock::now();
  ::kill(coordinator, SIGKILL);
  for (auto& log : logs) ASSERT_TRUE(log.wait_for(1, 1000ms + 1500ms));
  EXPECT_LT(std::chrono::steady_clock::now() - start, 2500ms);
  waiter.join();
  EXPECT_NE(get_error.find("coordinator"), std::string::npos) << get_error;
  for (auto& log : logs) {
    auto seen = log.get();
    ASSERT_EQ(seen.size(), 1u);
    EXPECT_EQ(seen[0].role, "coordinator");
    EXPECT_EQ(seen[0].host, ep);
  }
  EXPECT_THROW(clients[1]->barrier("b", 5s), PeerLostError);
  EXPECT_EQ(reap(coordinator), 128 + SIGKILL);
  const auto t0 = std::chrono::steady_clock::now();
  clients.clear();  // destruction does not wait for a dead coordinator
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s);
}

TEST(Coordinator, WrongSecretOrPlaintextIsRefused) {
  Coordinator coord(options(1));
  const SecurityOptions wrong{.secret = "not-the-secret", .insecure = false};
  for (const SecurityOptions& bad : {wrong, kPlain}) {
    const auto start = std::chrono::steady_clock::now();
    try {
      CoordinatorClient client(coord.endpoint(), bad, 1500ms);
      ADD_FAILURE() << "a client without the secret connected";
    } catch (const AuthError& e) {
      EXPECT_NE(std::string(e.what()).find("LOOM_JOB_SECRET"), std::string::npos) << e.what();
    }
    EXPECT_LT(std::chrono::steady_clock::now() - start, 1500ms);
  }
  // Neither a secret nor insecure: refused before connecting.
  EXPECT_THROW(CoordinatorClient(coord.endpoint(), SecurityOptions{}, 1500ms), ValueError);
  // Nobody there: TimeoutError after the timeout, saying what to check.
  try {
    CoordinatorClient nobody("tcp://127.0.0.1:1", kSecure, 300ms);
    ADD_FAILURE() << "connected to nothing";
  } catch (const TimeoutError& e) {
    EXPECT_NE(std::string(e.what()).find("no coordinator answered at tcp://127.0.0.1:1"), std::string::npos)
        << e.what();
  }
  // The right secret still works.
  CoordinatorClient ok(coord.endpoint(), kSecure, 5s);
  Membership m = ok.register_process({.role = "worker", .host = "h", .endpoint = ""}, 5s);
  EXPECT_EQ(m.rank, 0);
  ok.leave();
}

TEST(Coordinator, SurvivesMalformedMessages) {
  Coordinator coord(options(1, 0, kPlain));
  void* ctx = zmq_ctx_new();
  void* s = zmq_socket(ctx, ZMQ_DEALER);
  int linger = 0;
  zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
  int rcvtimeo = 500;
  zmq_setsockopt(s, ZMQ_RCVTIMEO, &rcvtimeo, sizeof rcvtimeo);
  ASSERT_EQ(zmq_connect(s, coord.endpoint().c_str()), 0);
  auto send = [&](std::initializer_list<std::string> frames) {
    size_t i = 0;
    for (const auto& f : frames) zmq_send(s, f.data(), f.size(), ++i < frames.size() ? ZMQ_SNDMORE : 0);
  };
  // Hello with a valid header, then bodies that are truncated, oversized or of unknown types.
  std::string hello_header("LMCO\x01\x00\x01\x00\x07\x00\x00\x00\x00\x00\x00\x00", 16);
  send({hello_header, std::string(8, '\0')});
  char buf[256];
  EXPECT_GT(zmq_recv(s, buf, sizeof buf, 0), 0);  // the welcome header
  while (zmq_recv(s, buf, sizeof buf, ZMQ_DONTWAIT) >= 0) {
  }
  std::string register_header("LMCO\x01\x00\x02\x00\x08\x00\x00\x00\x00\x00\x00\x00", 16);
  send({"garbage"});
  send({"short", "x"});
  send({std::string("LMCO\x09\x00\x01\x00", 8) + std::string(8, '\0'), ""});  // bad version
  send({std::string("LMCO\x01\x00\x63\x00", 8) + std::string(8, '\0'), ""});  // unknown type
  send({register_header, std::string("\xff\xff\xff\x7f", 4)});                // string longer than the body
  send({register_header, std::string(3, '\0')});                              // truncated
  send({hello_header, std::string(8, '\0'), "extra frame"});
  // Replies to the parseable ones are protocol errors; the coordinator keeps serving.
  int errors = 0;
  for (int i = 0; i < 10; ++i) {
    zmq_msg_t msg;
    zmq_msg_init(&msg);
    if (zmq_msg_recv(&msg, s, 0) < 0) {
      zmq_msg_close(&msg);
      break;
    }
    if (zmq_msg_size(&msg) == 16 && static_cast<unsigned char*>(zmq_msg_data(&msg))[6] == 38) ++errors;
    zmq_msg_close(&msg);
  }
  EXPECT_EQ(errors, 2);
  zmq_close(s);
  zmq_ctx_term(ctx);
  CoordinatorClient ok(coord.endpoint(), kPlain, 5s);
  EXPECT_EQ(ok.register_process({.role = "worker", .host = "h", .endpoint = ""}, 5s).rank, 0);
  ok.leave();
}

}  // namespace
}  // namespace loom::comm
