// One slice of one key as a server holds it: the weights, the optimizer state,
// how many updates it has had, and the pushes of the round in progress. No
// networking here: the server (server.h) and the in-process "local" KVStore
// drive the same code, so they merge and update identically.
//
//   // given: std::span<const std::byte> value_bytes, optim::OptimizerSpec spec, int worker, int64_t version, std::span<const std::byte> bytes
//   ps::Shard shard({.key = 3, .dtype = core::DType::F32, .key_shape = {10, 4}, .row_begin = 0,
//                    .num_rows = 10, .num_workers = 2, .sync = true});
//   shard.init(value_bytes);
//   shard.set_optimizer(ps::make_server_optimizer(spec));
//   if (shard.push(worker, version, {.data = ps::Payload::copy_of(bytes)}) == ps::PushResult::Applied) ...  // dense
//   ps::ShardState saved = shard.state();   // weights, optimizer slots, counters
//   shard.set_state(std::move(saved));
//
// Merging (dist_sync): a round's pushes are kept until every worker's has
// arrived, then summed in worker-rank order (dense pushes first, then the rows
// of sparse ones) with the collectives' reduce kernels, so the result does not
// depend on arrival order. Fixed-point pushes (deterministic mode,
// PushData::fixed_point) are added as 64-bit integers, exact in any order,
// and the sum converted to the key's dtype once, so the update depends on the
// round's total alone, not on how the workers split the gradient. Without an optimizer a key's value becomes the merged push
// (MXNet's default); with one, the update rule runs on the merged gradient
// (times rescale_grad) with lr = schedule(updates so far). Row-sparse pushes
// merge the union of their rows and update only those rows (lazy update).
//
// Unequal step counts: a worker that closes its store retires from every
// shard; rounds then complete without it instead of waiting forever (MXNet's
// dist_sync hangs there).
//
// Replays: a push carries the worker's count of its pushes to this key. A
// push already counted (a worker retrying at a new primary after a failover)
// is acknowledged without being applied again.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "loom/core/dtype.h"
#include "loom/core/shape.h"
#include "loom/optim/schedule.h"
#include "loom/optim/spec.h"
#include "loom/optim/update_rule.h"
#include "loom/ps/protocol.h"

namespace loom::ps {

// Bytes whose owner lives as long as the Payload (a ZeroMQ message, a vector).
struct Payload {
  std::shared_ptr<const void> owner;
  std::span<const std::byte> bytes;
  static Payload copy_of(std::span<const std::byte> bytes);
};

// A dense push (no rows) or a row-sparse one (global row ids, ascending and
// unique, with one row of data each).
struct PushData {
  Payload data;
  std::optional<std::vector<int64_t>> rows;
  // Dense, dist_sync only (deterministic mode): `data` is the worker's
  // gradient as i64 in units of 2^-40 (optim/fixed_point.h), 8 bytes per
  // element. A round of them is added as integers and converted once.
  bool fixed_point = false;
  bool sparse() const { return rows.has_value(); }
};

// A spec made into its rule and schedule once (optim's factory), shared by
// every shard of a server.
struct ServerOptimizer {
  optim::OptimizerSpec spec;
  std::unique_ptr<optim::UpdateRule> rule;
  std::shared_ptr<const optim::Schedule> schedule;
};
std::shared_ptr<const ServerOptimizer> make_server_optimizer(const optim::OptimizerSpec& spec);

struct ShardOptions {
  int64_t key = 0;
  core::DType dtype = core::DType::F32;  // F32 or F64
  core::Shape key_shape;                 // of the whole key
  int64_t row_begin = 0;
  int64_t num_rows = 0;
  int num_workers = 1;
  bool sync = true;  // dist_sync merges rounds; otherwise every push is applied on arrival
};

// What a request says about the slice it is for. The server translates its
// wire Header into this (server_handlers.cc); the Shard knows no wire format.
struct SliceRequest {
  int64_t key = 0;
  core::DType dtype = core::DType::F32;
  int64_t total_rows = 0;  // rows of the whole key (its first dim; 1 for a scalar)
  int64_t row_numel = 0;   // elements per row
  int64_t row_begin = 0;   // the slice: its first row
  int64_t num_rows = 0;    // and its rows
  std::optional<core::Shape> shape;  // the key's shape, when the request carries it (init, set_state)
};

enum class PushResult { Pending, Applied, Duplicate };

// What one applied update was, for replication: the backups apply the same bytes.
struct MergedUpdate {
  std::vector<int64_t> rows;  // empty: dense
  std::span<const std::byte> data;
  int worker = -1;        // async: whose push it was
  int64_t version = 0;    // async: that push's version
};

// Zero-filled bytes from calloc, which hands out big blocks as fresh pages
// the kernel zeroes on first touch: optimizer state for rows that are never
// pushed (most of a big embedding table) costs neither time nor memory.
template <class T>
struct ZeroedAllocator {
  using value_type = T;
  ZeroedAllocator() = default;
  template <class U>
  ZeroedAllocator(const ZeroedAllocator<U>&) noexcept {}
  T* allocate(size_t n) {
    void* p = std::calloc(n, sizeof(T));
    if (p == nullptr) throw std::bad_alloc();
    return static_cast<T*>(p);
  }
  void deallocate(T* p, size_t) noexcept { std::free(p); }
  template <class U>
  void construct(U*) noexcept {}  // value-initialization: calloc's zeros already are
  template <class U, class... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
  bool operator==(const ZeroedAllocator&) const = default;
};
using ZeroedBytes = std::vector<std::byte, ZeroedAllocator<std::byte>>;

class Shard {
 public:
  explicit Shard(const ShardOptions& options);

  const ShardOptions& options() const { return o_; }
  int64_t row_numel() const { return row_numel_; }
  uint64_t nbytes() const { return weights_.size(); }
  bool initialized() const { return initialized_; }
  int64_t updates() const { return updates_; }

  // Checks that a request describes this slice of the same array (ValueError naming both otherwise).
  void check_request(const SliceRequest& request) const;

  void init(std::span<const std::byte> value);
  void set_optimizer(std::shared_ptr<const ServerOptimizer> optimizer);

  // A worker's push with its version (1 for its first push to this key).
  // Throws ValueError for a malformed push (sizes, rows out of the slice).
  PushResult push(int worker, int64_t version, PushData data);
  // Throws what push would throw, changing nothing (so that a request about
  // several slices is checked whole before any of them takes it).
  void check_push(int worker, int64_t version, const PushData& data) const;
  // The worker left the job (closed its store): rounds stop waiting for it,
  // and one that only waited for it is applied now (Applied).
  PushResult retire(int worker);
  // The update last applied (valid until the next push or apply).
  MergedUpdate last_update() const;
  // A backup applies what its primary applied (seq: the primary's update count after it).
  // Returns false for a replay it already has.
  bool apply_replica(int64_t seq, const MergedUpdate& update);

  std::span<const std::byte> weights() const { return weights_; }
  // Rows `rows` (global ids in this slice, any order) packed into `out`.
  void read_rows(std::span<const int64_t> rows, std::span<std::byte> out) const;
  void check_rows(std::span<const int64_t> rows, bool need_sorted_unique) const;

  // State for checkpoints and takeover (a copy). Slots are empty until the
  // first update with an optimizer. A checkpoint restored into a new job has
  // round and versions 0 (its workers count from 0).
  ShardState state() const;
  // Replaces weights, optimizer state and counters; a round in progress is
  // dropped. ShapeError/ValueError when the state does not fit this slice
  // (sizes, number of workers) or the optimizer (number of slots; none is fine).
  void set_state(ShardState state);
  size_t num_state_slots() const { return state_.size(); }

 private:
  void apply(std::span<const int64_t> rows, std::span<std::byte> merged);
  template <class T>
  void apply_typed(std::span<const int64_t> rows, std::span<T> merged);
  void merge_round();
  void merge_fixed_point_round();
  void complete_round();
  void finish_update();
  int active_workers() const;
  void ensure_state();

  ShardOptions o_;
  int64_t row_numel_ = 0;
  size_t row_bytes_ = 0;
  bool initialized_ = false;
  std::vector<std::byte> weights_;
  std::vector<ZeroedBytes> state_;  // one buffer per optimizer slot, allocated at the first update
  std::shared_ptr<const ServerOptimizer> optimizer_;
  int64_t updates_ = 0;  // updates applied (the rule's step count and the schedule's)
  int64_t round_ = 0;    // sync rounds completed since the workers started counting their pushes
  std::vector<int64_t> versions_;  // per worker: pushes counted (async), or the round (sync)
  // The round in progress (sync).
  std::vector<std::optional<PushData>> pending_;
  std::vector<bool> retired_;  // workers that left: rounds complete without them
  int pending_count_ = 0;
  // The last applied update.
  std::vector<int64_t> merged_rows_;
  std::vector<std::byte> merged_;
  bool merged_sparse_ = false;
  int last_worker_ = -1;
  int64_t last_version_ = 0;
};

}  // namespace loom::ps
