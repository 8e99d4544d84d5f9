#include "loom/ps/shard.h"

#include <algorithm>
#include <array>
#include <cstring>

#include "loom/comm/collectives/reduce_kernels.h"
#include "loom/core/error.h"
#include "loom/optim/fixed_point.h"
#include "loom/ps/placement.h"

namespace loom::ps {

Payload Payload::copy_of(std::span<const std::byte> bytes) {
  auto buf = std::make_shared<std::vector<std::byte>>(bytes.begin(), bytes.end());
  return {buf, std::span<const std::byte>(buf->data(), buf->size())};
}

std::shared_ptr<const ServerOptimizer> make_server_optimizer(const optim::OptimizerSpec& spec) {
  return std::make_shared<const ServerOptimizer>(
      ServerOptimizer{.spec = spec, .rule = optim::make_update_rule(spec), .schedule = optim::make_schedule(spec)});
}

Shard::Shard(const ShardOptions& o) : o_(o) {
  LOOM_CHECK_T(TypeError, o.dtype == core::DType::F32 || o.dtype == core::DType::F64,
               "kvstore: key {}: dtype {} is not supported by parameter servers (f32, f64)", o.key, core::name(o.dtype));
  LOOM_CHECK(o.num_workers >= 1, "kvstore: shard needs at least one worker");
  row_numel_ = key_row_numel(o.key_shape);
  row_bytes_ = static_cast<size_t>(row_numel_) * core::itemsize(o.dtype);
  weights_.assign(static_cast<size_t>(o.num_rows) * row_bytes_, std::byte{0});
  versions_.assign(static_cast<size_t>(o.num_workers), 0);
  pending_.resize(static_cast<size_t>(o.num_workers));
  retired_.assign(static_cast<size_t>(o.num_workers), false);
}

void Shard::check_request(const SliceRequest& r) const {
  LOOM_CHECK(r.key == o_.key, "kvstore: a request about key {} reached the slice of key {}", r.key, o_.key);
  if (r.shape) {
    LOOM_CHECK_T(ShapeError, *r.shape == o_.key_shape, "kvstore: key {} has shape {}, the request says {}", o_.key,
                 core::to_string(o_.key_shape), core::to_string(*r.shape));
  }
  LOOM_CHECK_T(TypeError, r.dtype == o_.dtype, "kvstore: key {} holds {}, the request has {}", o_.key,
               core::name(o_.dtype), core::name(r.dtype));
  LOOM_CHECK_T(ShapeError, r.total_rows == key_rows(o_.key_shape) && r.row_numel == row_numel_,
               "kvstore: key {} has shape {}; the request describes {} rows of {} elements", o_.key,
               core::to_string(o_.key_shape), r.total_rows, r.row_numel);
  LOOM_CHECK_T(ShapeError, r.row_begin == o_.row_begin && r.num_rows == o_.num_rows,
               "kvstore: key {}: this server holds rows [{}, {}), the request is about rows [{}, {})", o_.key,
               o_.row_begin, o_.row_begin + o_.num_rows, r.row_begin, r.row_begin + r.num_rows);
}

void Shard::init(std::span<const std::byte> value) {
  LOOM_CHECK_T(ShapeError, value.size() == weights_.size(), "kvstore: init of key {}: {} bytes for a slice of {}",
               o_.key, value.size(), weights_.size());
  std::memcpy(weights_.data(), value.data(), value.size());
  initialized_ = true;
}

void Shard::set_optimizer(std::shared_ptr<const ServerOptimizer> optimizer) {
  const bool same_slots = optimizer_ && optimizer && optimizer_->rule->state_names() == optimizer->rule->state_names();
  optimizer_ = std::move(optimizer);
  if (!same_slots) state_.clear();  // a different rule starts from zero state
}

void Shard::ensure_state() {
  if (!optimizer_ || state_.size() == optimizer_->rule->num_state_slots()) return;
  state_.clear();  // each slot its own zeroed block (copying one would touch every page)
  for (size_t k = 0; k < optimizer_->rule->num_state_slots(); ++k) state_.emplace_back(weights_.size());
}

void Shard::check_rows(std::span<const int64_t> rows, bool need_sorted_unique) const {
  for (size_t i = 0; i < rows.size(); ++i) {
    LOOM_CHECK_T(IndexError, rows[i] >= o_.row_begin && rows[i] < o_.row_begin + o_.num_rows,
                 "kvstore: key {}: row {} is not in this server's rows [{}, {})", o_.key, rows[i], o_.row_begin,
                 o_.row_begin + o_.num_rows);
    LOOM_CHECK_T(IndexError, !need_sorted_unique || i == 0 || rows[i] > rows[i - 1],
                 "kvstore: key {}: row ids of a sparse push must be ascending and unique ({} after {})", o_.key,
                 rows[i], rows[i - 1]);
  }
}

void Shard::check_push(int worker, int64_t version, const PushData& data) const {
  LOOM_CHECK_T(ValueError, initialized_, "kvstore: push to key {} before init", o_.key);
  LOOM_CHECK(worker >= 0 && worker < o_.num_workers, "kvstore: push from worker {} of {}", worker, o_.num_workers);
  if (data.sparse()) {
    check_rows(*data.rows, true);
    LOOM_CHECK_T(ShapeError, data.data.bytes.size() == data.rows->size() * row_bytes_,
                 "kvstore: sparse push to key {}: {} bytes for {} rows of {} bytes", o_.key, data.data.bytes.size(),
                 data.rows->size(), row_bytes_);
  } else {
    const size_t want = data.fixed_point ? weights_.size() / core::itemsize(o_.dtype) * 8 : weights_.size();
    LOOM_CHECK_T(ShapeError, data.data.bytes.size() == want, "kvstore: {}push to key {}: {} bytes for a slice of {}",
                 data.fixed_point ? "fixed-point " : "", o_.key, data.data.bytes.size(), want);
  }
  LOOM_CHECK(!data.fixed_point || (o_.sync && !data.sparse()),
             "kvstore: key {}: a fixed-point push (deterministic mode) must be dense and needs dist_sync, whose "
             "rounds add every worker's push; this server applies each push on arrival", o_.key);
  if (version <= versions_[static_cast<size_t>(worker)] || !o_.sync) return;  // a duplicate, or async
  for (size_t u = 0; u < pending_.size(); ++u) {
    LOOM_CHECK(!pending_[u] || pending_[u]->fixed_point == data.fixed_point,
               "kvstore: key {}: worker {} pushes {} while worker {} pushed {} in this round (in deterministic mode "
               "every worker pushes fixed point)", o_.key, worker, data.fixed_point ? "fixed point" : "floats", u,
               pending_[u]->fixed_point ? "fixed point" : "floats");
  }
  LOOM_CHECK(version == round_ + 1, "kvstore: key {}: worker {} pushes round {} while the server is at round {}",
             o_.key, worker, version, round_ + 1);
  LOOM_CHECK(!retired_[static_cast<size_t>(worker)], "kvstore: key {}: worker {} pushed after it left the job", o_.key,
             worker);
}

PushResult Shard::push(int worker, int64_t version, PushData data) {
  check_push(worker, version, data);
  auto& seen = versions_[static_cast<size_t>(worker)];
  if (version <= seen) return PushResult::Duplicate;
  if (o_.sync) {
    auto& slot = pending_[static_cast<size_t>(worker)];
    if (!slot) ++pending_count_;
    slot = std::move(data);
    if (pending_count_ < active_workers()) return PushResult::Pending;
    merge_round();
    complete_round();
  } else {
    merged_sparse_ = data.sparse();
    merged_rows_ = data.sparse() ? *data.rows : std::vector<int64_t>{};
    merged_.assign(data.data.bytes.begin(), data.data.bytes.end());
    seen = version;
    last_worker_ = worker;
    last_version_ = version;
  }
  finish_update();
  return PushResult::Applied;
}

PushResult Shard::retire(int worker) {
  LOOM_CHECK(worker >= 0 && worker < o_.num_workers, "kvstore: worker {} of {} left", worker, o_.num_workers);
  if (retired_[static_cast<size_t>(worker)]) return PushResult::Duplicate;
  retired_[static_cast<size_t>(worker)] = true;
  // A round that only waited for this worker completes without it.
  if (!o_.sync || pending_count_ == 0 || pending_count_ < active_workers()) return PushResult::Pending;
  merge_round();
  complete_round();
  finish_update();
  return PushResult::Applied;
}

// Every worker's push of this round is now counted (a replay of it is a duplicate).
void Shard::complete_round() {
  ++round_;
  for (auto& v : versions_) v = round_;
}

int Shard::active_workers() const {
  return static_cast<int>(std::count(retired_.begin(), retired_.end(), false));
}

void Shard::finish_update() {
  // Scale once here, so that what replicas receive is exactly what the rule sees.
  if (optimizer_ && optimizer_->spec.rescale_grad != 1.0) {
    const double s = optimizer_->spec.rescale_grad;
    if (o_.dtype == core::DType::F32) {
      auto* p = reinterpret_cast<float*>(merged_.data());
      for (size_t i = 0; i < merged_.size() / 4; ++i) p[i] = static_cast<float>(p[i] * s);
    } else {
      auto* p = reinterpret_cast<double*>(merged_.data());
      for (size_t i = 0; i < merged_.size() / 8; ++i) p[i] *= s;
    }
  }
  apply(merged_sparse_ ? std::span<const int64_t>(merged_rows_) : std::span<const int64_t>(), merged_);
  ++updates_;
}

// Integer addition (uint64: the bits of int64's, wrapping cannot be undefined;
// the data-parallel bounds keep the true sum in range) in any order gives the
// same sum; the one conversion back is data parallelism's.
void Shard::merge_fixed_point_round() {
  merged_sparse_ = false;
  merged_rows_.clear();
  last_worker_ = -1;
  last_version_ = 0;
  const size_t numel = weights_.size() / core::itemsize(o_.dtype);
  std::vector<uint64_t> sum(numel, 0);
  for (auto& p : pending_) {
    if (!p) continue;  // a worker that left
    const std::byte* src = p->data.bytes.data();
    for (size_t i = 0; i < numel; ++i) {
      uint64_t v;
      std::memcpy(&v, src + i * 8, 8);  // the payload need not be 8-aligned
      sum[i] += v;
    }
  }
  merged_.resize(weights_.size());
  optim::fixed_point::to_float({reinterpret_cast<const int64_t*>(sum.data()), numel}, o_.dtype, merged_.data());
  for (auto& p : pending_) p.reset();
  pending_count_ = 0;
}

void Shard::merge_round() {
  for (auto& p : pending_) {
    if (p && p->fixed_point) return merge_fixed_point_round();  // then all are (check_push)
  }
  bool all_sparse = true;
  for (auto& p : pending_) all_sparse = all_sparse && (!p || p->sparse());
  merged_sparse_ = all_sparse;
  last_worker_ = -1;
  last_version_ = 0;
  // Sums with the collectives' reduce kernels, so a merged round is the same
  // arithmetic (and, for two workers, the same bits) as an all-reduce.
  auto add_bytes = [&](std::byte* dst, const std::byte* src, size_t nbytes) {
    comm::reduce_into(o_.dtype, comm::ReduceOp::Sum, dst, src, nbytes / core::itemsize(o_.dtype));
  };
  if (all_sparse) {
    merged_rows_.clear();
    for (auto& p : pending_) {
      if (!p) continue;  // a worker that left
      std::vector<int64_t> u;
      std::set_union(merged_rows_.begin(), merged_rows_.end(), p->rows->begin(), p->rows->end(), std::back_inserter(u));
      merged_rows_.swap(u);
    }
    merged_.assign(merged_rows_.size() * row_bytes_, std::byte{0});
    for (auto& p : pending_) {  // rank order
      if (!p) continue;
      size_t j = 0;
      for (size_t i = 0; i < p->rows->size(); ++i) {
        while (merged_rows_[j] != (*p->rows)[i]) ++j;
        add_bytes(merged_.data() + j * row_bytes_, p->data.bytes.data() + i * row_bytes_, row_bytes_);
      }
    }
  } else {
    merged_rows_.clear();
    // The dense pushes in one pass (rank order), then the sparse ones' rows.
    std::vector<const void*> dense;
    for (auto& p : pending_) {
      if (p && !p->sparse()) dense.push_back(p->data.bytes.data());
    }
    merged_.resize(weights_.size());
    if (dense.empty()) {
      std::fill(merged_.begin(), merged_.end(), std::byte{0});
    } else {
      comm::reduce_many(o_.dtype, comm::ReduceOp::Sum, dense, merged_.data(), weights_.size() / core::itemsize(o_.dtype));
    }
    for (auto& p : pending_) {
      if (!p || !p->sparse()) continue;
      for (size_t i = 0; i < p->rows->size(); ++i) {
        const auto r = static_cast<size_t>((*p->rows)[i] - o_.row_begin);
        add_bytes(merged_.data() + r * row_bytes_, p->data.bytes.data() + i * row_bytes_, row_bytes_);
      }
    }
  }
  for (auto& p : pending_) p.reset();
  pending_count_ = 0;
}

MergedUpdate Shard::last_update() const {
  return {.rows = merged_sparse_ ? merged_rows_ : std::vector<int64_t>{}, .data = merged_, .worker = last_worker_,
          .version = last_version_};
}

bool Shard::apply_replica(int64_t seq, const MergedUpdate& u) {
  if (seq <= updates_) return false;
  LOOM_CHECK(seq == updates_ + 1, "kvstore: key {}: replica at update {} received update {}", o_.key, updates_, seq);
  const bool sparse = !u.rows.empty() || u.data.size() != weights_.size();
  if (sparse) {
    check_rows(u.rows, true);
    LOOM_CHECK_T(ShapeError, u.data.size() == u.rows.size() * row_bytes_, "kvstore: key {}: replicated rows are {} bytes",
                 o_.key, u.data.size());
  }
  merged_sparse_ = sparse;
  merged_rows_ = u.rows;
  merged_.assign(u.data.begin(), u.data.end());
  apply(sparse ? std::span<const int64_t>(merged_rows_) : std::span<const int64_t>(), merged_);
  updates_ = seq;
  if (o_.sync) {
    complete_round();
  } else if (u.worker >= 0 && u.worker < o_.num_workers) {
    versions_[static_cast<size_t>(u.worker)] = std::max(versions_[static_cast<size_t>(u.worker)], u.version);
  }
  last_worker_ = u.worker;
  last_version_ = u.version;
  return true;
}

void Shard::apply(std::span<const int64_t> rows, std::span<std::byte> merged) {
  if (o_.dtype == core::DType::F32) {
    apply_typed<float>(rows, {reinterpret_cast<float*>(merged.data()), merged.size() / 4});
  } else {
    apply_typed<double>(rows, {reinterpret_cast<double*>(merged.data()), merged.size() / 8});
  }
}

template <class T>
void Shard::apply_typed(std::span<const int64_t> rows, std::span<T> merged) {
  T* w = reinterpret_cast<T*>(weights_.data());
  const size_t rn = static_cast<size_t>(row_numel_);
  const bool sparse = !rows.empty() || merged.size() != weights_.size() / sizeof(T);
  if (!optimizer_) {  // MXNet's default: the key's value becomes the merged push
    if (!sparse) {
      std::copy(merged.begin(), merged.end(), w);
    } else {
      for (size_t i = 0; i < rows.size(); ++i) {
        std::copy_n(merged.data() + i * rn, rn, w + static_cast<size_t>(rows[i] - o_.row_begin) * rn);
      }
    }
    return;
  }
  if (sparse && rows.empty()) return;  // a dist_sync round in which no worker touched this slice: nothing to update
  ensure_state();
  const int64_t sched_step = o_.sync ? updates_ : updates_ / o_.num_workers;
  const optim::StepInfo info{.step = updates_ + 1, .lr = optimizer_->schedule->lr_at(sched_step)};
  std::array<T*, optim::kMaxStateSlots> slots{};
  auto run = [&](size_t offset, size_t n, const T* g) {
    for (size_t k = 0; k < state_.size(); ++k) slots[k] = reinterpret_cast<T*>(state_[k].data()) + offset;
    optimizer_->rule->step(std::span<T>(w + offset, n), std::span<const T>(g, n),
                           std::span<T* const>(slots.data(), state_.size()), info);
  };
  if (!sparse) {
    run(0, merged.size(), merged.data());
  } else {
    for (size_t i = 0; i < rows.size(); ++i) run(static_cast<size_t>(rows[i] - o_.row_begin) * rn, rn, merged.data() + i * rn);
  }
}

void Shard::read_rows(std::span<const int64_t> rows, std::span<std::byte> out) const {
  check_rows(rows, false);
  LOOM_CHECK(out.size() == rows.size() * row_bytes_, "kvstore: key {}: {} bytes for {} rows", o_.key, out.size(),
             rows.size());
  for (size_t i = 0; i < rows.size(); ++i) {
    std::memcpy(out.data() + i * row_bytes_, weights_.data() + static_cast<size_t>(rows[i] - o_.row_begin) * row_bytes_,
                row_bytes_);
  }
}

ShardState Shard::state() const {
  ShardState s{.weights = weights_, .updates = updates_, .round = round_, .versions = versions_};
  for (const auto& slot : state_) s.slots.emplace_back(slot.begin(), slot.end());
  return s;
}

void Shard::set_state(ShardState s) {
  const size_t want_slots = optimizer_ ? optimizer_->rule->num_state_slots() : 0;
  LOOM_CHECK(s.slots.empty() || s.slots.size() == want_slots,
             "kvstore: key {}: state has {} optimizer slots, the optimizer ({}) has {}", o_.key, s.slots.size(),
             optimizer_ ? std::string(optimizer_->rule->name()) : std::string("none"), want_slots);
  for (size_t i = 0; i <= s.slots.size(); ++i) {
    const size_t n = i == 0 ? s.weights.size() : s.slots[i - 1].size();
    LOOM_CHECK_T(ShapeError, n == weights_.size(), "kvstore: key {}: state part {} is {} bytes, expected {}", o_.key,
                 i, n, weights_.size());
  }
  LOOM_CHECK(s.versions.size() == versions_.size(), "kvstore: key {}: state counts {} workers, the job has {}", o_.key,
             s.versions.size(), versions_.size());
  constexpr int64_t kMaxCount = int64_t{1} << 53;  // far more than any run takes, far from overflowing when counted on
  LOOM_CHECK(s.updates >= 0 && s.round >= 0 && s.updates <= kMaxCount && s.round <= kMaxCount,
             "kvstore: key {}: counters of the state out of range (updates {}, round {}; 0 to 2^53)", o_.key,
             s.updates, s.round);
  weights_ = std::move(s.weights);
  state_.clear();
  for (auto& slot : s.slots) {
    state_.emplace_back(slot.begin(), slot.end());
    slot = {};  // one slot in two copies at a time, not the whole state
  }
  updates_ = s.updates;
  round_ = s.round;
  versions_ = std::move(s.versions);
  initialized_ = true;
  for (auto& p : pending_) p.reset();
  pending_count_ = 0;
}

}  // namespace loom::ps
