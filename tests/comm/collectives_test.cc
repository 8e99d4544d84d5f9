// The other collectives (broadcast, all_gather, reduce_scatter, barrier,
// send/recv), the communicator's topology helpers and tags, argument checks
// and timeouts. Ranks are threads over InProcHub; allreduce is in
// allreduce_test.cc.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <exception>
#include <random>
#include <set>
#include <thread>
#include <vector>

#include "loom/comm/collectives/collectives.h"
#include "loom/comm/transport/inproc_transport.h"
#include "run_ranks.h"

namespace loom::comm {
namespace {

using namespace std::chrono_literals;
using core::BFloat16;
using core::DType;
using core::Tensor;

using testing::run_ranks;

// A value that identifies (rank, element), exact in every dtype tested.
int tagged_value(int rank, int64_t i) { return static_cast<int>((rank * 37 + i * 11) % 101) - 50; }

template <class T>
Tensor filled(int rank, int64_t count, DType dtype) {
  Tensor t = Tensor::empty({count}, dtype);
  for (int64_t i = 0; i < count; ++i) t.data<T>()[i] = core::cast_value<T>(tagged_value(rank, i));
  return t;
}

// ---- communicator ----

TEST(Communicator, TopologyHelpers) {
  InProcHub hub(6);
  Communicator c = make_communicator(hub.transport(4), {7, 3, 7, 3, 3, 9});
  EXPECT_EQ(c.rank, 4);
  EXPECT_EQ(c.size, 6);
  EXPECT_EQ(num_hosts(c), 3);
  EXPECT_EQ(host_of(c, 4), 3);
  EXPECT_EQ(ranks_on_host(c, 7), (std::vector<int>{0, 2}));
  EXPECT_EQ(local_ranks(c), (std::vector<int>{1, 3, 4}));
  EXPECT_EQ(host_leaders(c), (std::vector<int>{0, 1, 5}));
  EXPECT_EQ(leader_of(c, 4), 1);
  EXPECT_FALSE(is_leader(c));
  EXPECT_TRUE(is_multi_host_multi_rank(c));

  Communicator flat = make_communicator(hub.transport(2));
  EXPECT_EQ(num_hosts(flat), 1);
  EXPECT_EQ(local_ranks(flat).size(), 6u);
  EXPECT_EQ(host_leaders(flat), (std::vector<int>{0}));
  EXPECT_FALSE(is_multi_host_multi_rank(flat));
  EXPECT_FALSE(is_multi_host_multi_rank(make_communicator(hub.transport(0), {0, 1, 2, 3, 4, 5})));
}

TEST(Communicator, RejectsBadSetups) {
  InProcHub hub(3);
  EXPECT_THROW(make_communicator(nullptr), ValueError);
  EXPECT_THROW(make_communicator(hub.transport(0), {0, 1}), ValueError);
  EXPECT_THROW(make_communicator(hub.transport(0), {0, -1, 1}), ValueError);
  Communicator c = make_communicator(hub.transport(1));
  c.rank = 2;  // disagrees with the transport
  Tensor t = Tensor::empty({4});
  EXPECT_THROW(allreduce(c, t), ValueError);
}

TEST(Communicator, TagsNeverCollide) {
  InProcHub hub(2);
  Communicator a = make_communicator(hub.transport(0));
  Communicator b = a;
  b.channel = 1;
  std::set<uint64_t> tags;
  for (uint64_t seq : {0ull, 1ull, 2ull, 1000000ull}) {
    for (uint32_t phase : {0u, 1u, 0x100u, 0xfffffu}) {
      EXPECT_TRUE(tags.insert(collective_tag(a, seq, phase)).second);
      EXPECT_TRUE(tags.insert(collective_tag(b, seq, phase)).second);
    }
  }
  for (uint64_t user : std::vector<uint64_t>{0, 1, kMaxUserTag}) {
    EXPECT_TRUE(tags.insert(point_to_point_tag(a, user)).second);
    EXPECT_TRUE(tags.insert(point_to_point_tag(b, user)).second);
  }
  EXPECT_THROW(point_to_point_tag(a, kMaxUserTag + 1), ValueError);
}

// ---- broadcast ----

TEST(Broadcast, FromEveryRoot) {
  for (int n = 1; n <= 8; ++n) {
    for (int64_t count : {0, 1, 7, 1000, 100003}) {
      for (DType dtype : {DType::F32, DType::BF16, DType::I64, DType::U8}) {
        run_ranks(n, {}, [&](Communicator& c) {
          core::visit_dtype(dtype, [&]<class T>() {
            if constexpr (!std::is_same_v<T, bool>) {
              for (int root = 0; root < n; ++root) {
                for (size_t chunk : {size_t{64}, kDefaultChunkBytes}) {
                  Tensor t = filled<T>(c.rank, count, dtype);
                  broadcast(c, t, root, {.chunk_bytes = chunk});
                  const Tensor want = filled<T>(root, count, dtype);
                  EXPECT_EQ(std::memcmp(t.data_ptr(), want.data_ptr(), t.nbytes()), 0)
                      << "size " << n << " root " << root << " rank " << c.rank << " " << dtype << " count "
                      << count;
                }
              }
            }
          });
        });
      }
    }
  }
}

TEST(Broadcast, RejectsBadRoot) {
  InProcHub hub(2);
  Communicator c = make_communicator(hub.transport(0));
  Tensor t = Tensor::empty({3});
  EXPECT_THROW(broadcast(c, t, 2), ValueError);
  EXPECT_THROW(broadcast(c, t, -1), ValueError);
}

// ---- all_gather ----

TEST(AllGather, LaysOutByRank) {
  for (int n = 1; n <= 8; ++n) {
    for (int64_t count : {0, 1, 7, 1000, 33333}) {
      run_ranks(n, {}, [&](Communicator& c) {
        for (DType dtype : {DType::F32, DType::F64, DType::BF16, DType::I64}) {
          core::visit_dtype(dtype, [&]<class T>() {
            if constexpr (!std::is_same_v<T, bool>) {
              const Tensor in = filled<T>(c.rank, count, dtype);
              Tensor out;  // allocated by all_gather
              all_gather(c, in, out, {.chunk_bytes = count == 1000 ? 40 : kDefaultChunkBytes});
              ASSERT_EQ(out.numel(), count * n);
              for (int r = 0; r < n; ++r) {
                const Tensor want = filled<T>(r, count, dtype);
                EXPECT_EQ(std::memcmp(out.data<T>() + r * count, want.data_ptr(), want.nbytes()), 0)
                    << "size " << n << " block " << r << " on rank " << c.rank << " " << dtype;
              }
            }
          });
        }
      });
    }
  }
}

TEST(AllGather, ChecksOutput) {
  InProcHub hub(1);
  Communicator c = make_communicator(hub.transport(0));
  Tensor in = Tensor::empty({4});
  Tensor small = Tensor::empty({3});
  EXPECT_THROW(all_gather(c, in, small), ShapeError);
  Tensor wrong_type = Tensor::empty({4}, DType::F64);
  EXPECT_THROW(all_gather(c, in, wrong_type), TypeError);
  Tensor shaped = Tensor::empty({2, 2});  // any shape with the right numel
  all_gather(c, in, shaped);
}

// ---- reduce_scatter ----

TEST(ReduceScatter, RangesCoverTheBuffer) {
  for (size_t numel : {size_t{0}, size_t{1}, size_t{7}, size_t{1000}, size_t{1001}}) {
    for (int parts = 1; parts <= 8; ++parts) {
      size_t next = 0;
      for (int i = 0; i < parts; ++i) {
        const ElementRange r = reduce_scatter_range(numel, parts, i);
        EXPECT_EQ(r.offset, next);
        EXPECT_TRUE(r.numel == numel / parts || r.numel == numel / parts + 1);
        next += r.numel;
      }
      EXPECT_EQ(next, numel);
    }
  }
  EXPECT_EQ(reduce_scatter_range(10, 4, 0).numel, 3u);  // the first numel % parts chunks are longer
  EXPECT_EQ(reduce_scatter_range(10, 4, 3).numel, 2u);
}

TEST(ReduceScatter, EachRankGetsItsReducedChunk) {
  for (int n = 1; n <= 8; ++n) {
    for (int64_t count : {0, 1, 7, 1000, 1001, 100003}) {
      for (bool deterministic : {false, true}) {
        run_ranks(n, {}, [&](Communicator& c) {
          for (ReduceOp op : {ReduceOp::Sum, ReduceOp::Avg, ReduceOp::Max, ReduceOp::Min}) {
            for (DType dtype : {DType::F32, DType::BF16, DType::I64}) {
              core::visit_dtype(dtype, [&]<class T>() {
                if constexpr (std::is_same_v<T, float> || std::is_same_v<T, BFloat16> || std::is_same_v<T, int64_t>) {
                  using C = std::conditional_t<std::is_same_v<T, BFloat16>, float, T>;
                  // Values in [-8, 8]: sums exact in bf16.
                  Tensor in = Tensor::empty({count}, dtype);
                  for (int64_t i = 0; i < count; ++i) in.data<T>()[i] = core::cast_value<T>(tagged_value(c.rank, i) % 9);
                  Tensor out;
                  reduce_scatter(c, in, out,
                                 {.op = op, .chunk_bytes = count == 1001 ? 24 : kDefaultChunkBytes,
                                  .deterministic = deterministic});
                  const ElementRange mine = reduce_scatter_range(static_cast<size_t>(count), n, c.rank);
                  ASSERT_EQ(out.numel(), static_cast<int64_t>(mine.numel));
                  int64_t bad = 0;
                  for (size_t k = 0; k < mine.numel; ++k) {
                    const int64_t i = static_cast<int64_t>(mine.offset + k);
                    int64_t sum = 0;
                    int hi = -100, lo = 100;
                    for (int r = 0; r < n; ++r) {
                      const int v = tagged_value(r, i) % 9;
                      sum += v;
                      hi = std::max(hi, v);
                      lo = std::min(lo, v);
                    }
                    C want = op == ReduceOp::Sum   ? static_cast<C>(sum)
                             : op == ReduceOp::Avg ? static_cast<C>(static_cast<C>(sum) / static_cast<C>(n))
                             : op == ReduceOp::Max ? static_cast<C>(hi)
                                                   : static_cast<C>(lo);
                    if (core::cast_value<double>(out.data<T>()[k]) != core::cast_value<double>(static_cast<T>(want))) ++bad;
                  }
                  EXPECT_EQ(bad, 0) << "size " << n << " rank " << c.rank << " count " << count << " op " << name(op)
                                    << " " << dtype << " deterministic " << deterministic;
                }
              });
            }
          }
        });
      }
    }
  }
}

TEST(ReduceScatter, ChecksOutput) {
  InProcHub hub(1);
  Communicator c = make_communicator(hub.transport(0));
  Tensor in = Tensor::empty({4});
  Tensor wrong = Tensor::empty({3});
  EXPECT_THROW(reduce_scatter(c, in, wrong), ShapeError);
  Tensor bytes = Tensor::empty({4}, DType::U8);
  Tensor out;
  EXPECT_THROW(reduce_scatter(c, bytes, out), TypeError);
}

// ---- barrier ----

TEST(Barrier, NobodyLeavesBeforeEveryoneArrived) {
  for (int n = 1; n <= 8; ++n) {
    constexpr int kRounds = 20;
    std::vector<std::atomic<int>> arrived(kRounds);
    run_ranks(n, {}, [&](Communicator& c) {
      std::mt19937 rng(static_cast<uint32_t>(c.rank));
      for (int round = 0; round < kRounds; ++round) {
        if (rng() % 3 == 0) std::this_thread::sleep_for(std::chrono::microseconds(rng() % 3000));
        ++arrived[static_cast<size_t>(round)];
        barrier(c);
        EXPECT_EQ(arrived[static_cast<size_t>(round)].load(), n) << "size " << n << " round " << round;
      }
    });
  }
}

TEST(Barrier, MissingRankTimesOut) {
  InProcHub hub(3);
  std::vector<std::thread> threads;
  std::atomic<int> timeouts{0};
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      Communicator c = make_communicator(hub.transport(r));
      c.timeout = 200ms;
      const auto start = Clock::now();
      try {
        barrier(c);
      } catch (const TimeoutError&) {
        ++timeouts;
      }
      EXPECT_LT(Clock::now() - start, 2200ms);
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(timeouts.load(), 2);
}

// ---- send / recv ----

TEST(SendRecv, PassesAroundARingInOrder) {
  for (int n = 2; n <= 8; ++n) {
    run_ranks(n, {}, [&](Communicator& c) {
      const int right = (c.rank + 1) % n, left = (c.rank + n - 1) % n;
      for (int k = 0; k < 5; ++k) send(c, filled<float>(c.rank * 10 + k, 257, DType::F32), right, {.tag = 3});
      Tensor t = Tensor::empty({257});
      for (int k = 0; k < 5; ++k) {  // per (peer, tag) FIFO
        recv(c, t, left, {.tag = 3});
        const Tensor want = filled<float>(left * 10 + k, 257, DType::F32);
        EXPECT_EQ(std::memcmp(t.data_ptr(), want.data_ptr(), t.nbytes()), 0);
      }
    });
  }
}

// Point-to-point messages take no sequence number: ranks that exchange them
// between collectives stay in step with ranks that don't.
TEST(SendRecv, DoNotDisturbCollectives) {
  run_ranks(4, {}, [&](Communicator& c) {
    Tensor a = Tensor::from_vector<int64_t>({c.rank}, {1});
    allreduce(c, a);
    if (c.rank == 0) send(c, Tensor::from_vector<int64_t>({42}, {1}), 3, {.tag = 1});
    if (c.rank == 3) {
      Tensor got = Tensor::empty({1}, DType::I64);
      recv(c, got, 0, {.tag = 1});
      EXPECT_EQ(got.data<int64_t>()[0], 42);
    }
    Tensor b = Tensor::from_vector<int64_t>({1}, {1});
    allreduce(c, b);
    EXPECT_EQ(a.data<int64_t>()[0], 6);
    EXPECT_EQ(b.data<int64_t>()[0], 4);
  });
}

TEST(SendRecv, SizeMismatchAndTimeout) {
  run_ranks(2, {}, [&](Communicator& c) {
    if (c.rank == 0) {
      send(c, Tensor::empty({4}), 1);
      Tensor empty = Tensor::empty({0});
      send(c, empty, 1, {.tag = 9});
    } else {
      Tensor t = Tensor::empty({5});
      EXPECT_THROW(recv(c, t, 0), CommError);
      Tensor empty = Tensor::empty({0});
      recv(c, empty, 0, {.tag = 9});  // empty messages arrive too
      const auto start = Clock::now();
      EXPECT_THROW(recv(c, t, 0, {.tag = 2, .timeout = 100ms}), TimeoutError);
      EXPECT_LT(Clock::now() - start, 2s);
    }
  });
  InProcHub hub(2);
  Communicator c = make_communicator(hub.transport(0));
  Tensor t = Tensor::empty({1});
  EXPECT_THROW(send(c, t, 0), ValueError);  // not to itself
  EXPECT_THROW(recv(c, t, 2), ValueError);
}

TEST(SendRecv, LostPeer) {
  InProcHub hub(2);
  Communicator c = make_communicator(hub.transport(0));
  std::thread killer([&] {
    std::this_thread::sleep_for(50ms);
    hub.transport(0)->fail_peer(1, "gone");
  });
  Tensor t = Tensor::empty({1});
  const auto start = Clock::now();
  EXPECT_THROW(recv(c, t, 1, {.timeout = 10s}), PeerLostError);
  EXPECT_LT(Clock::now() - start, 5s);
  killer.join();
}

// ---- every collective honours its timeout ----

TEST(CollectiveFailure, MissingRankTimesOutEverywhere) {
  const int n = 3, missing = 0;  // rank 0: the broadcast root and a ring member
  InProcHub hub(n);
  std::vector<std::thread> threads;
  std::atomic<int> timeouts{0};
  for (int r = 1; r < n; ++r) {
    threads.emplace_back([&, r] {
      Communicator c = make_communicator(hub.transport(r));
      c.timeout = 150ms;
      Tensor t = Tensor::empty({999});
      auto expect_timeout = [&](auto&& call) {
        // Each failed call leaves the sequence one step further on every rank.
        const auto start = Clock::now();
        try {
          call();
        } catch (const TimeoutError&) {
          ++timeouts;
        }
        EXPECT_LT(Clock::now() - start, 2s);
      };
      expect_timeout([&] { broadcast(c, t, missing); });
      expect_timeout([&] {
        Tensor out;
        all_gather(c, t, out);
      });
      expect_timeout([&] {
        Tensor out;
        reduce_scatter(c, t, out);
      });
      expect_timeout([&] { allreduce(c, t, {.deterministic = true}); });
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(timeouts.load(), 2 * 4);
}

}  // namespace
}  // namespace loom::comm
