#include "loom/comm/transport/shm_transport.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <functional>
#include <thread>
#include <vector>

#include "tests/comm/transport_contract.h"

namespace loom::comm {
namespace {

using namespace std::chrono_literals;

std::string unique_job(const char* what) {
  static std::atomic<int> counter{0};
  return format("test-{}-{}-{}", what, ::getpid(), counter++);
}

bool segment_exists(const std::string& job) {
  struct stat st {};
  return ::stat(("/dev/shm" + ShmTransport::segment_name(job)).c_str(), &st) == 0;
}

std::vector<std::byte> pattern(size_t n, int seed) {
  std::vector<std::byte> v(n);
  for (size_t i = 0; i < n; ++i)
    v[i] = static_cast<std::byte>((i * 131 + static_cast<size_t>(seed) * 7 + i / 251) & 0xff);
  return v;
}

void require(bool cond, const std::string& what) {
  if (!cond) throw std::runtime_error(what);
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

// The child's exit status, or -1 (after killing it) if it runs past `timeout`.
int reap(pid_t pid, std::chrono::milliseconds timeout = 30s) {
  const auto until = Clock::now() + timeout;
  for (;;) {
    int status = 0;
    pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (r < 0) return -2;
    if (Clock::now() > until) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return -1;
    }
    std::this_thread::sleep_for(2ms);
  }
}

ShmOptions opts(const std::string& job, int rank, int size, size_t ring = 4096) {
  return {.job_id = job,
          .rank = rank,
          .size = size,
          .ring_nbytes = ring,
          .attach_timeout = 10s,
          .heartbeat_timeout = 2s,
          .linger = 2s};
}

const std::vector<size_t> kSizes = {0, 1, 7, 1000, (1u << 20) + 3};

// Every rank sends every size to its right neighbour and receives from its
// left: with 4 KiB rings each 1 MiB message streams through in chunks, and it
// only completes if sends do not wait for matching receives.
void ring_exchange(Transport& t) {
  const int n = t.size(), r = t.rank();
  const int right = (r + 1) % n, left = (r + n - 1) % n;
  for (size_t i = 0; i < kSizes.size(); ++i) {
    auto msg = pattern(kSizes[i], r * 10 + static_cast<int>(i));
    std::vector<std::byte> in(kSizes[i]);
    if (kSizes[i] <= 2000) {  // small: all sends first, then receives
      t.send(right, 100 + i, msg, Deadline::in(10s));
      t.recv(left, 100 + i, in, Deadline::in(10s));
    } else {  // larger than the ring: send on a thread while receiving
      std::exception_ptr err;
      std::thread sender([&] {
        try {
          t.send(right, 100 + i, msg, Deadline::in(10s));
        } catch (...) {
          err = std::current_exception();
        }
      });
      t.recv(left, 100 + i, in, Deadline::in(10s));
      sender.join();
      if (err) std::rethrow_exception(err);
    }
    require(in == pattern(kSizes[i], left * 10 + static_cast<int>(i)),
            format("rank {}: message {} ({} bytes) from rank {} corrupted", r, i, kSizes[i], left));
  }
}

TEST(ShmTransport, RingExchangeThreads) {
  for (int n : {1, 2, 3, 4}) {
    const std::string job = unique_job("ring");
    std::vector<std::thread> ranks;
    std::vector<std::string> errors(static_cast<size_t>(n));
    for (int r = 0; r < n; ++r) {
      ranks.emplace_back([&, r] {
        try {
          ShmTransport t(opts(job, r, n));
          EXPECT_EQ(t.rank(), r);
          EXPECT_EQ(t.size(), n);
          EXPECT_STREQ(t.kind(), "shm");
          ring_exchange(t);
        } catch (const std::exception& e) {
          errors[static_cast<size_t>(r)] = e.what();
        }
      });
    }
    for (auto& th : ranks) th.join();
    for (int r = 0; r < n; ++r) EXPECT_EQ(errors[static_cast<size_t>(r)], "") << "world " << n << " rank " << r;
    EXPECT_FALSE(segment_exists(job));
  }
}

TEST(ShmTransport, RingExchangeProcesses) {
  const int n = 3;
  const std::string job = unique_job("procs");
  std::vector<pid_t> pids;
  for (int r = 0; r < n; ++r) {
    pids.push_back(spawn([&, r] {
      ShmTransport t(opts(job, r, n));
      ring_exchange(t);
      // Stay until everyone is done: a rank that closes early is a lost peer.
      std::byte token{};
      for (int p = 0; p < n; ++p) {
        if (p != r) t.send(p, 999, std::span<const std::byte>(&token, 1), Deadline::in(10s));
      }
      for (int p = 0; p < n; ++p) {
        if (p != r) t.recv(p, 999, std::span<std::byte>(&token, 1), Deadline::in(10s));
      }
    }));
  }
  for (int r = 0; r < n; ++r) EXPECT_EQ(reap(pids[static_cast<size_t>(r)]), 0) << "rank " << r;
  EXPECT_FALSE(segment_exists(job));
}

TEST(ShmTransport, SameTagKeepsOrderOtherTagsWait) {
  const std::string job = unique_job("order");
  ShmTransport t0(opts(job, 0, 2, 1024));
  ShmTransport t1(opts(job, 1, 2, 1024));
  EXPECT_FALSE(segment_exists(job));  // both attached: the name is gone, the memory stays
  for (int i = 0; i < 50; ++i) {
    auto msg = pattern(37, i);
    t0.send(1, 5, msg, Deadline::in(5s));
  }
  auto late = pattern(3000, 77);  // bigger than the ring: streamed after all of the above
  std::thread sender([&] { t0.send(1, 9, late, Deadline::in(5s)); });
  std::vector<std::byte> in9(3000);
  t1.recv(0, 9, in9, Deadline::in(5s));  // the tag-5 messages in front are stashed
  sender.join();
  EXPECT_EQ(in9, late);
  for (int i = 0; i < 50; ++i) {
    std::vector<std::byte> in(37);
    t1.recv(0, 5, in, Deadline::in(5s));
    ASSERT_EQ(in, pattern(37, i)) << "message " << i;
  }
  // Tags out of order, and a message to oneself.
  auto a = pattern(10, 1), b = pattern(20, 2);
  t1.send(0, 1, a, Deadline::in(1s));
  t1.send(0, 2, b, Deadline::in(1s));
  t1.send(1, 3, a, Deadline::in(1s));
  std::vector<std::byte> ib(20), ia(10), self(10);
  t0.recv(1, 2, ib, Deadline::in(1s));
  t0.recv(1, 1, ia, Deadline::in(1s));
  t1.recv(1, 3, self, Deadline::in(1s));
  EXPECT_EQ(ia, a);
  EXPECT_EQ(ib, b);
  EXPECT_EQ(self, a);
}

TEST(ShmTransport, WrongSizeTimeoutAndBadPeer) {
  const std::string job = unique_job("errors");
  ShmTransport t0(opts(job, 0, 2));
  ShmTransport t1(opts(job, 1, 2));
  auto msg = pattern(100, 3);
  t0.send(1, 7, msg, Deadline::in(1s));
  t0.send(1, 7, msg, Deadline::in(1s));
  std::vector<std::byte> small(99), right(100);
  EXPECT_THROW(t1.recv(0, 7, small, Deadline::in(1s)), CommError);
  t1.recv(0, 7, right, Deadline::in(1s));  // the wrong-size one was consumed; the next is intact
  EXPECT_EQ(right, msg);

  const auto start = Clock::now();
  EXPECT_THROW(t1.recv(0, 7, right, Deadline::in(100ms)), TimeoutError);
  const auto waited = Clock::now() - start;
  EXPECT_GE(waited, 100ms);
  EXPECT_LT(waited, 2s);

  EXPECT_THROW(t0.send(2, 0, msg, Deadline::in(1s)), CommError);
  EXPECT_THROW(t0.recv(-1, 0, right, Deadline::in(1s)), CommError);
  EXPECT_THROW(ShmTransport(opts(job, 2, 2)), ValueError);
  EXPECT_THROW(ShmTransport(opts("bad/name", 0, 1)), ValueError);
}

TEST(ShmTransport, ManyThreadsShareOneTransport) {
  const std::string job = unique_job("mt");
  ShmTransport t0(opts(job, 0, 2, 2048));
  ShmTransport t1(opts(job, 1, 2, 2048));
  constexpr int kThreads = 4, kMessages = 40;
  std::atomic<int> bad{0};
  std::vector<std::thread> threads;
  for (int k = 0; k < kThreads; ++k) {
    threads.emplace_back([&, k] {  // sender thread k: tag k
      for (int i = 0; i < kMessages; ++i) {
        auto m = pattern(static_cast<size_t>(500 + 97 * i), k * 1000 + i);
        t0.send(1, static_cast<uint64_t>(k), m, Deadline::in(10s));
      }
    });
    threads.emplace_back([&, k] {  // receiver thread k: tag k, in order
      for (int i = 0; i < kMessages; ++i) {
        std::vector<std::byte> in(static_cast<size_t>(500 + 97 * i));
        t1.recv(0, static_cast<uint64_t>(k), in, Deadline::in(10s));
        if (in != pattern(in.size(), k * 1000 + i)) ++bad;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(bad.load(), 0);
}

TEST(ShmTransport, SendQueuesWhatDoesNotFitUpToALimit) {
  const std::string job = unique_job("flow");
  auto o0 = opts(job, 0, 2, 1024);
  o0.max_queued_nbytes = 4096;
  ShmTransport t0(o0);
  ShmTransport t1(opts(job, 1, 2, 1024));
  // With nobody receiving: the first fits the ring, the second is queued
  // whole (one message always may be), the third has to wait for the queue.
  t0.send(1, 1, pattern(500, 1), Deadline::in(1s));
  t0.send(1, 2, pattern(10000, 2), Deadline::in(1s));
  const auto start = Clock::now();
  EXPECT_THROW(t0.send(1, 3, pattern(100, 3), Deadline::in(200ms)), TimeoutError);
  EXPECT_GE(Clock::now() - start, 200ms);
  std::vector<std::byte> first(500), second(10000), third(100);
  t1.recv(0, 1, first, Deadline::in(1s));
  t1.recv(0, 2, second, Deadline::in(5s));
  EXPECT_EQ(first, pattern(500, 1));
  EXPECT_EQ(second, pattern(10000, 2));
  t0.send(1, 3, pattern(100, 3), Deadline::in(1s));  // room again
  t1.recv(0, 3, third, Deadline::in(1s));
  EXPECT_EQ(third, pattern(100, 3));
}

TEST(ShmTransport, QueuedBytesGoOutBeforeClose) {
  const std::string job = unique_job("linger");
  auto t0 = std::make_unique<ShmTransport>(opts(job, 0, 2, 1024));
  ShmTransport t1(opts(job, 1, 2, 1024));
  auto big = pattern(50000, 9);
  t0->send(1, 1, big, Deadline::in(1s));    // mostly queued
  std::thread closer([&] { t0.reset(); });  // waits (linger) while rank 1 drains
  std::vector<std::byte> in(big.size());
  t1.recv(0, 1, in, Deadline::in(5s));
  closer.join();
  EXPECT_EQ(in, big);
}

TEST(ShmTransport, FailPeerAndClosedPeer) {
  const std::string job = unique_job("lost");
  auto t0 = std::make_unique<ShmTransport>(opts(job, 0, 3));
  ShmTransport t1(opts(job, 1, 3));
  ShmTransport t2(opts(job, 2, 3));
  std::vector<std::byte> in(4);
  // fail_peer wakes a receive that is already waiting.
  std::thread waiter([&] {
    try {
      t1.recv(2, 0, in, Deadline::in(10s));
      ADD_FAILURE() << "recv returned";
    } catch (const PeerLostError& e) {
      EXPECT_NE(std::string(e.what()).find("heartbeat monitor says so"), std::string::npos) << e.what();
    }
  });
  std::this_thread::sleep_for(50ms);
  const auto start = Clock::now();
  t1.fail_peer(2, "heartbeat monitor says so");
  waiter.join();
  EXPECT_LT(Clock::now() - start, 1s);
  EXPECT_THROW(t1.send(2, 0, in, Deadline::in(1s)), PeerLostError);

  // A peer that closed: what it sent first is still delivered, then PeerLostError.
  t0->send(1, 4, pattern(4, 4), Deadline::in(1s));
  t0.reset();
  t1.recv(0, 4, in, Deadline::in(1s));
  EXPECT_EQ(in, pattern(4, 4));
  EXPECT_THROW(t1.recv(0, 4, in, Deadline::in(5s)), PeerLostError);
  EXPECT_THROW(t2.send(0, 4, in, Deadline::in(1s)), PeerLostError);
}

TEST(ShmTransport, KilledProcessIsLostWithinHeartbeatTimeout) {
  const std::string job = unique_job("kill");
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  pid_t child = spawn([&] {
    ShmTransport t(opts(job, 1, 2));
    char c = 1;
    require(::write(ready[1], &c, 1) == 1, "write");
    ::pause();
  });
  ShmTransport t0(opts(job, 0, 2));
  char c = 0;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  ::kill(child, SIGKILL);  // not reaped yet: a zombie, so only the heartbeat tells
  const auto start = Clock::now();
  std::vector<std::byte> in(1);
  try {
    t0.recv(1, 0, in, Deadline::in(10s));
    ADD_FAILURE() << "recv returned";
  } catch (const PeerLostError& e) {
    EXPECT_NE(std::string(e.what()).find("rank 1"), std::string::npos) << e.what();
  }
  EXPECT_LT(Clock::now() - start, 2s + 1500ms);  // heartbeat_timeout = 2 s
  EXPECT_EQ(reap(child), 128 + SIGKILL);
  ::close(ready[0]);
  ::close(ready[1]);
}

TEST(ShmTransport, AttachWaitsForRankZeroAndReplacesStaleSegments) {
  // Rank 1 first: it waits for rank 0.
  const std::string job = unique_job("race");
  std::exception_ptr err;
  std::thread late([&] {
    try {
      ShmTransport t1(opts(job, 1, 2));
      t1.send(0, 1, pattern(3, 1), Deadline::in(5s));
      std::vector<std::byte> in(1);
      t1.recv(0, 2, in, Deadline::in(5s));
    } catch (...) {
      err = std::current_exception();
    }
  });
  std::this_thread::sleep_for(100ms);
  {
    ShmTransport t0(opts(job, 0, 2));
    std::vector<std::byte> in(3);
    t0.recv(1, 1, in, Deadline::in(5s));
    EXPECT_EQ(in, pattern(3, 1));
    t0.send(1, 2, pattern(1, 2), Deadline::in(5s));
    late.join();
  }
  if (err) std::rethrow_exception(err);

  // No rank 0 at all: TimeoutError after attach_timeout.
  auto o = opts(unique_job("nobody"), 1, 2);
  o.attach_timeout = 200ms;
  EXPECT_THROW(ShmTransport{o}, TimeoutError);

  // A rank 0 killed while the job was starting leaves its segment; the next
  // rank 0 of that job id replaces it.
  const std::string stale = unique_job("stale");
  pid_t child = spawn([&] {
    ShmTransport t(opts(stale, 0, 2));
    ::raise(SIGKILL);
  });
  EXPECT_EQ(reap(child), 128 + SIGKILL);
  ASSERT_TRUE(segment_exists(stale));
  {
    ShmTransport t0(opts(stale, 0, 2));
    ShmTransport t1(opts(stale, 1, 2));
    t1.send(0, 0, pattern(5, 5), Deadline::in(1s));
    std::vector<std::byte> in(5);
    t0.recv(1, 0, in, Deadline::in(1s));
    EXPECT_EQ(in, pattern(5, 5));
  }
  EXPECT_FALSE(segment_exists(stale));

  // Rank 0 leaving before everyone attached removes the name too.
  const std::string early = unique_job("early");
  { ShmTransport t0(opts(early, 0, 3)); }
  EXPECT_FALSE(segment_exists(early));
}

TEST(ShmTransport, MismatchedLayoutAndDuplicateRankAreRefused) {
  const std::string job = unique_job("mismatch");
  ShmTransport t0(opts(job, 0, 3, 4096));
  EXPECT_THROW(ShmTransport(opts(job, 1, 3, 8192)), CommError);
  EXPECT_THROW(ShmTransport(opts(job, 1, 4, 4096)), CommError);
  ShmTransport t1(opts(job, 1, 3, 4096));
  EXPECT_THROW(ShmTransport(opts(job, 1, 3, 4096)), CommError);
}

// The shared transport contract (transport_contract.h), ranks as threads, with
// rings smaller than the largest message.
contract::Factory shm_world(size_t ring_nbytes) {
  return [ring_nbytes](int n) {
    const std::string job = unique_job("contract");
    contract::World world;
    for (int r = 0; r < n; ++r) world.push_back(std::make_shared<ShmTransport>(opts(job, r, n, ring_nbytes)));
    return world;
  };
}

TEST(ShmTransportContract, SmallRings) {
  for (int n : {2, 3}) contract::check_all(shm_world(4096), n);
}

TEST(ShmTransportContract, DefaultRings) { contract::check_all(shm_world(1 << 20), 4); }

}  // namespace
}  // namespace loom::comm
