#include "loom/parallel/data_parallel.h"

#include <cmath>

#include "loom/autograd/engine.h"
#include "loom/ops/ops.h"
#include "loom/parallel/data_parallel_fixed_point.h"

namespace loom::parallel {

using core::Tensor;

DataParallel::DataParallel(nn::Module& model, comm::Communicator& comm, DataParallelOptions options)
    : model_(model), comm_(comm), options_(options), alive_(std::make_shared<bool>(true)) {
  LOOM_CHECK(options_.bucket_bytes > 0 && options_.first_bucket_bytes > 0, "DataParallel: bucket sizes must be positive");
  if (options_.broadcast_parameters && comm_.size > 1) {
    autograd::NoGradGuard no_grad;
    for (auto& [name, t] : model_.state_dict()) {
      Tensor x = t;
      if (!core::is_floating(x.dtype()) && x.dtype() != core::DType::I64) continue;
      comm::broadcast(comm_, x, 0, {.timeout = options_.timeout});
    }
  }

  // Reverse registration order: roughly the order backward finishes gradients.
  nn::NamedTensors params = model_.named_parameters();
  std::vector<std::pair<std::string, Tensor>> order(params.rbegin(), params.rend());
  std::vector<std::vector<size_t>> groups;
  size_t bytes = 0, limit = options_.first_bucket_bytes;
  core::DType dtype = order.empty() ? core::DType::F32 : order.front().second.dtype();
  for (size_t i = 0; i < order.size(); ++i) {
    const Tensor& p = order[i].second;
    LOOM_CHECK(p.dtype() == dtype, "DataParallel: parameters must share one dtype ('{}' is {}, others {})",
               order[i].first, p.dtype(), dtype);
    LOOM_CHECK(p.is_contiguous(), "DataParallel: parameter '{}' is not contiguous", order[i].first);
    if (groups.empty() || (bytes > 0 && bytes + p.nbytes() > limit)) {
      if (!groups.empty()) limit = options_.bucket_bytes;
      groups.emplace_back();
      bytes = 0;
    }
    groups.back().push_back(i);
    bytes += p.nbytes();
  }
  buckets_.resize(groups.size());
  for (size_t b = 0; b < groups.size(); ++b) {
    int64_t numel = 0;
    for (size_t i : groups[b]) numel += order[i].second.numel();
    Bucket& bucket = buckets_[b];
    bucket.flat = ops::zeros({numel}, dtype);
    int64_t offset = 0;
    for (size_t i : groups[b]) {
      Tensor p = order[i].second;
      // .grad becomes a view into the bucket: backward accumulates in place into it.
      Tensor view = bucket.flat.as_strided(p.shape(), core::contiguous_strides(p.shape()), offset);
      if (p.grad().defined()) ops::copy_(view, p.grad());
      p.set_grad(view);
      bucket.names.push_back(order[i].first);
      bucket.offsets.push_back(offset);
      offset += p.numel();
      std::weak_ptr<bool> alive = alive_;
      autograd::register_hook(p, [this, alive, b](const Tensor&) {
        if (auto a = alive.lock(); a && *a) on_grad_ready(b);
      });
    }
  }
  if (options_.deterministic) {
    sync_ = false;  // gradients reach the wire through accumulate_fixed_point(), not the hooks
    // The last bucket's accumulator has one more element: the count of
    // out-of-range gradients, summed with the rest so every rank learns of one.
    for (size_t b = 0; b < buckets_.size(); ++b) {
      const int64_t extra = b + 1 == buckets_.size() ? 1 : 0;
      buckets_[b].fixed = ops::zeros({buckets_[b].flat.numel() + extra}, core::DType::I64);
    }
  }
  is_ready_.assign(buckets_.size(), false);
  reset_pass();
  comm_thread_ = std::thread([this] { comm_loop(); });
}

DataParallel::~DataParallel() {
  *alive_ = false;
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (comm_thread_.joinable()) comm_thread_.join();
}

std::vector<std::vector<std::string>> DataParallel::bucket_layout() const {
  std::vector<std::vector<std::string>> out;
  for (const auto& b : buckets_) out.push_back(b.names);
  return out;
}

void DataParallel::reset_pass() {
  for (auto& b : buckets_) b.pending = static_cast<int>(b.names.size());
  std::fill(is_ready_.begin(), is_ready_.end(), false);
  next_to_reduce_ = 0;
  reduced_ = 0;
}

void DataParallel::on_grad_ready(size_t b) {
  if (!sync_) return;
  std::lock_guard lock(mu_);
  if (--buckets_[b].pending == 0) {
    is_ready_[b] = true;
    cv_.notify_all();
  }
}

void DataParallel::comm_loop() {
  for (;;) {
    size_t b;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return stop_ || (next_to_reduce_ < buckets_.size() && is_ready_[next_to_reduce_]); });
      if (stop_) return;
      b = next_to_reduce_++;
    }
    try {
      if (!error_) {
        Bucket& bucket = buckets_[b];
        if (options_.deterministic && comm_.size > 1) {
          // Integer sums are associative: any algorithm gives the same bits.
          comm::allreduce(comm_, bucket.fixed, {.op = comm::ReduceOp::Sum, .algorithm = options_.algorithm,
                                                .timeout = options_.timeout});
        } else if (!options_.deterministic && comm_.size > 1) {
          comm::allreduce(comm_, bucket.flat, {.op = comm::ReduceOp::Sum, .algorithm = options_.algorithm,
                                               .timeout = options_.timeout});
        }
      }
    } catch (...) {
      std::lock_guard lock(mu_);
      if (!error_) error_ = std::current_exception();
    }
    {
      std::lock_guard lock(mu_);
      ++reduced_;
    }
    cv_.notify_all();
  }
}

void DataParallel::accumulate_fixed_point() {
  LOOM_CHECK(options_.deterministic, "DataParallel::accumulate_fixed_point needs the .deterministic option");
  LOOM_CHECK(++accumulated_ <= fixed_point::kMaxAtoms,
             "DataParallel: more than {} fixed-point accumulations in one step; the int64 sums could overflow "
             "(use fewer deterministic atoms)", fixed_point::kMaxAtoms);
  for (auto& bucket : buckets_) {
    const auto bad = fixed_point::accumulate(bucket.flat, bucket.fixed);
    if (!bad) continue;
    buckets_.back().fixed.data<int64_t>()[buckets_.back().flat.numel()] += 1;
    if (!range_error_.empty()) continue;
    size_t p = 0;
    while (p + 1 < bucket.offsets.size() && bucket.offsets[p + 1] <= bad->index) ++p;
    range_error_ = format("deterministic data parallelism: a gradient of '{}' (element {}) is {} for one atom of the "
                          "batch, outside the exact fixed-point range |g| <= 2^11 - 2^-40 (2^51 - 1 units of 2^-40), so "
                          "the sums would not be exact; the training is diverging or its loss is scaled far up "
                          "(lower [optimizer] lr, or set deterministic = false)", bucket.names[p],
                          bad->index - bucket.offsets[p], bad->value);
  }
}

void DataParallel::finish_gradient_sync() {
  {
    // Buckets whose parameters received no gradient this pass still go out
    // (as zeros), so every rank reduces every bucket in the same order.
    std::lock_guard lock(mu_);
    for (size_t b = 0; b < buckets_.size(); ++b) is_ready_[b] = true;
  }
  cv_.notify_all();
  std::exception_ptr err;
  {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return reduced_ == buckets_.size(); });
    err = error_;
    error_ = nullptr;
    reset_pass();
  }
  if (err) std::rethrow_exception(err);
  if (options_.deterministic) finish_fixed_point();
}

void DataParallel::finish_fixed_point() {
  accumulated_ = 0;
  if (buckets_.empty()) return;
  int64_t& out_of_range = buckets_.back().fixed.data<int64_t>()[buckets_.back().flat.numel()];
  const bool failed = out_of_range != 0;
  out_of_range = 0;
  for (auto& bucket : buckets_) fixed_point::to_float(bucket.fixed, bucket.flat);
  if (!failed) return;
  std::string message = std::move(range_error_);
  range_error_.clear();
  if (message.empty()) {
    message = "deterministic data parallelism: a gradient on another rank is outside the exact fixed-point range "
              "|g| <= 2^11 - 2^-40 (that rank's error names it), so the sums would not be exact";
  }
  throw ValueError(message);
}

}  // namespace loom::parallel
