// KVStore::pushpull_fixed_point over real sockets (tests/ps/ps_cluster.h):
// workers holding different shares of the same fixed-point atoms get the
// same bits from the servers whatever their number, through shared memory or
// the socket, keys of both dtypes split over the servers; a store of another
// type refuses the call.
#include <gtest/gtest.h>

#include <mutex>
#include <random>

#include "loom/core/error.h"
#include "loom/ops/creation.h"
#include "loom/optim/fixed_point.h"
#include "tests/ps/ps_cluster.h"

namespace loom::ps {
namespace {

using core::Tensor;
using testing::Cluster;

constexpr int kAtoms = 4;
const std::vector<core::Shape> kShapes = {{50, 3}, {7}};
const std::vector<core::DType> kDtypes = {core::DType::F32, core::DType::F64};

// Atom a's integers for key k in round `round`.
std::vector<int64_t> atom(size_t k, int a, int round) {
  std::mt19937_64 rng(1000 * round + 10 * a + k);
  std::vector<int64_t> v(static_cast<size_t>(core::numel(kShapes[k])));
  for (auto& x : v) x = static_cast<int64_t>(rng()) >> (12 + rng() % 30);
  return v;
}

Tensor sum_of_atoms(size_t k, int first, int last, int round) {
  Tensor t = ops::zeros(kShapes[k], core::DType::I64);
  auto* p = static_cast<int64_t*>(t.data_ptr());
  for (int a = first; a < last; ++a) {
    const auto v = atom(k, a, round);
    for (size_t i = 0; i < v.size(); ++i) p[i] += v[i];
  }
  return t;
}

TEST(DistFixedPoint, AnyNumberOfWorkersGetsTheSameBits) {
  std::vector<std::vector<std::vector<double>>> results;  // per run: per key, rank 0's final value
  for (auto [workers, shm] : {std::pair{1, true}, {2, false}, {4, true}}) {
    Cluster cluster({.workers = workers, .servers = 2, .split_bound = 40, .shared_memory = shm});
    std::mutex mu;
    std::vector<std::vector<double>> got;
    cluster.run([&](int rank, KVStore& kv) {
      const std::vector<int64_t> keys = {0, 1};
      std::vector<Tensor> outs = {ops::zeros(kShapes[0], kDtypes[0]), ops::zeros(kShapes[1], kDtypes[1])};
      kv.init(keys, outs);
      for (int round = 1; round <= 3; ++round) {
        const int first = kAtoms * rank / workers, last = kAtoms * (rank + 1) / workers;
        const std::vector<Tensor> sums = {sum_of_atoms(0, first, last, round), sum_of_atoms(1, first, last, round)};
        kv.pushpull_fixed_point(keys, sums, outs);
        // Without an optimizer the value becomes the merged push: the one conversion of the total.
        for (size_t k = 0; k < keys.size(); ++k) {
          const Tensor total = sum_of_atoms(k, 0, kAtoms, round);
          Tensor want = ops::zeros(kShapes[k], kDtypes[k]);
          optim::fixed_point::to_float({static_cast<const int64_t*>(total.data_ptr()),
                                        static_cast<size_t>(total.numel())}, kDtypes[k], want.data_ptr());
          ASSERT_EQ(outs[k].to_vector<double>(), want.to_vector<double>()) << "key " << k << " round " << round;
        }
      }
      if (rank == 0) {
        std::lock_guard lock(mu);
        for (const Tensor& t : outs) got.push_back(t.to_vector<double>());
      }
    });
    results.push_back(got);
  }
  ASSERT_EQ(results.size(), 3u);
  EXPECT_EQ(results[0], results[1]);
  EXPECT_EQ(results[0], results[2]);
}

TEST(DistFixedPoint, OtherTypesRefuseFixedPointPushes) {
  Cluster cluster({.workers = 1, .servers = 1, .type = io::Mode::DistAsync});
  cluster.run([](int, KVStore& kv) {
    kv.init(0, ops::zeros({4}));
    const std::vector<int64_t> keys = {0};
    const std::vector<Tensor> sums = {ops::zeros({4}, core::DType::I64)}, outs = {ops::zeros({4})};
    try {
      kv.pushpull_fixed_point(keys, sums, outs);
      FAIL() << "dist_async took a fixed-point push";
    } catch (const ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find("need dist_sync"), std::string::npos) << e.what();
    }
  });
}

}  // namespace
}  // namespace loom::ps
