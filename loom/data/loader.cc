#include "loom/data/loader.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <map>
#include <mutex>
#include <thread>

#include "loom/core/error.h"
#include "loom/core/parallel.h"
#include "loom/data/seeding.h"

namespace loom::data {

// One pass over (the rest of) an epoch: the epoch's order and, with workers,
// the threads that build batches ahead of the caller. Workers claim batches in
// increasing index order, at most `in_flight` ahead of the consumer, and park
// results in `ready` keyed by batch index; the consumer takes them in order.
struct DataLoader::Pass {
  // Immutable after construction (read by workers without the lock).
  std::shared_ptr<const Dataset> dataset;
  std::vector<std::shared_ptr<const Transform>> transforms;
  std::vector<int64_t> order;
  int64_t epoch = 0, batch_size = 1, num_batches = 0, in_flight = 1;
  uint64_t seed = 0;

  std::mutex mu;
  std::condition_variable ready_cv;  // a batch was parked
  std::condition_variable space_cv;  // the consumer took one, or stop
  int64_t next_claim = 0;    // next batch a worker will build
  int64_t next_consume = 0;  // next batch the consumer takes
  bool stop = false;
  struct Result {
    Batch batch;
    std::exception_ptr error;
  };
  std::map<int64_t, Result> ready;
  std::vector<std::thread> workers;

  Batch build(int64_t b) const {
    const int64_t lo = b * batch_size;
    const int64_t hi = std::min<int64_t>(lo + batch_size, static_cast<int64_t>(order.size()));
    std::vector<int64_t> idx(order.begin() + lo, order.begin() + hi);
    Batch batch = dataset->get_batch(idx);
    if (!transforms.empty()) {
      core::Generator gen = batch_generator(seed, epoch, b);
      for (const auto& t : transforms) t->apply(batch, gen);
    }
    return batch;
  }

  void work() {
    // Batches are built in parallel already; nested OpenMP teams would only
    // oversubscribe the cores. This setting is per thread.
    core::set_num_threads(1);
    for (;;) {
      int64_t b = 0;
      {
        std::unique_lock lk(mu);
        space_cv.wait(lk, [&] { return stop || next_claim >= num_batches || next_claim < next_consume + in_flight; });
        if (stop || next_claim >= num_batches) return;
        b = next_claim++;
      }
      Result r;
      try {
        r.batch = build(b);
      } catch (...) {
        r.error = std::current_exception();
      }
      {
        std::lock_guard lk(mu);
        ready.emplace(b, std::move(r));
      }
      ready_cv.notify_all();
    }
  }
};

DataLoader::DataLoader(std::shared_ptr<const Dataset> dataset, LoaderOptions options)
    : dataset_(std::move(dataset)), options_(std::move(options)) {
  LOOM_CHECK(dataset_ != nullptr, "DataLoader: dataset is null");
  LOOM_CHECK(options_.batch_size >= 1, "DataLoader: batch_size must be >= 1, got {}", options_.batch_size);
  LOOM_CHECK(options_.num_workers >= 0, "DataLoader: num_workers must be >= 0, got {}", options_.num_workers);
  LOOM_CHECK(options_.prefetch >= 0, "DataLoader: prefetch must be >= 0, got {}", options_.prefetch);
  LOOM_CHECK(options_.timeout_ms > 0, "DataLoader: timeout_ms must be > 0, got {}", options_.timeout_ms);
  for (size_t i = 0; i < options_.transforms.size(); ++i) {
    LOOM_CHECK(options_.transforms[i] != nullptr, "DataLoader: transform {} is null", i);
  }
  if (options_.sampler) {
    sampler_ = options_.sampler;
  } else if (options_.shuffle) {
    sampler_ = std::make_shared<RandomSampler>(dataset_->size(), options_.seed);
  } else {
    sampler_ = std::make_shared<SequentialSampler>(dataset_->size());
  }
}

DataLoader::~DataLoader() { stop_pass(); }

int64_t DataLoader::num_batches() const {
  const int64_t n = sampler_->size(), b = options_.batch_size;
  return options_.drop_last ? n / b : (n + b - 1) / b;
}

void DataLoader::set_position(LoaderPosition position) {
  LOOM_CHECK(position.epoch >= 0, "DataLoader::set_position: epoch must be >= 0, got {}", position.epoch);
  LOOM_CHECK(position.next_batch >= 0 && position.next_batch <= num_batches(),
             "DataLoader::set_position: batch {} out of range [0, {}] for epoch {}", position.next_batch,
             num_batches(), position.epoch);
  if (!(position == position_)) stop_pass();
  position_ = position;
}

void DataLoader::stop_pass() {
  if (!pass_) return;
  {
    std::lock_guard lk(pass_->mu);
    pass_->stop = true;
  }
  pass_->space_cv.notify_all();
  for (auto& t : pass_->workers) {
    if (t.joinable()) t.join();
  }
  pass_.reset();
}

void DataLoader::start_pass() {
  stop_pass();
  auto pass = std::make_shared<Pass>();
  pass->dataset = dataset_;
  pass->transforms = options_.transforms;
  pass->order = sampler_->indices(position_.epoch);
  LOOM_CHECK(static_cast<int64_t>(pass->order.size()) == sampler_->size(),
             "DataLoader: sampler returned {} indices for epoch {}, but its size() is {}", pass->order.size(),
             position_.epoch, sampler_->size());
  check_indices(pass->order, dataset_->size(), "DataLoader (sampler)");
  pass->epoch = position_.epoch;
  pass->batch_size = options_.batch_size;
  pass->num_batches = num_batches();
  pass->seed = options_.seed;
  pass->in_flight = std::max<int64_t>({1, options_.prefetch, options_.num_workers});
  pass->next_claim = pass->next_consume = position_.next_batch;
  pass_ = pass;
  const int64_t workers = std::min<int64_t>(options_.num_workers, pass->num_batches - position_.next_batch);
  try {
    for (int64_t w = 0; w < workers; ++w) pass->workers.emplace_back([p = pass.get()] { p->work(); });
  } catch (...) {
    stop_pass();
    throw;
  }
}

std::optional<Batch> DataLoader::next() {
  const int64_t b = position_.next_batch;
  if (b >= num_batches()) {
    stop_pass();
    position_ = {position_.epoch + 1, 0};
    return std::nullopt;
  }
  if (!pass_ || pass_->epoch != position_.epoch || pass_->next_consume != b) start_pass();

  if (options_.num_workers == 0) {
    Batch batch = pass_->build(b);  // throws straight to the caller
    pass_->next_consume = ++position_.next_batch;
    return batch;
  }

  Pass& p = *pass_;
  Pass::Result r;
  {
    std::unique_lock lk(p.mu);
    const bool got = p.ready_cv.wait_for(lk, std::chrono::milliseconds(options_.timeout_ms),
                                         [&] { return p.ready.count(b) > 0; });
    if (!got) {
      throw TimeoutError(format("DataLoader: batch {} of epoch {} was not ready after {} ms ({} workers); raise "
                                "LoaderOptions::timeout_ms if the dataset is this slow",
                                b, position_.epoch, options_.timeout_ms, options_.num_workers));
    }
    auto node = p.ready.extract(b);
    r = std::move(node.mapped());
    p.next_consume = b + 1;
  }
  p.space_cv.notify_all();
  if (r.error) {
    // Stop building further batches; the position stays at the failed batch,
    // so calling next() again retries it.
    stop_pass();
    std::rethrow_exception(r.error);
  }
  ++position_.next_batch;
  return std::move(r.batch);
}

}  // namespace loom::data
