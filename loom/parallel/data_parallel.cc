#include "loom/parallel/data_parallel.h"

#include <cmath>
#include <optional>

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
      slot_of_[p.impl()] = {.bucket = b, .index = bucket.names.size() - 1, .param = p.impl_ptr()};
      offset += p.numel();
      std::weak_ptr<bool> alive = alive_;
      const size_t k = bucket.names.size() - 1;
      autograd::register_hook(p, [this, alive, b, k](const Tensor&) {
        if (auto a = alive.lock(); !a || !*a) return;
        if (options_.deterministic) add_fixed_point(b, k);
        else on_grad_ready(b);
      });
    }
    bucket.added.assign(bucket.names.size(), 0);
    bucket.in_sum.assign(bucket.names.size(), 0);
    bucket.terms.assign(bucket.names.size(), 0);
  }
  if (options_.deterministic) {
    factors_ = std::make_unique<WeightFactors>(std::vector<nn::Module*>{&model_});
    for (size_t b = 0; b < buckets_.size(); ++b) buckets_[b].factored.resize(buckets_[b].names.size());
    for (const Tensor& w : factors_->weights()) {
      const auto it = slot_of_.find(w.impl());
      if (it != slot_of_.end()) buckets_[it->second.bucket].factored[it->second.index] = w;
    }
    sync_ = false;  // the hooks add each final gradient to the fixed-point sums instead
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

// From a parameter's hook (`grad` null: its gradient for this atom is final
// in the bucket, just written, so still in cache; zeroed after) or from the
// backward sink (`grad`: the gradient itself, read once and left as it is; an
// undefined one: final, with nothing dense: only factors this atom).
void DataParallel::add_fixed_point(size_t b, size_t k, const Tensor* grad) {
  Bucket& bucket = buckets_[b];
  const int64_t begin = bucket.offsets[k];
  const int64_t end = k + 1 < bucket.offsets.size() ? bucket.offsets[k + 1] : bucket.flat.numel();
  if (!grad || grad->defined()) {
    // The step's first value assigns: the accumulator is neither read nor zeroed between steps.
    const fixed_point::Mode mode = bucket.in_sum[k] ? fixed_point::Mode::Add : fixed_point::Mode::Assign;
    std::optional<fixed_point::OutOfRange> bad;
    if (grad) {
      Tensor acc = bucket.fixed.as_strided({end - begin}, {1}, begin);
      bad = fixed_point::accumulate(*grad, acc, {.mode = mode, .zero_grad = false});
    } else {
      bad = fixed_point::accumulate(bucket.flat, bucket.fixed, {.mode = mode, .begin = begin, .end = end});
      if (bad) bad->index -= begin;
    }
    bucket.in_sum[k] = 1;
    count_terms(b, k, 1);
    if (bad) note_out_of_range(b, k, *bad);
  }
  const bool first_time = !bucket.added[k];
  bucket.added[k] = 1;
  if (!last_atom_) return;
  // The rank's last atom: the parameter is final, so its factors go into the
  // sums now, and a bucket whose sums are complete goes on the wire while
  // backward goes on (not the last bucket: it carries the out-of-range count,
  // which any later gradient may still raise).
  flush_factors(b, k);
  if (first_time && b + 1 < buckets_.size()) {
    std::lock_guard lock(mu_);
    if (--bucket.pending == 0) {
      is_ready_[b] = true;
      cv_.notify_all();
    }
  }
}

// The terms a linear weight's layers handed over, rounded into its sums in one pass.
void DataParallel::flush_factors(size_t b, size_t k) {
  Bucket& bucket = buckets_[b];
  if (!bucket.factored[k].defined()) return;
  const int64_t terms = factors_->pending(bucket.factored[k]);
  if (terms == 0) return;
  count_terms(b, k, terms);
  const int64_t begin = bucket.offsets[k];
  Tensor acc = bucket.fixed.as_strided({bucket.factored[k].numel()}, {1}, begin);
  const auto bad = factors_->flush(bucket.factored[k], acc,
                                   bucket.in_sum[k] ? fixed_point::Mode::Add : fixed_point::Mode::Assign);
  bucket.in_sum[k] = 1;
  if (bad) note_out_of_range(b, k, *bad);
}

// Every rank adds as many values as this one (the same atoms and model), so
// world x terms bounds the values in one element of the all-reduced sums.
void DataParallel::count_terms(size_t b, size_t k, int64_t terms) {
  int64_t& n = buckets_[b].terms[k];
  n += terms;
  LOOM_CHECK(n * comm_.size <= fixed_point::kMaxAtoms,
             "deterministic data parallelism: {} values a step for each element of '{}' on {} ranks: more than {}, "
             "so the int64 sums could overflow (use fewer deterministic atoms, or a layer fewer times per forward)",
             n * comm_.size, buckets_[b].names[k], comm_.size, fixed_point::kMaxAtoms);
}

void DataParallel::note_out_of_range(size_t b, size_t k, const fixed_point::OutOfRange& bad) {
  buckets_.back().fixed.data<int64_t>()[buckets_.back().flat.numel()] += 1;
  if (!range_error_.empty()) return;
  range_error_ = format("deterministic data parallelism: a gradient of '{}' (element {}) is {} for one atom of the "
                        "batch, outside the exact fixed-point range |g| <= 2^11 - 2^-40 (2^51 - 1 units of 2^-40), so "
                        "the sums would not be exact; the training is diverging or its loss is scaled far up "
                        "(lower [optimizer] lr, or set deterministic = false)", buckets_[b].names[k], bad.index, bad.value);
}

bool DataParallel::take_atom_gradient(const Tensor& leaf, const Tensor& grad) {
  LOOM_CHECK(options_.deterministic, "DataParallel::take_atom_gradient needs the .deterministic option");
  const auto it = slot_of_.find(leaf.impl());
  if (it == slot_of_.end() || it->second.param.lock().get() != leaf.impl()) return false;  // not a parameter of ours
  if (!grad.defined()) {
    add_fixed_point(it->second.bucket, it->second.index, &grad);  // final: only factors
    return true;
  }
  // A gradient that is not a plain array of the parameter's dtype goes the
  // long way (into .grad, then the hook), which converts it.
  if (!grad.is_contiguous() || grad.dtype() != leaf.dtype() || grad.numel() != leaf.numel()) return false;
  add_fixed_point(it->second.bucket, it->second.index, &grad);
  return true;
}

ops::TakeWeightFactors DataParallel::take_weight_factors() {
  LOOM_CHECK(options_.deterministic, "DataParallel::take_weight_factors needs the .deterministic option");
  factors_->clear();  // a step that failed before its sync may have left some
  return ops::TakeWeightFactors(factors_->taker());
}

void DataParallel::begin_last_atom() {
  LOOM_CHECK(options_.deterministic, "DataParallel::begin_last_atom needs the .deterministic option");
  last_atom_ = true;
}

void DataParallel::accumulate_fixed_point() {
  LOOM_CHECK(options_.deterministic, "DataParallel::accumulate_fixed_point needs the .deterministic option");
  LOOM_CHECK(++accumulated_ <= fixed_point::kMaxAtoms,
             "DataParallel: more than {} fixed-point accumulations in one step; the int64 sums could overflow "
             "(use fewer deterministic atoms)", fixed_point::kMaxAtoms);
  // The hooks added every gradient backward finished; what is left (no
  // gradient this atom, or one written without backward) is added here.
  for (size_t b = 0; b < buckets_.size(); ++b) {
    for (size_t k = 0; k < buckets_[b].added.size(); ++k) {
      // (A linear weight whose factors were taken, with no sink to say so, has nothing more.)
      const bool factors_only = buckets_[b].factored[k].defined() && factors_->pending(buckets_[b].factored[k]) > 0;
      if (!buckets_[b].added[k] && !factors_only) add_fixed_point(b, k);
    }
    std::fill(buckets_[b].added.begin(), buckets_[b].added.end(), 0);
  }
}

void DataParallel::finish_gradient_sync() {
  if (options_.deterministic) begin_fixed_point_sync();
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
  if (options_.deterministic) end_fixed_point_sync(err == nullptr);
  if (err) std::rethrow_exception(err);
}

// Parameters that got nothing this step (this rank ran no atom, or none
// reached them) still hold the last step's sums: they go out as zeros.
void DataParallel::begin_fixed_point_sync() {
  for (size_t b = 0; b < buckets_.size(); ++b) {
    for (size_t k = 0; k < buckets_[b].names.size(); ++k) flush_factors(b, k);  // what no last atom flushed
  }
  for (auto& bucket : buckets_) {
    for (size_t k = 0; k < bucket.names.size(); ++k) {
      if (bucket.in_sum[k]) continue;
      const int64_t end = k + 1 < bucket.offsets.size() ? bucket.offsets[k + 1] : bucket.flat.numel();
      std::fill(bucket.fixed.data<int64_t>() + bucket.offsets[k], bucket.fixed.data<int64_t>() + end, 0);
    }
  }
}

void DataParallel::end_fixed_point_sync(bool reduced) {
  accumulated_ = 0;
  last_atom_ = false;
  for (auto& bucket : buckets_) {
    std::fill(bucket.in_sum.begin(), bucket.in_sum.end(), 0);
    std::fill(bucket.terms.begin(), bucket.terms.end(), 0);
  }
  factors_->clear();
  if (buckets_.empty()) return;
  int64_t& out_of_range = buckets_.back().fixed.data<int64_t>()[buckets_.back().flat.numel()];
  const bool failed = out_of_range != 0;
  out_of_range = 0;
  if (!reduced) range_error_.clear();
  if (!reduced) return;
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
