// DataLoader: batches of a Dataset, one epoch at a time, optionally prefetched
// by worker threads.
//
//   auto ds = std::make_shared<data::TensorDataset>(data::load_fashion_mnist());
//   data::DataLoader loader(ds, {.batch_size = 64, .shuffle = true, .seed = 1, .num_workers = 2});
//   for (int64_t epoch = 0; epoch < 10; ++epoch) {
//     for (data::Batch& b : loader.begin(epoch)) { ... }   // b.inputs [64, 1, 28, 28], b.targets [64]
//   }
//   data::LoaderPosition pos = loader.position();   // save with the checkpoint ...
//   loader.set_position(pos);                       // ... and continue with the same batches
//
// Determinism: batch k of epoch e holds the samples sampler.indices(e)[k*B, (k+1)*B),
// transformed with batch_generator(seed, e, k). Nothing depends on the thread
// count or on timing, and batches come back in order.
//
// Iterating: begin() starts (or continues) at position(); when an epoch is
// exhausted the position moves to (epoch + 1, 0), so plain `for (auto& b : loader)`
// in a loop walks through successive epochs. begin(e) is set_epoch(e) + begin().
//
// Threads: num_workers = 0 builds each batch in the caller's thread when asked.
// Otherwise num_workers threads build batches ahead, at most max(prefetch,
// num_workers) batches in flight. Their kernels run single-threaded (the caller's
// OpenMP setting is not shared). An exception in a worker is rethrown by the
// call that reaches that batch; a batch not ready within timeout_ms throws
// TimeoutError. The destructor stops the workers and joins them.
// A DataLoader is used from one thread at a time.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "loom/data/dataset.h"
#include "loom/data/sampler.h"
#include "loom/data/transforms.h"

namespace loom::data {

struct LoaderOptions {
  int64_t batch_size = 1;
  bool shuffle = false;  // ignored when `sampler` is set
  uint64_t seed = 0;     // the shuffle order and the transforms' randomness
  bool drop_last = false;  // drop a last, incomplete batch
  int num_workers = 0;     // prefetch threads; 0 = build batches in the caller's thread
  int prefetch = 2;        // batches in flight (at least num_workers)
  std::shared_ptr<const Sampler> sampler = nullptr;  // overrides shuffle (e.g. a DistributedSampler)
  std::vector<std::shared_ptr<const Transform>> transforms = {};  // applied in order to every batch
  int64_t timeout_ms = 60000;  // longest wait for one batch
};

// Where a loader stands: the next batch it will hand out.
struct LoaderPosition {
  int64_t epoch = 0;
  int64_t next_batch = 0;
  bool operator==(const LoaderPosition&) const = default;
};

class DataLoader {
 public:
  DataLoader(std::shared_ptr<const Dataset> dataset, LoaderOptions options = {});
  ~DataLoader();
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  // Batches per epoch.
  int64_t num_batches() const;
  const LoaderOptions& options() const { return options_; }
  const Dataset& dataset() const { return *dataset_; }

  // The next pass starts at batch 0 of `epoch`.
  void set_epoch(int64_t epoch) { set_position({epoch, 0}); }
  LoaderPosition position() const { return position_; }
  // Throws ValueError unless epoch >= 0 and 0 <= next_batch <= num_batches().
  void set_position(LoaderPosition position);

  // The batch at position() (then advances), or nullopt at the end of the
  // epoch (the position then moves to the next epoch's start).
  std::optional<Batch> next();

  // An input iterator over the rest of the current epoch.
  class Iterator {
   public:
    using value_type = Batch;
    using difference_type = std::ptrdiff_t;
    Iterator() = default;
    Batch& operator*() { return *batch_; }
    Batch* operator->() { return &*batch_; }
    Iterator& operator++() {
      batch_ = loader_->next();
      return *this;
    }
    bool operator==(const Iterator& o) const { return batch_.has_value() == o.batch_.has_value(); }

   private:
    friend class DataLoader;
    explicit Iterator(DataLoader* loader) : loader_(loader), batch_(loader->next()) {}
    DataLoader* loader_ = nullptr;
    std::optional<Batch> batch_;
  };
  // A range whose begin() starts the pass; lets `for (auto& b : loader.begin(epoch))` read well.
  struct EpochRange {
    DataLoader* loader;
    Iterator begin() const { return Iterator(loader); }
    Iterator end() const { return Iterator(); }
  };

  Iterator begin() { return Iterator(this); }
  Iterator end() { return Iterator(); }
  EpochRange begin(int64_t epoch) {
    set_epoch(epoch);
    return EpochRange{this};
  }

 private:
  struct Pass;

  void start_pass();
  void stop_pass();

  std::shared_ptr<const Dataset> dataset_;
  LoaderOptions options_;
  std::shared_ptr<const Sampler> sampler_;
  LoaderPosition position_;
  std::shared_ptr<Pass> pass_;  // the running pipeline, if any
};

}  // namespace loom::data
