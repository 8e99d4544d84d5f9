// dist_sync / dist_async / dist_ssp over real sockets: coordinator, servers and
// workers as threads of this process (tests/ps/ps_cluster.h).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <map>
#include <mutex>
#include <thread>

#include "loom/core/error.h"
#include "loom/ops/creation.h"
#include "loom/ops/math.h"
#include "loom/ops/view.h"
#include "loom/ps/placement.h"
#include "tests/ps/ps_cluster.h"

namespace loom::ps {
namespace {

using core::Tensor;
using testing::Cluster;

Tensor ramp(const core::Shape& shape, double scale, core::DType dtype = core::DType::F32) {
  Tensor t = ops::arange(0, static_cast<double>(core::numel(shape)), 1, dtype);
  return ops::contiguous(ops::mul(ops::reshape(t, shape), scale));
}

TEST(DistKVStore, SyncSumsAreExactForSplitAndUnsplitKeys) {
  for (int servers : {1, 3}) {
    Cluster cluster({.workers = 3, .servers = servers, .split_bound = 64});
    cluster.run([](int rank, KVStore& kv) {
      const std::vector<int64_t> keys = {0, 1, 2};
      const std::vector<Tensor> init = {ops::zeros({10}), ops::zeros({100, 3}), ops::zeros({50, 2}, core::DType::F64)};
      kv.init(keys, init);
      std::vector<Tensor> outs = {ops::zeros({10}), ops::zeros({100, 3}), ops::zeros({50, 2}, core::DType::F64)};
      for (int round = 1; round <= 3; ++round) {
        // Worker r pushes (r + 1) * round * ramp: the merged value is 6 * round * ramp, exactly.
        std::vector<Tensor> grads = {ramp({10}, (rank + 1) * round), ramp({100, 3}, (rank + 1) * round),
                                     ramp({50, 2}, (rank + 1) * round, core::DType::F64)};
        if (round == 2) {
          kv.pushpull(keys, grads, outs);
        } else {
          kv.push(keys, grads);
          kv.pull(keys, outs);
        }
        for (size_t k = 0; k < keys.size(); ++k) {
          const auto want = ramp(init[k].shape(), 6.0 * round, init[k].dtype()).to_vector<double>();
          ASSERT_EQ(outs[k].to_vector<double>(), want) << "key " << k << " round " << round;
        }
      }
    });
  }
}

// On one host the dense slices go through the workers' shared staging
// regions (ps/shm_staging.h) unless turned off; the arithmetic is the same
// either way, bit for bit, with an optimizer on the servers and keys of both
// dtypes split over the servers, through push, pull and pushpull, and a
// region that grows when a bigger call comes.
TEST(DistKVStore, SharedMemoryAndSocketGiveTheSameBits) {
  std::vector<std::vector<double>> got[2];
  for (bool shm : {true, false}) {
    Cluster cluster({.workers = 2, .servers = 2, .split_bound = 1000, .shared_memory = shm});
    std::mutex mu;
    cluster.run([&](int rank, KVStore& kv) {
      const std::vector<int64_t> keys = {0, 1};
      kv.init(keys, std::vector<Tensor>{ramp({3000}, 0.001), ramp({700, 3}, 0.01, core::DType::F64)});
      kv.set_optimizer({.rule = optim::Rule::Adam, .lr = 0.01, .rescale_grad = 0.5});
      std::vector<Tensor> outs = {ops::zeros({3000}), ops::zeros({700, 3}, core::DType::F64)};
      for (int round = 1; round <= 3; ++round) {
        const std::vector<Tensor> grads = {ramp({3000}, 0.1 * (rank + round)),
                                           ramp({700, 3}, 0.3 * (rank + round), core::DType::F64)};
        if (round == 2) {
          kv.push(keys, grads);
          kv.pull(keys, outs);
        } else {
          kv.pushpull(keys, grads, outs);
        }
      }
      Tensor big = ops::zeros({300000});  // a bigger call: a new region, mapped again by both servers
      kv.init(2, big);
      kv.pushpull(2, ramp({300000}, 1.0), big);
      const KVStoreStats st = kv.stats();
      if (shm) {
        EXPECT_GT(st.shm_bytes_sent, 0u);
        EXPECT_GT(st.shm_bytes_received, 0u);
      } else {
        EXPECT_EQ(st.shm_bytes_sent + st.shm_bytes_received, 0u);
      }
      if (rank == 0) {
        std::lock_guard lock(mu);
        for (const Tensor& t : outs) got[shm ? 0 : 1].push_back(t.to_vector<double>());
        got[shm ? 0 : 1].push_back(big.to_vector<double>());
      }
    });
  }
  ASSERT_EQ(got[0].size(), 3u);
  EXPECT_EQ(got[0], got[1]);
}

TEST(DistKVStore, SyncWithServerOptimizerUpdatesOncePerRound) {
  Cluster cluster({.workers = 2, .servers = 2, .split_bound = 16});
  cluster.run([](int rank, KVStore& kv) {
    kv.init(0, ops::ones({40}));
    kv.set_optimizer({.rule = optim::Rule::Sgd, .lr = 0.5, .rescale_grad = 0.5});  // averages the 2 workers' pushes
    for (int i = 0; i < 4; ++i) kv.push(0, ops::full({40}, rank == 0 ? 1.0 : 3.0));
    Tensor w = ops::zeros({40});
    kv.pull(0, w);
    for (float v : w.to_vector<float>()) ASSERT_EQ(v, 1.0f - 4 * 0.5f * 2.0f);  // mean gradient 2, 4 rounds
  });
}

TEST(DistKVStore, AsyncAppliesEveryPush) {
  Cluster cluster({.workers = 3, .servers = 2, .split_bound = 8, .type = io::Mode::DistAsync});
  cluster.run([](int rank, KVStore& kv) {
    kv.init(0, ops::zeros({20}));
    kv.set_optimizer({.rule = optim::Rule::Sgd, .lr = 1.0});
    for (int i = 0; i < 5 + rank; ++i) kv.push(0, ops::full({20}, -1.0));  // w -= -1 per push
    kv.barrier();
    Tensor w = ops::zeros({20});
    kv.pull(0, w);
    for (float v : w.to_vector<float>()) ASSERT_EQ(v, 5.0f + 6.0f + 7.0f);
  });
}

TEST(DistKVStore, BadRequestsFailAtThatWorkerAndTheServerGoesOn) {
  Cluster cluster({.workers = 2, .servers = 1});
  cluster.run([](int rank, KVStore& kv) {
    kv.init(0, ops::zeros({4}));
    if (rank == 0) kv.init(1, ops::zeros({4}));
    kv.barrier();
    if (rank == 1) {
      auto expect_error = [&](const std::function<void()>& f, const std::string& words) {
        try {
          f();
          ADD_FAILURE() << "no error; expected " << words;
        } catch (const ValueError& e) {
          EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
        }
      };
      // Key 1 is unknown to this worker: the server judges (shape, dtype); key 7 exists nowhere.
      expect_error([&] { kv.push(1, ops::zeros({5})); }, "key 1");
      expect_error([&] { kv.push(1, ops::zeros({4}, core::DType::F64)); }, "f64");
      expect_error([&] { kv.push(7, ops::zeros({4})); }, "not initialized");
      expect_error([&] { kv.pull(7, ops::zeros({4})); }, "not initialized");
      EXPECT_THROW(kv.push(0, ops::zeros({3})), ShapeError);  // known here: refused before sending
    }
    // Both go on: a normal round on key 0.
    kv.push(0, ops::full({4}, rank + 1.0));
    Tensor w = ops::zeros({4});
    kv.pull(0, w);
    for (float v : w.to_vector<float>()) ASSERT_EQ(v, 3.0f);
  });
}

TEST(DistKVStore, RowSparseSumsAreExactAcrossWorkersServersAndSlices) {
  // A 200000 x 2 table is 7 slices; each worker pushes 4 rows (one shared by
  // all) in 3 or 4 of them, so some slices get no rows from a worker (a
  // dist_sync push still names them) and a server's request covers several.
  for (const io::Mode type : {io::Mode::DistSync, io::Mode::DistAsync}) {
    for (int servers : {1, 3}) {
      Cluster cluster({.workers = 3, .servers = servers, .type = type});
      cluster.run([](int rank, KVStore& kv) {
        kv.init(0, ops::zeros({200000, 2}));
        kv.set_optimizer({.rule = optim::Rule::Sgd, .lr = 1.0});
        const std::vector<int64_t> rows = {rank, 1000 * rank + 5, 100000 + 3 * rank, 199999};
        for (int round = 0; round < 2; ++round) {
          kv.row_sparse_push(0, Tensor::from_vector<int64_t>(rows, {4}), ops::full({4, 2}, -(rank + 1.0)));
        }
        kv.barrier();
        // Any order, repeats, untouched rows.
        const std::vector<int64_t> ask = {199999, 0, 1005, 0, 100006, 3, 150000, 2005, 100000};
        const std::vector<float> want = {12, 2, 4, 2, 6, 0, 0, 6, 2};  // 2 rounds x (rank + 1), summed over pushers
        Tensor out = ops::full({9, 2}, -1.0);
        kv.row_sparse_pull(0, out, Tensor::from_vector<int64_t>(ask, {9}));
        const auto got = out.to_vector<float>();
        for (size_t i = 0; i < ask.size(); ++i) {
          EXPECT_EQ(got[2 * i], want[i]) << "row " << ask[i];
          EXPECT_EQ(got[2 * i + 1], want[i]) << "row " << ask[i];
        }
      });
    }
  }
}

TEST(DistKVStore, SparseTrafficGrowsWithRowsTouchedNotTableSize) {
  Cluster cluster({.workers = 1, .servers = 2});
  cluster.run([](int, KVStore& kv) {
    const int64_t rows = 1 << 20, dim = 8;  // a 1M-row table, 32 MiB
    kv.init(0, ops::zeros({rows, dim}));
    kv.set_optimizer({.rule = optim::Rule::Sgd, .lr = 0.1});
    auto step_bytes = [&](int64_t touched, int64_t offset) {
      std::vector<int64_t> ids;  // spread over both servers, disjoint between calls
      for (int64_t i = 0; i < touched; ++i) ids.push_back(i * (rows / touched) + offset);
      Tensor id_t = Tensor::from_vector<int64_t>(ids, {touched});
      Tensor g = ops::ones({touched, dim});
      Tensor out = ops::zeros({touched, dim});
      const KVStoreStats before = kv.stats();
      kv.row_sparse_push(0, id_t, g);
      kv.row_sparse_pull(0, out, id_t);
      const KVStoreStats after = kv.stats();
      for (float v : out.to_vector<float>()) EXPECT_FLOAT_EQ(v, -0.1f);
      return static_cast<double>(after.bytes_sent + after.bytes_received - before.bytes_sent - before.bytes_received);
    };
    const double b64 = step_bytes(64, 0), b640 = step_bytes(640, 1);
    // Per row: 8 B id + 32 B gradient out, 8 B id + 32 B row back. A pull
    // names the slices it reads, 8 B each (its first row; the servers are on
    // this host, so the table is 32 slices of 2^18 elements): every slice for
    // 64 or 640 spread rows. A dist_sync push names every slice of a server
    // (every slice's round needs every worker) in 8 B, one request per server.
    const int64_t slices = static_cast<int64_t>(
        place_key(0, {rows, dim}, {.num_servers = 2, .slice_elements = slice_elements_for(1)}).size());
    ASSERT_EQ(slices, 32);
    EXPECT_EQ(b64, 64 * 80.0 + 8.0 * 2 + 8.0 * slices);
    EXPECT_EQ(b640, 640 * 80.0 + 8.0 * 2 + 8.0 * slices);
    EXPECT_LT(b640, rows * dim * 4 / 500.0);  // far from the table's 32 MiB
  });
}

TEST(DistKVStore, StaleSynchronousParallelBoundHoldsUnderASlowWorker) {
  const int s = 1, steps = 8;
  Cluster cluster({.workers = 2, .servers = 1, .type = io::Mode::DistSsp, .staleness = s});
  using Clock = std::chrono::steady_clock;
  std::mutex mu;
  std::vector<std::vector<Clock::time_point>> start(2, std::vector<Clock::time_point>(steps + 1)), finish = start;
  cluster.run([&](int rank, KVStore& kv) {
    kv.init(0, ops::zeros({4}));
    for (int t = 1; t <= steps; ++t) {
      {
        std::lock_guard lock(mu);
        start[static_cast<size_t>(rank)][static_cast<size_t>(t)] = Clock::now();
      }
      if (rank == 1) std::this_thread::sleep_for(std::chrono::milliseconds(60));  // the slow worker
      kv.push(0, ops::ones({4}));
      {
        std::lock_guard lock(mu);
        finish[static_cast<size_t>(rank)][static_cast<size_t>(t)] = Clock::now();
      }
      kv.advance_clock();
    }
  });
  // No worker starts step t+s+1 before every worker has finished step t.
  bool ran_ahead = false;
  for (int t = 1; t + s + 1 <= steps; ++t) {
    EXPECT_GE(start[0][static_cast<size_t>(t + s + 1)], finish[1][static_cast<size_t>(t)]) << "step " << t;
    ran_ahead = ran_ahead || start[0][static_cast<size_t>(t + 1)] < finish[1][static_cast<size_t>(t)];
  }
  EXPECT_TRUE(ran_ahead) << "with staleness 1 the fast worker should run ahead of the slow one";
}

TEST(DistKVStore, SyncWorkersWithUnequalStepCountsDoNotHang) {
  // MXNet's dist_sync waits forever for a worker that has run out of batches;
  // here a worker that closes its store stops counting in the rounds.
  Cluster cluster({.workers = 2, .servers = 2, .split_bound = 8, .timeout = std::chrono::milliseconds(10000)});
  cluster.run([](int rank, KVStore& kv) {
    kv.init(0, ops::zeros({20}));
    kv.set_optimizer({.rule = optim::Rule::Sgd, .lr = 1.0});
    const int steps = rank == 0 ? 5 : 3;
    for (int i = 0; i < steps; ++i) kv.push(0, ops::full({20}, -1.0));
    if (rank == 0) {
      Tensor w = ops::zeros({20});
      kv.pull(0, w);
      for (float v : w.to_vector<float>()) ASSERT_EQ(v, 3 * 2 + 2 * 1);  // 3 rounds of both, 2 of worker 0 alone
    }
  });
}

// A worker whose store is destroyed while an error unwinds has not finished
// training: it must not retire like a worker out of batches (the others
// would train on without it, and it would wait at the close barrier for
// them). Its peers learn it is lost, at once.
TEST(DistKVStore, AWorkerUnwindingAnErrorIsLostToItsPeersAtOnce) {
  Cluster cluster({.workers = 2, .servers = 1, .heartbeat_timeout = std::chrono::milliseconds(3000),
                   .timeout = std::chrono::milliseconds(20000)});
  std::atomic<bool> initialized{false};
  std::thread failing([&] {
    try {
      auto kv = join_kvstore(cluster.worker_env(0), io::Mode::DistSync, {.timeout = std::chrono::milliseconds(20000)});
      kv->init(0, ops::zeros({8}));
      kv->push(0, ops::ones({8}));
      while (!initialized) std::this_thread::sleep_for(std::chrono::milliseconds(10));
      throw ValueError("worker 0: a bad batch");  // ~DistKVStore runs while this unwinds
    } catch (const ValueError&) {
    }
  });
  const auto start = std::chrono::steady_clock::now();
  std::string error;
  try {
    auto kv = join_kvstore(cluster.worker_env(1), io::Mode::DistSync, {.timeout = std::chrono::milliseconds(20000)});
    kv->init(0, ops::zeros({8}));
    initialized = true;
    for (int i = 0; i < 50; ++i) kv->push(0, ops::ones({8}));  // round 1 needs worker 0's push, which it made
    ADD_FAILURE() << "worker 1 trained 50 dist_sync rounds without worker 0";
  } catch (const PeerLostError& e) {
    error = e.what();
  }
  failing.join();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_NE(error.find("worker 0"), std::string::npos) << error;
  EXPECT_LT(seconds, 10.0) << "worker 1 learned of worker 0 only after " << seconds << " s: " << error;
}

TEST(DistKVStore, ServerOptimizerStateSavesAndLoadsAcrossJobs) {
  const auto path = std::filesystem::temp_directory_path() / "loom_dist_kv_state_test.safetensors";
  auto rounds = [](int rank, KVStore& kv, int from, int to) {
    for (int i = from; i < to; ++i) kv.push(0, ops::full({30}, 0.1 * (i + 1) * (rank + 1)));
  };
  std::vector<float> straight, resumed;
  {
    Cluster cluster({.workers = 2, .servers = 2, .split_bound = 8});
    cluster.run([&](int rank, KVStore& kv) {
      kv.init(0, ops::ones({30}));
      kv.set_optimizer({.rule = optim::Rule::Adam, .lr = 0.01});
      rounds(rank, kv, 0, 3);
      kv.save_optimizer_states(path);
      rounds(rank, kv, 3, 5);
      Tensor w = ops::zeros({30});
      kv.pull(0, w);
      if (rank == 0) straight = w.to_vector<float>();
    });
  }
  {
    Cluster cluster({.workers = 2, .servers = 2, .split_bound = 8});
    cluster.run([&](int rank, KVStore& kv) {
      kv.init(0, ops::zeros({30}));
      kv.set_optimizer({.rule = optim::Rule::Adam, .lr = 0.01});
      kv.load_optimizer_states(path);  // weights, Adam moments and step counts of every slice
      rounds(rank, kv, 3, 5);
      Tensor w = ops::zeros({30});
      kv.pull(0, w);
      if (rank == 0) resumed = w.to_vector<float>();
    });
  }
  EXPECT_EQ(straight, resumed);
  EXPECT_FALSE(straight.empty());
  std::filesystem::remove(path);
}

// The typed form (what a checkpoint names by parameter): every slice of a
// key gathered whole, and scattered back into the slices of another job.
TEST(DistKVStore, KeyStatesGatherSlicesWholeAndPutThemBack) {
  auto rounds = [](int rank, KVStore& kv, int from, int to) {
    for (int i = from; i < to; ++i) {
      kv.push(0, ops::full({30}, 0.1 * (i + 1) * (rank + 1)));
      kv.push(1, ops::full({4, 5}, -0.2 * (i + 1)));
    }
  };
  std::vector<float> straight, resumed;
  std::map<int64_t, KeySnapshot> saved;
  {
    Cluster cluster({.workers = 2, .servers = 2, .split_bound = 8});
    cluster.run([&](int rank, KVStore& kv) {
      kv.init(std::vector<int64_t>{0, 1}, std::vector<Tensor>{ops::ones({30}), ops::ones({4, 5})});
      kv.set_optimizer({.rule = optim::Rule::Adam, .lr = 0.01});
      rounds(rank, kv, 0, 3);
      const std::vector<int64_t> keys = {0, 1};
      auto states = kv.key_states(keys);
      EXPECT_EQ(states.size(), rank == 0 ? 2u : 0u);
      if (rank == 0) {
        Tensor w = ops::zeros({30});
        kv.pull(0, w);
        EXPECT_EQ(states[0].value.to_vector<float>(), w.to_vector<float>());  // the slices, whole
        EXPECT_EQ(states[0].slots.size(), 2u);                                // exp_avg, exp_avg_sq
        EXPECT_EQ(states[1].slots[0].shape(), core::Shape({4, 5}));
        EXPECT_EQ(states[0].updates, 3);
        saved = states;
      }
      kv.barrier();
      rounds(rank, kv, 3, 5);
      Tensor w = ops::zeros({30});
      kv.pull(0, w);
      if (rank == 0) straight = w.to_vector<float>();
    });
  }
  {
    Cluster cluster({.workers = 2, .servers = 2, .split_bound = 8});
    cluster.run([&](int rank, KVStore& kv) {
      kv.init(std::vector<int64_t>{0, 1}, std::vector<Tensor>{ops::zeros({30}), ops::zeros({4, 5})});
      kv.set_optimizer({.rule = optim::Rule::Adam, .lr = 0.01});
      kv.restore_key_states(rank == 0 ? saved : std::map<int64_t, KeySnapshot>{});
      rounds(rank, kv, 3, 5);
      Tensor w = ops::zeros({30});
      kv.pull(0, w);
      if (rank == 0) resumed = w.to_vector<float>();
    });
  }
  EXPECT_EQ(straight, resumed);
  EXPECT_FALSE(straight.empty());
}

}  // namespace
}  // namespace loom::ps
