// Allreduce: every algorithm x world sizes 1..8 x element counts 0, 1, 7,
// 1000, 1M+3 x dtypes f32, f64, bf16, i64, ranks as threads over InProcHub.
// Exact checks use small integers (every partial sum is exact even in bf16);
// random data is checked with a tolerance, and deterministic mode bitwise
// against a left fold computed here.
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <span>
#include <chrono>
#include <cmath>
#include <cstring>
#include <exception>
#include <random>
#include <thread>
#include <vector>

#include "loom/comm/collectives/collectives.h"
#include "loom/comm/transport/inproc_transport.h"
#include "exact_values.h"
#include "run_ranks.h"

namespace loom::comm {
namespace {

using namespace std::chrono_literals;
using core::BFloat16;
using core::DType;
using core::Tensor;

using testing::run_ranks;

// Two hosts layouts for the hierarchical cases: ranks dealt round-robin over
// ceil(n/2) hosts (local ranks not contiguous), or in blocks of three.
std::vector<int> interleaved_hosts(int n) {
  std::vector<int> h(static_cast<size_t>(n));
  const int hosts = (n + 1) / 2;
  for (int r = 0; r < n; ++r) h[static_cast<size_t>(r)] = r % hosts;
  return h;
}
std::vector<int> block_hosts(int n) {
  std::vector<int> h(static_cast<size_t>(n));
  for (int r = 0; r < n; ++r) h[static_cast<size_t>(r)] = 10 + r / 3;  // host ids need not start at 0
  return h;
}

struct Setting {
  Algorithm algorithm;
  int layout;  // 0 one host, 1 interleaved, 2 blocks of three
};
std::vector<int> hosts_for(const Setting& s, int n) {
  return s.layout == 0 ? std::vector<int>{} : s.layout == 1 ? interleaved_hosts(n) : block_hosts(n);
}
const Setting kSettings[] = {
    {Algorithm::Ring, 0}, {Algorithm::HalvingDoubling, 0}, {Algorithm::Tree, 0},
    {Algorithm::Hierarchical, 1}, {Algorithm::Hierarchical, 2}, {Algorithm::Auto, 0}, {Algorithm::Auto, 1},
};
std::string setting_name(const Setting& s) {
  return std::string(name(s.algorithm)) + (s.layout == 0 ? "" : s.layout == 1 ? "_interleaved" : "_blocks");
}

constexpr int64_t kBig = (1 << 20) + 3;
constexpr int64_t kCounts[] = {0, 1, 7, 1000, kBig};
constexpr DType kDTypes[] = {DType::F32, DType::F64, DType::BF16, DType::I64};

using testing::exact_value;
using testing::expected_of;


// One rank's part of an exact check: fill, allreduce, compare every element.
void exact_case(Communicator& c, const Setting& s, DType dtype, int64_t count, ReduceOp op, size_t chunk_bytes,
                bool deterministic = false) {
  core::visit_dtype(dtype, [&]<class T>() {
    if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double> || std::is_same_v<T, BFloat16> ||
                  std::is_same_v<T, int64_t> || std::is_same_v<T, int32_t> || std::is_same_v<T, core::Half>) {
      Tensor t = Tensor::empty({count}, dtype);
      T* p = t.data<T>();
      for (int64_t i = 0; i < count; ++i) p[i] = core::cast_value<T>(exact_value(c.rank, i));
      allreduce(c, t, {.op = op, .algorithm = s.algorithm, .chunk_bytes = chunk_bytes, .deterministic = deterministic});
      std::vector<T> table(251);
      for (int64_t k = 0; k < std::min<int64_t>(count, 251); ++k) table[static_cast<size_t>(k)] = expected_of<T>(op, c.size, k);
      int64_t bad = 0, first_bad = -1;
      for (int64_t i = 0; i < count; ++i) {
        if (core::cast_value<double>(p[i]) != core::cast_value<double>(table[static_cast<size_t>(i % 251)])) {
          if (bad++ == 0) first_bad = i;
        }
      }
      EXPECT_EQ(bad, 0) << setting_name(s) << " size " << c.size << " rank " << c.rank << " " << dtype << " n="
                        << count << " op " << name(op) << ": first mismatch at " << first_bad << ": got "
                        << (first_bad >= 0 ? core::cast_value<double>(p[first_bad]) : 0.0) << " expected "
                        << (first_bad >= 0 ? core::cast_value<double>(table[static_cast<size_t>(first_bad % 251)]) : 0.0);
    }
  });
}

class AllreduceMatrix : public ::testing::TestWithParam<std::tuple<int, int>> {};

// Every setting x world size x count x dtype, Sum; Avg, Max and Min too
// except at 1M+3 elements, where Sum alone keeps the suite fast (the other
// ops go through the same code with a different kernel).
TEST_P(AllreduceMatrix, ExactResults) {
  const Setting s = kSettings[std::get<0>(GetParam())];
  const int n = std::get<1>(GetParam());
  for (int64_t count : kCounts) {
    for (DType dtype : kDTypes) {
      run_ranks(n, hosts_for(s, n), [&](Communicator& c) {
        for (ReduceOp op : {ReduceOp::Sum, ReduceOp::Avg, ReduceOp::Max, ReduceOp::Min}) {
          if (count == kBig && op != ReduceOp::Sum) continue;
          exact_case(c, s, dtype, count, op, kDefaultChunkBytes);
        }
      });
    }
  }
}

// Small pipeline segments: many segments per chunk, segment counts that do
// not divide the chunks, and chunk_bytes = 0 (no splitting).
TEST_P(AllreduceMatrix, PipelineSegments) {
  const Setting s = kSettings[std::get<0>(GetParam())];
  const int n = std::get<1>(GetParam());
  for (size_t chunk_bytes : {size_t{0}, size_t{1}, size_t{24}, size_t{1000}}) {
    for (int64_t count : {7, 1000, 4099}) {
      run_ranks(n, hosts_for(s, n), [&](Communicator& c) {
        exact_case(c, s, DType::F32, count, ReduceOp::Sum, chunk_bytes);
        exact_case(c, s, DType::BF16, count, ReduceOp::Max, chunk_bytes);
      });
    }
  }
}

// Random data against a double-precision sum, with a tolerance.
TEST_P(AllreduceMatrix, RandomDataWithinTolerance) {
  const Setting s = kSettings[std::get<0>(GetParam())];
  const int n = std::get<1>(GetParam());
  for (int64_t count : {1000, 65537}) {
    std::vector<std::vector<double>> inputs(static_cast<size_t>(n));
    std::vector<double> sum(static_cast<size_t>(count), 0.0);
    for (int r = 0; r < n; ++r) {
      std::mt19937_64 rng(static_cast<uint64_t>(r * 7919 + count));
      std::uniform_real_distribution<double> u(-1.0, 1.0);
      for (int64_t i = 0; i < count; ++i) {
        inputs[static_cast<size_t>(r)].push_back(u(rng));
        sum[static_cast<size_t>(i)] += inputs[static_cast<size_t>(r)].back();
      }
    }
    for (DType dtype : {DType::F32, DType::F64, DType::BF16}) {
      const double tol = dtype == DType::F64 ? 1e-12 : dtype == DType::F32 ? 1e-5 : 0.02 * n;
      run_ranks(n, hosts_for(s, n), [&](Communicator& c) {
        core::visit_dtype(dtype, [&]<class T>() {
          Tensor t = Tensor::empty({count}, dtype);
          for (int64_t i = 0; i < count; ++i) {
            t.data<T>()[i] = core::cast_value<T>(inputs[static_cast<size_t>(c.rank)][static_cast<size_t>(i)]);
          }
          allreduce(c, t, {.algorithm = s.algorithm});
          double worst = 0;
          for (int64_t i = 0; i < count; ++i) {
            // bf16 inputs are themselves rounded: compare against the rounded inputs' sum scale.
            worst = std::max(worst, std::abs(core::cast_value<double>(t.data<T>()[i]) - sum[static_cast<size_t>(i)]));
          }
          EXPECT_LE(worst, tol) << setting_name(s) << " size " << n << " " << dtype << " count " << count;
        });
      });
    }
  }
}

// Deterministic mode: bitwise equal to the left fold x_0 + x_1 + ... in rank
// order (f32 accumulator for bf16, rounded once), for every setting.
TEST_P(AllreduceMatrix, DeterministicIsBitwiseLeftFold) {
  const Setting s = kSettings[std::get<0>(GetParam())];
  const int n = std::get<1>(GetParam());
  for (int64_t count : {0, 1, 7, 1000, 70001}) {
    for (DType dtype : {DType::F32, DType::F64, DType::BF16}) {
      core::visit_dtype(dtype, [&]<class T>() {
        if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double> || std::is_same_v<T, BFloat16>) {
          using C = testing::compute_t<T>;
          std::vector<std::vector<T>> inputs(static_cast<size_t>(n));
          for (int r = 0; r < n; ++r) {
            std::mt19937 rng(static_cast<uint32_t>(r * 31 + count));
            // Values of mixed magnitude, so the summation order matters.
            std::uniform_real_distribution<double> u(-1.0, 1.0);
            for (int64_t i = 0; i < count; ++i) {
              inputs[static_cast<size_t>(r)].push_back(core::cast_value<T>(u(rng) * std::pow(10.0, (i + r) % 7 - 3)));
            }
          }
          for (ReduceOp op : {ReduceOp::Sum, ReduceOp::Avg}) {
            std::vector<T> fold(static_cast<size_t>(count));
            for (int64_t i = 0; i < count; ++i) {
              C acc = static_cast<C>(inputs[0][static_cast<size_t>(i)]);
              for (int r = 1; r < n; ++r) acc = acc + static_cast<C>(inputs[static_cast<size_t>(r)][static_cast<size_t>(i)]);
              if (op == ReduceOp::Avg) acc = acc / static_cast<C>(n);
              fold[static_cast<size_t>(i)] = static_cast<T>(acc);
            }
            run_ranks(n, hosts_for(s, n), [&](Communicator& c) {
              Tensor t = Tensor::from_vector<T>(inputs[static_cast<size_t>(c.rank)], {count});
              allreduce(c, t, {.op = op, .algorithm = s.algorithm, .deterministic = true});
              EXPECT_EQ(std::memcmp(t.data_ptr(), fold.data(), t.nbytes()), 0)
                  << setting_name(s) << " size " << n << " rank " << c.rank << " " << dtype << " count " << count
                  << " op " << name(op);
            });
          }
        }
      });
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Settings, AllreduceMatrix,
                         ::testing::Combine(::testing::Range(0, static_cast<int>(std::size(kSettings))),
                                            ::testing::Range(1, 9)),
                         [](const auto& info) {
                           return setting_name(kSettings[std::get<0>(info.param)]) + "_size" +
                                  std::to_string(std::get<1>(info.param));
                         });

TEST(Allreduce, OtherDtypesF16AndI32) {
  for (int n : {1, 3, 4}) {
    for (Algorithm a : {Algorithm::Ring, Algorithm::HalvingDoubling, Algorithm::Tree}) {
      run_ranks(n, {}, [&](Communicator& c) {
        for (ReduceOp op : {ReduceOp::Sum, ReduceOp::Avg, ReduceOp::Max, ReduceOp::Min}) {
          exact_case(c, {a, 0}, DType::F16, 1000, op, 64);
          exact_case(c, {a, 0}, DType::I32, 1000, op, 64);
        }
      });
    }
  }
}

TEST(Allreduce, IntegerAvgTruncatesTowardsZero) {
  run_ranks(3, {}, [](Communicator& c) {
    Tensor t = Tensor::from_vector<int64_t>({c.rank == 0 ? 2 : 0, c.rank == 0 ? -2 : 0}, {2});
    allreduce(c, t, {.op = ReduceOp::Avg});
    EXPECT_EQ(t.data<int64_t>()[0], 0);
    EXPECT_EQ(t.data<int64_t>()[1], 0);
  });
}

TEST(Allreduce, MaxAndMinPropagateNaN) {
  for (Algorithm a : {Algorithm::Ring, Algorithm::Tree, Algorithm::HalvingDoubling}) {
    run_ranks(3, {}, [&](Communicator& c) {
      for (ReduceOp op : {ReduceOp::Max, ReduceOp::Min}) {
        Tensor t = Tensor::from_vector<float>({c.rank == 1 ? NAN : 1.0f, 2.0f}, {2});
        allreduce(c, t, {.op = op, .algorithm = a});
        EXPECT_TRUE(std::isnan(t.data<float>()[0])) << name(a);
        EXPECT_EQ(t.data<float>()[1], 2.0f);
      }
    });
  }
}

// Different algorithms, ops and sizes back to back, with ranks out of step:
// every call has its own tags, so nothing mixes.
TEST(Allreduce, ConsecutiveCallsDoNotMix) {
  const int n = 5;
  run_ranks(n, interleaved_hosts(n), [&](Communicator& c) {
    std::mt19937 rng(static_cast<uint32_t>(c.rank));
    for (int iter = 0; iter < 40; ++iter) {
      if (rng() % 4 == 0) std::this_thread::sleep_for(std::chrono::microseconds(rng() % 2000));
      const Algorithm a = static_cast<Algorithm>(iter % 5);
      const int64_t count = 1 + (iter * 37) % 300;
      exact_case(c, {a, 1}, iter % 2 ? DType::F32 : DType::I64, count, static_cast<ReduceOp>(iter % 4), 16);
    }
  });
}

TEST(Allreduce, AutoChoosesBySizeAndTopology) {
  InProcHub hub(8);
  Communicator flat = make_communicator(hub.transport(0));
  EXPECT_EQ(choose_algorithm(flat, 0), Algorithm::Tree);
  EXPECT_EQ(choose_algorithm(flat, kTreeMaxBytes), Algorithm::Tree);
  EXPECT_EQ(choose_algorithm(flat, kTreeMaxBytes + 1), Algorithm::HalvingDoubling);
  EXPECT_EQ(choose_algorithm(flat, kHalvingDoublingMaxBytes + 1), Algorithm::Ring);
  Communicator hosts = make_communicator(hub.transport(0), {0, 0, 0, 0, 1, 1, 1, 1});
  EXPECT_EQ(choose_algorithm(hosts, 16), Algorithm::Hierarchical);
  EXPECT_EQ(choose_algorithm(hosts, 64 << 20), Algorithm::Hierarchical);
  Communicator one_per_host = make_communicator(hub.transport(0), {0, 1, 2, 3, 4, 5, 6, 7});
  EXPECT_EQ(choose_algorithm(one_per_host, 64 << 20), Algorithm::Ring);
  Tensor t = Tensor::empty({1 << 20});
  EXPECT_EQ(resolve_algorithm(flat, t), Algorithm::Ring);
  EXPECT_EQ(resolve_algorithm(flat, t, {.algorithm = Algorithm::Tree}), Algorithm::Tree);
  InProcHub single(1);
  EXPECT_EQ(choose_algorithm(make_communicator(single.transport(0)), 1 << 30), Algorithm::Ring);
  // The shared-memory algorithm needs a ShmTransport (shm_allreduce_test.cc):
  // never chosen here, and refused when asked for, before anything is sent.
  EXPECT_FALSE(shared_memory_available(flat));
  EXPECT_NE(shared_memory_unavailable(flat).find("transport is 'inproc'"), std::string::npos)
      << shared_memory_unavailable(flat);
  EXPECT_THROW(allreduce(flat, t, {.algorithm = Algorithm::SharedMemory}), ConfigError);
  EXPECT_EQ(flat.next_sequence, 0u);
}

TEST(Allreduce, AlgorithmNames) {
  for (Algorithm a : {Algorithm::Auto, Algorithm::Ring, Algorithm::HalvingDoubling, Algorithm::Tree,
                      Algorithm::Hierarchical, Algorithm::SharedMemory}) {
    EXPECT_EQ(algorithm_from_name(name(a)), a);
  }
  EXPECT_EQ(name(Algorithm::SharedMemory), "shm");
  EXPECT_EQ(algorithm_from_name("hd"), Algorithm::HalvingDoubling);
  EXPECT_THROW(algorithm_from_name("butterfly"), ValueError);
  EXPECT_EQ(reduce_op_from_name("mean"), ReduceOp::Avg);
  EXPECT_THROW(reduce_op_from_name("prod"), ValueError);
}

TEST(Allreduce, RejectsBadTensors) {
  InProcHub hub(1);
  Communicator c = make_communicator(hub.transport(0));
  Tensor base = Tensor::empty({2, 3});
  Tensor transposed = base.as_strided({3, 2}, {1, 3}, 0);
  EXPECT_THROW(allreduce(c, transposed), ValueError);
  Tensor bytes = Tensor::empty({4}, DType::U8);
  EXPECT_THROW(allreduce(c, bytes), TypeError);
  Tensor undefined;
  EXPECT_THROW(allreduce(c, undefined), ValueError);
  EXPECT_THROW(allreduce(c, base, {.timeout = std::chrono::milliseconds(-1)}), ValueError);
}

// ---- flow control ----

// Ranks as threads over InProcHub, with flow control like a real transport's:
// send() waits (up to its deadline) while more than `limit` bytes it sent to
// that peer have not been received yet; one message may always go whole.
class FlowControlledWorld {
 public:
  FlowControlledWorld(int n, size_t limit) : hub_(n), n_(n), limit_(limit), pending_(static_cast<size_t>(n * n), 0) {}
  std::shared_ptr<Transport> transport(int rank) {
    return std::make_shared<Endpoint>(this, hub_.transport(rank), rank);
  }

 private:
  class Endpoint final : public Transport {
   public:
    Endpoint(FlowControlledWorld* w, std::shared_ptr<Transport> inner, int rank)
        : w_(w), inner_(std::move(inner)), rank_(rank) {}
    int rank() const override { return rank_; }
    int size() const override { return w_->n_; }
    const char* kind() const override { return "flow-controlled"; }
    void send(int peer, uint64_t tag, std::span<const std::byte> data, Deadline deadline) override {
      {
        std::unique_lock lock(w_->mu_);
        size_t& pending = w_->pending_[static_cast<size_t>(rank_ * w_->n_ + peer)];
        if (!w_->cv_.wait_until(lock, deadline.at, [&] { return pending == 0 || pending + data.size() <= w_->limit_; })) {
          throw TimeoutError("flow control: send blocked until the deadline");
        }
        pending += data.size();
      }
      inner_->send(peer, tag, data, deadline);
    }
    void recv(int peer, uint64_t tag, std::span<std::byte> out, Deadline deadline) override {
      inner_->recv(peer, tag, out, deadline);
      {
        std::lock_guard lock(w_->mu_);
        w_->pending_[static_cast<size_t>(peer * w_->n_ + rank_)] -= out.size();
      }
      w_->cv_.notify_all();
    }
    void fail_peer(int peer, const std::string& why) override { inner_->fail_peer(peer, why); }

   private:
    FlowControlledWorld* w_;
    std::shared_ptr<Transport> inner_;
    int rank_;
  };
  InProcHub hub_;
  int n_;
  size_t limit_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<size_t> pending_;  // [from * n + to]: bytes sent, not yet received
};

// Buffers far larger than what the transport lets a rank have in flight: the
// algorithms where both sides send first (ring, halving-doubling, the
// deterministic scatter) must not block each other.
TEST(AllreduceFlowControl, LargeBuffersThroughASmallWindow) {
  constexpr int64_t kCount = 300000;  // 1.2 MB of f32
  for (int n : {2, 3, 4, 8}) {
    for (const Setting& s : kSettings) {
      for (bool deterministic : {false, true}) {
        FlowControlledWorld world(n, size_t{256} << 10);
        std::vector<std::exception_ptr> errors(static_cast<size_t>(n));
        std::vector<std::thread> threads;
        for (int r = 0; r < n; ++r) {
          threads.emplace_back([&, r] {
            try {
              Communicator c = make_communicator(world.transport(r), hosts_for(s, n));
              c.timeout = 20s;
              exact_case(c, s, DType::F32, kCount, ReduceOp::Sum, size_t{16} << 10, deterministic);
              Tensor in = Tensor::empty({kCount});
              for (int64_t i = 0; i < kCount; ++i) in.data<float>()[i] = 1.0f;
              Tensor out;
              reduce_scatter(c, in, out, {.chunk_bytes = size_t{16} << 10, .deterministic = deterministic});
              for (int64_t i = 0; i < out.numel(); ++i) ASSERT_EQ(out.data<float>()[i], static_cast<float>(n));
              Tensor gathered;
              all_gather(c, out, gathered, {.chunk_bytes = size_t{16} << 10});
            } catch (...) {
              errors[static_cast<size_t>(r)] = std::current_exception();
            }
          });
        }
        for (auto& t : threads) t.join();
        for (auto& e : errors) {
          if (e) {
            try {
              std::rethrow_exception(e);
            } catch (const std::exception& ex) {
              ADD_FAILURE() << setting_name(s) << " size " << n << " deterministic " << deterministic << ": "
                            << ex.what();
            }
          }
        }
      }
    }
  }
}

// ---- failures: never a hang ----

// Ranks 0..n-2 call allreduce, rank n-1 never does: all of them get
// TimeoutError close to the deadline.
TEST(AllreduceFailure, MissingRankTimesOut) {
  for (const Setting& s : kSettings) {
    for (int n : {2, 4}) {
      InProcHub hub(n);
      std::vector<std::thread> threads;
      std::atomic<int> timeouts{0};
      for (int r = 0; r + 1 < n; ++r) {
        threads.emplace_back([&, r] {
          Communicator c = make_communicator(hub.transport(r), hosts_for(s, n));
          Tensor t = Tensor::from_vector<float>(std::vector<float>(100000, 1.0f), {100000});
          const auto start = Clock::now();
          try {
            allreduce(c, t, {.algorithm = s.algorithm, .timeout = 200ms});
            ADD_FAILURE() << "allreduce returned without rank " << n - 1;
          } catch (const TimeoutError&) {
            ++timeouts;
          }
          const auto took = Clock::now() - start;
          EXPECT_GE(took, 190ms);
          EXPECT_LT(took, 2200ms) << setting_name(s);
        });
      }
      for (auto& t : threads) t.join();
      EXPECT_EQ(timeouts.load(), n - 1) << setting_name(s) << " size " << n;
    }
  }
}

// A peer declared lost while others wait for it: the ranks waiting on it get
// PeerLostError at once; the others fail at the deadline (TimeoutError):
// nobody hangs.
TEST(AllreduceFailure, LostPeerGivesPeerLostError) {
  for (Algorithm a : {Algorithm::Ring, Algorithm::HalvingDoubling, Algorithm::Tree, Algorithm::Hierarchical}) {
    for (int n : {2, 4}) {
      InProcHub hub(n);
      const int dead = n - 1;
      std::atomic<int> lost{0}, timed_out{0};
      std::vector<std::thread> threads;
      for (int r = 0; r < dead; ++r) {
        threads.emplace_back([&, r] {
          Communicator c = make_communicator(hub.transport(r), n == 4 ? std::vector<int>{0, 0, 1, 1} : std::vector<int>{});
          Tensor t = Tensor::from_vector<float>(std::vector<float>(1000, 1.0f), {1000});
          const auto start = Clock::now();
          try {
            allreduce(c, t, {.algorithm = a, .timeout = 600ms});
            ADD_FAILURE() << "allreduce returned without rank " << dead;
          } catch (const PeerLostError&) {
            ++lost;
            EXPECT_LT(Clock::now() - start, 500ms) << name(a);
          } catch (const TimeoutError&) {
            ++timed_out;
          }
        });
      }
      std::this_thread::sleep_for(50ms);
      for (int r = 0; r < dead; ++r) hub.transport(r)->fail_peer(dead, "killed by the test");
      for (auto& t : threads) t.join();
      EXPECT_GE(lost.load(), 1) << name(a) << " size " << n;
      EXPECT_EQ(lost.load() + timed_out.load(), dead) << name(a) << " size " << n;
    }
  }
}

}  // namespace
}  // namespace loom::comm
