#include "loom/data/loader.h"

#include <atomic>
#include <chrono>
#include <thread>

#include <gtest/gtest.h>

#include "loom/core/error.h"
#include "loom/ops/ops.h"

namespace loom::data {
namespace {

using core::DType;
using Batches = std::vector<std::vector<int64_t>>;  // the targets of each batch

// Sample i has input [i, -i] and target i, so a batch's targets name its samples.
std::shared_ptr<TensorDataset> numbered(int64_t n) {
  std::vector<float> x;
  for (int64_t i = 0; i < n; ++i) x.insert(x.end(), {static_cast<float>(i), static_cast<float>(-i)});
  return std::make_shared<TensorDataset>(Tensor::from_vector<float>(x, {n, 2}),
                                         ops::arange(0, static_cast<double>(n), 1, DType::I64));
}

Batches run_epoch(DataLoader& loader, int64_t epoch) {
  Batches out;
  for (Batch& b : loader.begin(epoch)) {
    EXPECT_EQ(b.inputs.size(0), b.targets.size(0));
    auto t = b.targets.to_vector<int64_t>();
    auto x = b.inputs.to_vector<float>();
    for (size_t i = 0; i < t.size(); ++i) EXPECT_EQ(x[2 * i], static_cast<float>(t[i]));
    out.push_back(std::move(t));
  }
  return out;
}

// Built by get(): slow, with a per-index delay that scrambles completion order.
class SlowDataset : public Dataset {
 public:
  SlowDataset(int64_t n, int64_t fail_at = -1, int sleep_ms_at_fail = 0)
      : n_(n), fail_at_(fail_at), sleep_ms_at_fail_(sleep_ms_at_fail) {}
  int64_t size() const override { return n_; }
  Sample get(int64_t i) const override {
    std::this_thread::sleep_for(std::chrono::microseconds((i * 7919) % 5 * 300));
    if (i == fail_at_) {
      if (sleep_ms_at_fail_ > 0) {
        std::this_thread::sleep_for(std::chrono::milliseconds(sleep_ms_at_fail_));
      } else {
        throw IoError(format("SlowDataset: sample {} is unreadable", i));
      }
    }
    return {Tensor::from_vector<float>({static_cast<float>(i), static_cast<float>(-i)}, {2}),
            Tensor::scalar<int64_t>(i)};
  }

 private:
  int64_t n_, fail_at_;
  int sleep_ms_at_fail_;
};

TEST(DataLoader, SequentialBatchesAndLastPartialBatch) {
  DataLoader loader(numbered(10), {.batch_size = 4});
  EXPECT_EQ(loader.num_batches(), 3);
  Batches b = run_epoch(loader, 0);
  EXPECT_EQ(b, (Batches{{0, 1, 2, 3}, {4, 5, 6, 7}, {8, 9}}));
}

TEST(DataLoader, DropLast) {
  DataLoader loader(numbered(10), {.batch_size = 4, .shuffle = true, .seed = 3, .drop_last = true});
  EXPECT_EQ(loader.num_batches(), 2);
  Batches b = run_epoch(loader, 0);
  ASSERT_EQ(b.size(), 2u);
  for (const auto& x : b) EXPECT_EQ(x.size(), 4u);
  DataLoader exact(numbered(8), {.batch_size = 4, .drop_last = true});
  EXPECT_EQ(exact.num_batches(), 2);
  DataLoader tiny(numbered(3), {.batch_size = 4, .drop_last = true});
  EXPECT_EQ(tiny.num_batches(), 0);
  EXPECT_TRUE(run_epoch(tiny, 0).empty());
}

TEST(DataLoader, SameSeedSameBatchesForAnyWorkerCount) {
  auto ds = numbered(103);
  Batches reference;
  for (int workers : {0, 1, 2, 3}) {
    for (int prefetch : {1, 2, 5}) {
      DataLoader loader(ds, {.batch_size = 8, .shuffle = true, .seed = 77, .num_workers = workers,
                             .prefetch = prefetch});
      Batches b0 = run_epoch(loader, 0);
      Batches b1 = run_epoch(loader, 1);
      EXPECT_NE(b0, b1) << "epochs are shuffled differently";
      b0.insert(b0.end(), b1.begin(), b1.end());
      if (reference.empty()) {
        reference = b0;
      } else {
        EXPECT_EQ(b0, reference) << "workers=" << workers << " prefetch=" << prefetch;
      }
    }
  }
  // Every sample once per epoch.
  std::vector<int64_t> all;
  for (size_t i = 0; i < 13; ++i) all.insert(all.end(), reference[i].begin(), reference[i].end());
  std::sort(all.begin(), all.end());
  for (int64_t i = 0; i < 103; ++i) EXPECT_EQ(all[static_cast<size_t>(i)], i);

  DataLoader other(ds, {.batch_size = 8, .shuffle = true, .seed = 78});
  EXPECT_NE(run_epoch(other, 0), Batches(reference.begin(), reference.begin() + 13));
}

TEST(DataLoader, OrderKeptWithSlowUnevenWorkers) {
  auto ds = std::make_shared<SlowDataset>(60);
  DataLoader seq(ds, {.batch_size = 3, .shuffle = true, .seed = 5});
  DataLoader par(ds, {.batch_size = 3, .shuffle = true, .seed = 5, .num_workers = 3, .prefetch = 6});
  EXPECT_EQ(run_epoch(par, 2), run_epoch(seq, 2));
}

TEST(DataLoader, EpochsAdvanceOnTheirOwn) {
  auto ds = numbered(9);
  DataLoader a(ds, {.batch_size = 4, .shuffle = true, .seed = 1, .num_workers = 2});
  DataLoader b(ds, {.batch_size = 4, .shuffle = true, .seed = 1});
  for (int64_t e = 0; e < 3; ++e) {
    Batches got;
    for (Batch& batch : a) got.push_back(batch.targets.to_vector<int64_t>());
    EXPECT_EQ(got, run_epoch(b, e));
    EXPECT_EQ(a.position(), (LoaderPosition{e + 1, 0}));
  }
}

TEST(DataLoader, PositionSaveAndRestore) {
  auto ds = numbered(50);
  for (int workers : {0, 2}) {
    LoaderOptions o{.batch_size = 4, .shuffle = true, .seed = 21, .num_workers = workers};
    DataLoader full(ds, o);
    Batches epoch1 = run_epoch(full, 1);
    Batches epoch2 = run_epoch(full, 2);

    DataLoader first(ds, o);
    first.set_epoch(1);
    Batches seen;
    for (int i = 0; i < 5; ++i) seen.push_back(first.next()->targets.to_vector<int64_t>());
    const LoaderPosition saved = first.position();
    EXPECT_EQ(saved, (LoaderPosition{1, 5}));

    DataLoader resumed(ds, o);  // a fresh process, say
    resumed.set_position(saved);
    for (Batch& b : resumed) seen.push_back(b.targets.to_vector<int64_t>());
    EXPECT_EQ(seen, epoch1) << "workers=" << workers;
    EXPECT_EQ(resumed.position(), (LoaderPosition{2, 0}));
    Batches next_epoch;
    for (Batch& b : resumed) next_epoch.push_back(b.targets.to_vector<int64_t>());
    EXPECT_EQ(next_epoch, epoch2);

    // Jumping around within one loader, including back to the start of an epoch.
    first.set_position({1, 12});
    EXPECT_EQ(first.next()->targets.to_vector<int64_t>(), epoch1[12]);
    first.set_position({1, 0});
    EXPECT_EQ(first.next()->targets.to_vector<int64_t>(), epoch1[0]);
    first.set_position({1, 13});  // the end of epoch 1
    EXPECT_FALSE(first.next().has_value());
    EXPECT_EQ(first.position(), (LoaderPosition{2, 0}));
  }
  DataLoader l(ds, {.batch_size = 4});
  EXPECT_THROW(l.set_position({0, 14}), ValueError);
  EXPECT_THROW(l.set_position({-1, 0}), ValueError);
}

TEST(DataLoader, WorkerExceptionReachesCaller) {
  for (int workers : {0, 1, 3}) {
    auto ds = std::make_shared<SlowDataset>(40, /*fail_at=*/17);
    DataLoader loader(ds, {.batch_size = 4, .num_workers = workers, .timeout_ms = 10000});
    int64_t got = 0;
    try {
      for (Batch& b : loader) {
        (void)b;
        ++got;
      }
      FAIL() << "expected the dataset's IoError";
    } catch (const IoError& e) {
      EXPECT_NE(std::string(e.what()).find("sample 17"), std::string::npos);
    }
    EXPECT_EQ(got, 4) << "batches 0-3 arrive, batch 4 holds sample 17";
    EXPECT_EQ(loader.position(), (LoaderPosition{0, 4}));
    EXPECT_THROW(loader.next(), IoError);  // retrying the same batch fails the same way
    loader.set_position({0, 5});           // skipping it works
    EXPECT_EQ(loader.next()->targets.to_vector<int64_t>(), (std::vector<int64_t>{20, 21, 22, 23}));
  }
}

TEST(DataLoader, SlowBatchTimesOut) {
  auto ds = std::make_shared<SlowDataset>(8, /*fail_at=*/2, /*sleep_ms_at_fail=*/400);
  auto start = std::chrono::steady_clock::now();
  {
    DataLoader loader(ds, {.batch_size = 2, .num_workers = 2, .timeout_ms = 50});
    EXPECT_EQ(loader.next()->targets.to_vector<int64_t>(), (std::vector<int64_t>{0, 1}));
    EXPECT_THROW(loader.next(), TimeoutError);
    EXPECT_EQ(loader.position(), (LoaderPosition{0, 1}));
  }  // the destructor waits for the slow batch to finish, then joins
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(ms, 5000);
}

TEST(DataLoader, DestroyMidEpochJoinsWorkers) {
  auto ds = std::make_shared<SlowDataset>(200);
  for (int i = 0; i < 5; ++i) {
    DataLoader loader(ds, {.batch_size = 2, .shuffle = true, .num_workers = 3, .prefetch = 8});
    loader.next();
  }
  SUCCEED();
}

TEST(DataLoader, DistributedSamplerGivesEveryRankTheSameBatchCount) {
  auto ds = numbered(101);
  std::vector<int64_t> counts;
  std::vector<int64_t> seen;
  for (int64_t rank = 0; rank < 4; ++rank) {
    auto sampler = std::make_shared<DistributedSampler>(
        ds->size(), DistributedSamplerOptions{.num_replicas = 4, .rank = rank, .seed = 8});
    DataLoader loader(ds, {.batch_size = 5, .num_workers = 1, .sampler = sampler});
    Batches b = run_epoch(loader, 3);
    counts.push_back(static_cast<int64_t>(b.size()));
    EXPECT_EQ(static_cast<int64_t>(b.size()), loader.num_batches());
    for (auto& x : b) seen.insert(seen.end(), x.begin(), x.end());
  }
  EXPECT_EQ(counts, (std::vector<int64_t>(4, 6)));  // 26 samples per rank -> 6 batches
  std::sort(seen.begin(), seen.end());
  seen.erase(std::unique(seen.begin(), seen.end()), seen.end());
  EXPECT_EQ(seen.size(), 101u);
}

// Adds a random value per sample, to check the transform's generator.
class AddNoise : public Transform {
 public:
  void apply(Batch& b, core::Generator& gen) const override {
    Tensor noise = ops::rand(b.inputs.shape(), gen);
    b.inputs = ops::add(b.inputs, noise);
  }
};

TEST(DataLoader, TransformsAreDeterministicAcrossWorkerCounts) {
  auto ds = numbered(30);
  std::vector<float> reference;
  for (int workers : {0, 1, 3}) {
    DataLoader loader(ds, {.batch_size = 4, .shuffle = true, .seed = 2, .num_workers = workers,
                           .transforms = {std::make_shared<AddNoise>()}});
    std::vector<float> all;
    for (Batch& b : loader.begin(1)) {
      auto v = b.inputs.to_vector<float>();
      all.insert(all.end(), v.begin(), v.end());
    }
    if (reference.empty()) reference = all;
    EXPECT_EQ(all, reference) << "workers=" << workers;
  }
  DataLoader other_epoch(ds, {.batch_size = 4, .shuffle = true, .seed = 2,
                              .transforms = {std::make_shared<AddNoise>()}});
  other_epoch.set_position({1, 3});
  auto v = other_epoch.next()->inputs.to_vector<float>();
  EXPECT_EQ(v, std::vector<float>(reference.begin() + 24, reference.begin() + 32)) << "resume gives the same noise";
}

TEST(DataLoader, BadOptions) {
  auto ds = numbered(4);
  EXPECT_THROW(DataLoader(ds, {.batch_size = 0}), ValueError);
  EXPECT_THROW(DataLoader(ds, {.num_workers = -1}), ValueError);
  EXPECT_THROW(DataLoader(ds, {.timeout_ms = 0}), ValueError);
  EXPECT_THROW(DataLoader(nullptr, {}), ValueError);
  // A sampler whose indices do not fit the dataset.
  DataLoader wrong(ds, {.sampler = std::make_shared<SequentialSampler>(5)});
  EXPECT_THROW(wrong.next(), IndexError);
}

}  // namespace
}  // namespace loom::data
