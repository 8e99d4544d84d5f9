// The shared-memory all-reduce (Algorithm::SharedMemory, "shm", on the lanes
// of a ShmTransport; Auto's choice for large messages on one host): exact
// results for every dtype, op and size the message algorithms are tested
// with, several rounds per call and uneven slices (small blocks), the bits of
// a rank-ordered fold, calls of any shape back to back, two channels at once,
// where it is offered and where Auto and Ring run over messages instead, and
// failures that end in an error, never a hang.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <functional>
#include <random>
#include <thread>
#include <vector>

#include "loom/comm/collectives/collectives.h"
#include "loom/comm/transport/inproc_transport.h"
#include "loom/comm/collectives/shm_allreduce.h"
#include "loom/comm/transport/shm_transport.h"
#include "loom/ops/creation.h"
#include "tests/comm/exact_values.h"
#include "tests/comm/zmq_test_worlds.h"

namespace loom::comm {
namespace {

using namespace std::chrono_literals;
using core::BFloat16;
using core::DType;
using core::Half;
using core::Tensor;

std::string unique_job(const char* what) {
  static std::atomic<int> counter{0};
  return format("test-ar-{}-{}-{}", what, ::getpid(), counter++);
}

ShmOptions opts(const std::string& job, int rank, int size, size_t block) {
  return {.job_id = job,
          .rank = rank,
          .size = size,
          .ring_nbytes = 64 << 10,
          .attach_timeout = 10s,
          .heartbeat_timeout = 2s,
          .linger = 2s,
          .allreduce_block_nbytes = block};
}

// Runs fn(communicator) on n ranks as threads, each over its own ShmTransport;
// rethrows the first error.
void run_shm_ranks(int n, size_t block, const std::function<void(Communicator&)>& fn,
                   const std::vector<int>& hosts = {}) {
  const std::string job = unique_job("w");
  std::vector<std::exception_ptr> errors(static_cast<size_t>(n));
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      try {
        Communicator c = make_communicator(std::make_shared<ShmTransport>(opts(job, r, n, block)), hosts);
        c.timeout = 20s;
        fn(c);
        barrier(c);  // nobody closes while a peer still waits on it
      } catch (...) {
        errors[static_cast<size_t>(r)] = std::current_exception();
      }
    });
  }
  for (auto& t : threads) t.join();
  for (auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }
}

using testing::exact_value;
using testing::expected_of;

shm::LaneAllreduce& lanes_of(Communicator& c) { return dynamic_cast<ShmTransport&>(*c.transport).lanes(); }

// Fills, all-reduces (by default the shm algorithm), checks every element.
void exact_case(Communicator& c, DType dtype, int64_t count, ReduceOp op, Algorithm algo = Algorithm::SharedMemory,
                bool deterministic = false) {
  core::visit_dtype(dtype, [&]<class T>() {
    if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double> || std::is_same_v<T, BFloat16> ||
                  std::is_same_v<T, Half> || std::is_same_v<T, int32_t> || std::is_same_v<T, int64_t>) {
      Tensor t = Tensor::empty({count}, dtype);
      T* p = t.data<T>();
      for (int64_t i = 0; i < count; ++i) p[i] = core::cast_value<T>(exact_value(c.rank, i));
      allreduce(c, t, {.op = op, .algorithm = algo, .deterministic = deterministic});
      int64_t bad = 0, first_bad = -1;
      for (int64_t i = 0; i < count; ++i) {
        if (core::cast_value<double>(p[i]) != core::cast_value<double>(expected_of<T>(op, c.size, i % 251))) {
          if (bad++ == 0) first_bad = i;
        }
      }
      EXPECT_EQ(bad, 0) << "size " << c.size << " rank " << c.rank << " " << dtype << " n=" << count << " op "
                        << name(op) << ": first mismatch at " << first_bad;
    }
  });
}

constexpr int64_t kBig = (1 << 20) + 3;

class ShmAllreduceMatrix : public ::testing::TestWithParam<int> {};

// Every dtype x op x count, with 4 KiB blocks (a 1M-element call takes
// hundreds of rounds; slices of 1000 elements over 3 or 7 ranks are uneven)
// and with the default 1 MiB blocks.
TEST_P(ShmAllreduceMatrix, ExactResults) {
  const int n = GetParam();
  for (size_t block : {size_t{4096}, size_t{1} << 20}) {
    run_shm_ranks(n, block, [&](Communicator& c) {
      for (int64_t count : {int64_t{0}, int64_t{1}, int64_t{7}, int64_t{1000}, kBig}) {
        for (DType dtype : {DType::F32, DType::F64, DType::F16, DType::BF16, DType::I32, DType::I64}) {
          for (ReduceOp op : {ReduceOp::Sum, ReduceOp::Avg, ReduceOp::Max, ReduceOp::Min}) {
            if (count == kBig && op != ReduceOp::Sum) continue;
            exact_case(c, dtype, count, op);
          }
        }
      }
    });
  }
}

// Random data against a double-precision sum; f32 results equal on every rank.
TEST_P(ShmAllreduceMatrix, RandomDataWithinToleranceAndSameEverywhere) {
  const int n = GetParam();
  const int64_t count = 300001;
  std::vector<std::vector<float>> inputs(static_cast<size_t>(n));
  std::vector<double> sum(static_cast<size_t>(count), 0.0);
  for (int r = 0; r < n; ++r) {
    std::mt19937_64 rng(static_cast<uint64_t>(r * 7919 + 5));
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    for (int64_t i = 0; i < count; ++i) {
      inputs[static_cast<size_t>(r)].push_back(u(rng));
      sum[static_cast<size_t>(i)] += inputs[static_cast<size_t>(r)].back();
    }
  }
  std::vector<std::vector<float>> results(static_cast<size_t>(n));
  run_shm_ranks(n, size_t{64} << 10, [&](Communicator& c) {
    Tensor t = Tensor::from_vector<float>(inputs[static_cast<size_t>(c.rank)], {count});
    ASSERT_EQ(resolve_algorithm(c, t), Algorithm::SharedMemory);  // Auto, large message, one host
    const uint64_t rounds = lanes_of(c).rounds(0);
    allreduce(c, t);
    EXPECT_EQ(lanes_of(c).rounds(0), rounds + (t.nbytes() - 1) / (size_t{64} << 10) + 1);
    double worst = 0;
    for (int64_t i = 0; i < count; ++i) {
      worst = std::max(worst, std::abs(t.data<float>()[i] - sum[static_cast<size_t>(i)]));
    }
    EXPECT_LE(worst, 1e-5) << "rank " << c.rank;
    results[static_cast<size_t>(c.rank)].assign(t.data<float>(), t.data<float>() + count);
  });
  for (int r = 1; r < n; ++r) EXPECT_EQ(results[static_cast<size_t>(r)], results[0]) << "rank " << r;
}

INSTANTIATE_TEST_SUITE_P(Sizes, ShmAllreduceMatrix, ::testing::Values(2, 3, 4, 7, 8),
                         [](const auto& info) { return "size" + std::to_string(info.param); });

// The bits are those of the left fold x_0 + x_1 + ... + x_{p-1} in rank
// order (in f32 for bf16, rounded once), which is also what deterministic
// mode computes over messages: the lanes' schedule changes where slices are
// reduced, never the order of the operands.
TEST(ShmAllreduce, BitsOfTheRankOrderedFold) {
  const int n = 5;
  const int64_t count = 200003;  // several 64 KiB blocks, uneven slices
  std::vector<std::vector<float>> inputs(static_cast<size_t>(n));
  for (int r = 0; r < n; ++r) {
    std::mt19937_64 rng(static_cast<uint64_t>(r * 31 + 7));
    std::uniform_real_distribution<float> u(-1e3f, 1e3f);
    for (int64_t i = 0; i < count; ++i) inputs[static_cast<size_t>(r)].push_back(u(rng) * (i % 3 == 0 ? 1e-4f : 1.0f));
  }
  std::vector<float> fold_f32(static_cast<size_t>(count));
  std::vector<BFloat16> fold_bf16(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) {
    float acc = inputs[0][static_cast<size_t>(i)], acc16 = static_cast<float>(BFloat16(acc));
    for (int r = 1; r < n; ++r) {
      acc += inputs[static_cast<size_t>(r)][static_cast<size_t>(i)];
      acc16 += static_cast<float>(BFloat16(inputs[static_cast<size_t>(r)][static_cast<size_t>(i)]));
    }
    fold_f32[static_cast<size_t>(i)] = acc;
    fold_bf16[static_cast<size_t>(i)] = BFloat16(acc16);
  }
  run_shm_ranks(n, size_t{64} << 10, [&](Communicator& c) {
    const std::vector<float>& mine = inputs[static_cast<size_t>(c.rank)];
    for (bool deterministic : {false, true}) {
      Tensor t = Tensor::from_vector<float>(mine, {count});
      allreduce(c, t, {.algorithm = Algorithm::SharedMemory, .deterministic = deterministic});
      EXPECT_EQ(std::memcmp(t.data_ptr(), fold_f32.data(), t.nbytes()), 0) << "f32, deterministic " << deterministic;
      Tensor h = Tensor::empty({count}, DType::BF16);
      for (int64_t i = 0; i < count; ++i) h.data<BFloat16>()[i] = BFloat16(mine[static_cast<size_t>(i)]);
      allreduce(c, h, {.algorithm = Algorithm::SharedMemory, .deterministic = deterministic});
      EXPECT_EQ(std::memcmp(h.data_ptr(), fold_bf16.data(), h.nbytes()), 0) << "bf16, deterministic " << deterministic;
    }
  });
}

// Where the lanes are: streams (channels) 0 and 1 of a world of 2 to 16
// ranks with blocks. There Auto picks shm for large messages; elsewhere it
// picks the ring, and an explicit shm is a ConfigError saying why.
TEST(ShmAllreduce, OfferedOnlyWhereItHasLanes) {
  auto offered = [](int n, size_t block, int channel) {
    std::atomic<int> yes{0};
    const std::string job = unique_job("offer");
    std::vector<std::thread> threads;
    for (int r = 0; r < n; ++r) {
      threads.emplace_back([&, r] {
        auto o = opts(job, r, n, block);
        o.ring_nbytes = 4096;
        Communicator c = make_communicator(std::make_shared<ShmTransport>(o));
        c.channel = static_cast<uint8_t>(channel);
        c.timeout = 10s;
        Tensor x = ops::ones({1 << 18});  // 1 MiB: Auto's bandwidth-bound case
        const bool here = shared_memory_unavailable(c).empty();
        EXPECT_EQ(shared_memory_available(c), here);
        EXPECT_EQ(resolve_algorithm(c, x), n == 1 ? Algorithm::Ring : here ? Algorithm::SharedMemory : Algorithm::Ring);
        if (n > 1 && here) {
          allreduce(c, x, {.algorithm = Algorithm::SharedMemory});
          EXPECT_EQ(x.data<float>()[12345], static_cast<float>(n));
          ++yes;
        } else if (n > 1) {
          try {
            allreduce(c, x, {.algorithm = Algorithm::SharedMemory});
            ADD_FAILURE() << "shm ran without a lane";
          } catch (const ConfigError& e) {
            EXPECT_NE(std::string(e.what()).find("algorithm 'shm' cannot run here"), std::string::npos) << e.what();
          }
        }
        barrier(c);  // stay until every rank is done with the lane
      });
    }
    for (auto& th : threads) th.join();
    return yes.load();
  };
  EXPECT_EQ(offered(2, 4096, 0), 2);
  EXPECT_EQ(offered(3, 4096, 1), 3);
  EXPECT_EQ(offered(16, 4096, 0), 16);
  EXPECT_EQ(offered(2, 4096, 2), 0);   // no lane for a third channel
  EXPECT_EQ(offered(2, 0, 0), 0);      // lanes switched off
  EXPECT_EQ(offered(17, 4096, 0), 0);  // too many ranks
  EXPECT_EQ(offered(1, 4096, 0), 0);   // nothing to reduce (and nothing refused)
}

// Auto picks by size (tree, halving-doubling, then shm), and the message
// algorithms really run over messages beside the lanes: Ring (`--algo ring`),
// halving-doubling, tree, hierarchical, deterministic mode and channels
// without a lane leave the lanes untouched and are right.
TEST(ShmAllreduce, MessageAlgorithmsLeaveTheLanesAlone) {
  run_shm_ranks(4, 4096, [&](Communicator& c) {
    shm::LaneAllreduce& lanes = lanes_of(c);
    EXPECT_EQ(choose_algorithm(c, kTreeMaxBytes), Algorithm::Tree);
    EXPECT_EQ(choose_algorithm(c, kHalvingDoublingMaxBytes), Algorithm::HalvingDoubling);
    EXPECT_EQ(choose_algorithm(c, kHalvingDoublingMaxBytes + 1), Algorithm::SharedMemory);
    const uint64_t before = lanes.rounds(0);
    Communicator other = c;
    other.channel = 5;
    EXPECT_EQ(choose_algorithm(other, 64 << 20), Algorithm::Ring);
    exact_case(other, DType::F32, 200000, ReduceOp::Sum, Algorithm::Auto);
    exact_case(c, DType::F32, 300000, ReduceOp::Sum, Algorithm::Ring);
    exact_case(c, DType::F16, 300000, ReduceOp::Avg, Algorithm::Ring);
    exact_case(c, DType::F32, 100000, ReduceOp::Max, Algorithm::HalvingDoubling);
    exact_case(c, DType::BF16, 5000, ReduceOp::Sum, Algorithm::Tree);
    Communicator two_hosts = c;
    two_hosts.host_of_rank = {0, 0, 1, 1};
    EXPECT_EQ(choose_algorithm(two_hosts, 64 << 20), Algorithm::Hierarchical);
    EXPECT_NE(shared_memory_unavailable(two_hosts).find("2 hosts"), std::string::npos);
    exact_case(two_hosts, DType::I64, 70000, ReduceOp::Min, Algorithm::Hierarchical);
    exact_case(c, DType::F64, 70000, ReduceOp::Sum, Algorithm::Ring, /*deterministic=*/true);
    exact_case(c, DType::F64, 70000, ReduceOp::Sum, Algorithm::Auto, /*deterministic=*/true);
    EXPECT_EQ(lanes.rounds(0), before) << "a message algorithm went through the lane";
    exact_case(c, DType::F32, 200000, ReduceOp::Sum, Algorithm::Auto);  // and the lane again
    EXPECT_EQ(lanes.rounds(0), before + 196);  // 800000 bytes in 4 KiB blocks
  });
}

// Explicit shm on transports without lanes (ZeroMQ, in-process): ConfigError
// naming the transport, before anything is sent; Auto takes the ring there.
TEST(ShmAllreduce, RefusedOnOtherTransports) {
  const contract::World zmq = testing_worlds::make_zmq(testing_worlds::tcp_endpoints(2), testing_worlds::curve());
  InProcHub hub(2);
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      for (Communicator c : {make_communicator(zmq[static_cast<size_t>(r)]), make_communicator(hub.transport(r))}) {
        const std::string kind = c.transport->kind();
        Tensor x = ops::ones({1 << 20});
        EXPECT_EQ(resolve_algorithm(c, x), Algorithm::Ring) << kind;
        EXPECT_FALSE(shared_memory_available(c)) << kind;
        try {
          allreduce(c, x, {.algorithm = Algorithm::SharedMemory, .timeout = 5s});
          ADD_FAILURE() << "shm ran on " << kind;
        } catch (const ConfigError& e) {
          const std::string what = e.what();
          EXPECT_NE(what.find("algorithm 'shm' cannot run here"), std::string::npos) << what;
          EXPECT_NE(what.find("transport is '" + kind + "'"), std::string::npos) << what;
        }
        allreduce(c, x, {.timeout = 10s});  // the ranks are still in step
        EXPECT_EQ(x.data<float>()[77], 2.0f) << kind;
      }
    });
  }
  for (auto& t : threads) t.join();
}

// Calls of every size, dtype and op back to back, between other collectives,
// with ranks out of step: the round counter carries over from call to call.
TEST(ShmAllreduce, ConsecutiveCallsOfAnyShape) {
  run_shm_ranks(5, 4096, [&](Communicator& c) {
    std::mt19937 rng(static_cast<uint32_t>(c.rank));
    for (int iter = 0; iter < 60; ++iter) {
      if (rng() % 4 == 0) std::this_thread::sleep_for(std::chrono::microseconds(rng() % 2000));
      const int64_t count = 1 + (iter * 3701) % 20000;
      const DType dtype = iter % 3 == 0 ? DType::F32 : iter % 3 == 1 ? DType::I64 : DType::F16;
      exact_case(c, dtype, count, static_cast<ReduceOp>(iter % 4));
      if (iter % 7 == 0) barrier(c);
    }
  });
}

// Two communicators (channels 0 and 1, as the trainer and its gradient
// thread) all-reduce at the same time over one transport: two lanes.
TEST(ShmAllreduce, TwoChannelsAtOnce) {
  run_shm_ranks(3, 8192, [&](Communicator& c) {
    Communicator grads = c;
    grads.channel = 1;
    std::exception_ptr err;
    std::thread other([&] {
      try {
        for (int i = 0; i < 20; ++i) exact_case(grads, DType::F32, 50000 + i, ReduceOp::Sum);
      } catch (...) {
        err = std::current_exception();
      }
    });
    for (int i = 0; i < 20; ++i) exact_case(c, DType::F64, 30000 + i, ReduceOp::Max);
    other.join();
    if (err) std::rethrow_exception(err);
  });
}

// Ranks that disagree about the buffer (numel, dtype or op) get CommError, as
// the message algorithms' size check gives; the lane is then out of use.
TEST(ShmAllreduce, RanksThatDisagreeGetCommError) {
  for (int variant = 0; variant < 3; ++variant) {
    std::atomic<int> errors{0};
    run_shm_ranks(3, 4096, [&](Communicator& c) {
      const bool odd = c.rank == 1;
      Tensor t = Tensor::empty({variant == 0 && odd ? 5000 : 4000}, variant == 1 && odd ? DType::I32 : DType::F32);
      std::memset(t.data_ptr(), 0, t.nbytes());
      const ReduceOp op = variant == 2 && odd ? ReduceOp::Max : ReduceOp::Sum;
      try {
        allreduce(c, t, {.op = op, .algorithm = Algorithm::SharedMemory, .timeout = 5s});
        ADD_FAILURE() << "rank " << c.rank << " variant " << variant << " returned";
      } catch (const CommError& e) {
        ++errors;
        EXPECT_NE(std::string(e.what()).find("but rank"), std::string::npos) << e.what();
      }
      EXPECT_TRUE(lanes_of(c).broken(0));
      EXPECT_FALSE(shared_memory_available(c));
      Tensor x = ops::ones({1 << 20});
      EXPECT_EQ(resolve_algorithm(c, x), Algorithm::Ring);  // Auto now goes over messages
      EXPECT_THROW(allreduce(c, x, {.algorithm = Algorithm::SharedMemory, .timeout = 1s}), CommError);
    });
    EXPECT_EQ(errors.load(), 3) << "variant " << variant;
  }
}

TEST(ShmAllreduce, BadBlockSizesAreRefused) {
  EXPECT_THROW(ShmTransport(opts(unique_job("bad"), 0, 2, 100)), ValueError);
  const std::string job = unique_job("mismatch");
  ShmTransport t0(opts(job, 0, 2, 4096));
  EXPECT_THROW(ShmTransport(opts(job, 1, 2, 8192)), CommError);
}

// One rank never calls: the others get TimeoutError at the deadline, and the
// lane is then out of use (Auto then runs the ring over messages, right).
TEST(ShmAllreduce, MissingRankTimesOutThenMessagesTakeOver) {
  const int n = 3;
  const std::string job = unique_job("timeout");
  std::vector<std::shared_ptr<ShmTransport>> world;
  for (int r = 0; r < n; ++r) world.push_back(std::make_shared<ShmTransport>(opts(job, r, n, 4096)));
  std::atomic<int> timeouts{0};
  std::vector<std::thread> threads;
  for (int r = 0; r + 1 < n; ++r) {
    threads.emplace_back([&, r] {
      std::vector<float> x(100000, 1.0f);
      const auto start = Clock::now();
      try {
        world[static_cast<size_t>(r)]->lanes().run({.data = reinterpret_cast<std::byte*>(x.data()), .numel = x.size()},
                                                   Deadline::in(200ms));
        ADD_FAILURE() << "returned without rank " << n - 1;
      } catch (const TimeoutError& e) {
        ++timeouts;
        EXPECT_NE(std::string(e.what()).find("rank 2"), std::string::npos) << e.what();
      }
      EXPECT_GE(Clock::now() - start, 190ms);
      EXPECT_LT(Clock::now() - start, 2s);
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(timeouts.load(), n - 1);
  std::vector<float> x(10, 1.0f);
  EXPECT_TRUE(world[2]->lanes().broken(0));
  EXPECT_THROW(
      world[2]->lanes().run({.data = reinterpret_cast<std::byte*>(x.data()), .numel = x.size()}, Deadline::in(1s)),
      CommError);
  threads.clear();
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      try {
        Communicator c = make_communicator(world[static_cast<size_t>(r)]);
        c.next_sequence = 100;  // a fresh start, as after rebuilding the communicator
        Tensor big = ops::ones({200000});  // 800 KB: the bandwidth-bound case
        EXPECT_EQ(resolve_algorithm(c, big), Algorithm::Ring);
        exact_case(c, DType::F32, 200000, ReduceOp::Sum, Algorithm::Auto);
        barrier(c);
      } catch (const std::exception& e) {
        ADD_FAILURE() << "rank " << r << ": " << e.what();
      }
    });
  }
  for (auto& t : threads) t.join();
}

// A peer declared lost (fail_peer) while the others wait for it: PeerLostError
// at once, with fail_peer's reason.
TEST(ShmAllreduce, LostPeerGivesPeerLostError) {
  const int n = 3;
  const std::string job = unique_job("lost");
  std::vector<std::shared_ptr<ShmTransport>> world;
  for (int r = 0; r < n; ++r) world.push_back(std::make_shared<ShmTransport>(opts(job, r, n, 4096)));
  std::atomic<int> lost{0};
  std::vector<std::thread> threads;
  for (int r = 0; r + 1 < n; ++r) {
    threads.emplace_back([&, r] {
      std::vector<float> x(100000, 1.0f);
      const auto start = Clock::now();
      try {
        world[static_cast<size_t>(r)]->lanes().run({.data = reinterpret_cast<std::byte*>(x.data()), .numel = x.size()},
                                                   Deadline::in(10s));
        ADD_FAILURE() << "returned without rank " << n - 1;
      } catch (const PeerLostError& e) {
        ++lost;
        EXPECT_NE(std::string(e.what()).find("killed by the test"), std::string::npos) << e.what();
      }
      EXPECT_LT(Clock::now() - start, 1s);
    });
  }
  std::this_thread::sleep_for(50ms);
  for (int r = 0; r + 1 < n; ++r) world[static_cast<size_t>(r)]->fail_peer(n - 1, "killed by the test");
  for (auto& t : threads) t.join();
  EXPECT_EQ(lost.load(), n - 1);
}

// A rank killed (SIGKILL) in the middle of a call: the survivor gets
// PeerLostError within the heartbeat timeout, not a hang.
TEST(ShmAllreduce, KilledProcessIsLost) {
  const std::string job = unique_job("kill");
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  std::fflush(nullptr);
  pid_t child = ::fork();
  if (child == 0) {
    ::alarm(30);
    ShmTransport t(opts(job, 1, 2, 4096));
    char c = 1;
    if (::write(ready[1], &c, 1) != 1) ::_exit(1);
    ::pause();
    ::_exit(0);
  }
  ShmTransport t0(opts(job, 0, 2, 4096));
  char c = 0;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  ::kill(child, SIGKILL);  // not reaped yet: a zombie, so only the heartbeat tells
  std::vector<float> x(100000, 1.0f);
  const auto start = Clock::now();
  EXPECT_THROW(
      t0.lanes().run({.data = reinterpret_cast<std::byte*>(x.data()), .numel = x.size()}, Deadline::in(10s)),
      PeerLostError);
  EXPECT_LT(Clock::now() - start, 2s + 1500ms);  // heartbeat_timeout = 2 s
  int status = 0;
  ::waitpid(child, &status, 0);
  ::close(ready[0]);
  ::close(ready[1]);
}

// The kernel: one pass over any number of sources, rounded once, NaN wins.
TEST(ShmAllreduce, ReduceManyFoldsLeftToRightRoundingOnce) {
  // In bf16 (8 bits of mantissa) 256 + 1 + 1 is 258 when rounded once, 256
  // when rounded after each step.
  const BFloat16 a(256.0f), b(1.0f), c(1.0f);
  const void* srcs[] = {&a, &b, &c};
  BFloat16 out{};
  reduce_many(DType::BF16, ReduceOp::Sum, srcs, &out, 1);
  EXPECT_EQ(static_cast<float>(out), 258.0f);
  std::vector<float> x(5000, 1.0f), y(5000, 2.0f), z(5000, 3.0f), dst(5000);
  y[4321] = NAN;
  const void* fsrcs[] = {x.data(), y.data(), z.data()};
  reduce_many(DType::F32, ReduceOp::Max, fsrcs, dst.data(), dst.size());
  EXPECT_EQ(dst[0], 3.0f);
  EXPECT_TRUE(std::isnan(dst[4321]));
  reduce_many(DType::F32, ReduceOp::Min, std::span<const void* const>(fsrcs, 1), dst.data(), dst.size());
  EXPECT_EQ(dst[4999], 1.0f);
}

}  // namespace
}  // namespace loom::comm
