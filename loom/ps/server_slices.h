// Internal to the parameter server (server.cc, server_handlers.cc,
// replication.cc): the slices a server holds and the requests waiting on
// them. One Entry per slice (key, first row): its Shard (shard.h, the merging
// and updating), its replica chain, the pushes of the round in progress and
// the inits waiting for rank 0's value. Everything here runs on the server's
// one thread.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <vector>

#include "loom/comm/wire/endpoint.h"
#include "loom/comm/transport/shared_region.h"
#include "loom/ps/placement.h"
#include "loom/ps/protocol.h"
#include "loom/ps/server.h"
#include "loom/ps/shard.h"

namespace loom::ps::detail {

using MsgPtr = comm::FramePtr;

struct SliceId {
  int64_t key = 0;
  int64_t row_begin = 0;
  auto operator<=>(const SliceId&) const = default;
};

// A row-sparse push about several slices, answered once every slice has taken it.
struct Join {
  std::vector<MsgPtr> route;
  Header request;
  size_t remaining = 0;
};

// Where a Flag::Shm request's bytes lie: its worker's staging region, at an offset.
struct Staged {
  std::shared_ptr<comm::SharedRegion> region;
  size_t offset = 0;
  std::byte* at() const { return region->data() + offset; }
};

// A request waiting for its answer: the route back and the request header
// (for a slice of a sparse push: its part of the request, answered through the join).
struct Waiting {
  std::vector<MsgPtr> route;
  Header request;
  std::shared_ptr<Join> join;
  Staged staged;  // a Flag::Shm pull is answered here
};

struct Entry {
  std::unique_ptr<Shard> shard;
  std::vector<int> chain;
  std::vector<Waiting> round;  // sync pushes of the round in progress
  std::vector<Waiting> inits;  // inits without data, waiting for rank 0's value
  bool value_acked = false;    // the value is set and its backups hold it
};

// The server's slices, with what every new one must be given: the optimizer
// and the workers that left.
class SliceTable {
 public:
  explicit SliceTable(const ServerOptions& options) : o_(options) {}

  // The slice `id` (whose placement owner is `owner`), made on first use from
  // the request's header and dims.
  Entry& create(const SliceId& id, const Header& h, const std::vector<int64_t>& dims, int owner);
  // An initialized slice; ValueError naming `what` otherwise.
  Entry& at(const SliceId& id, const char* what);
  Entry* find(const SliceId& id);
  std::map<SliceId, Entry>& entries() { return entries_; }

  void set_optimizer(std::shared_ptr<const ServerOptimizer> optimizer);
  // A worker left: no round waits for it. `applied` is called for every slice
  // whose round that completes.
  void retire(int worker, const std::function<void(const SliceId&, Entry&)>& applied);

  // The placement's slice of the key a header names that starts at
  // `row_begin`; ShapeError if there is none.
  Slice slice_at(const Header& h, int64_t row_begin) const;
  // The owner of the slice a header names, checking it is one of the placement.
  int owner_of(const Header& h) const;

 private:
  const ServerOptions& o_;
  std::map<SliceId, Entry> entries_;
  std::shared_ptr<const ServerOptimizer> optimizer_;
  std::set<int> retired_;  // workers that left
};

// Reading a request's frames.
// (The integer frames, dims and counters, are decoded by protocol.h.)
// A frame's bytes as a payload aligned for its dtype (ZeroMQ keeps small frames inline).
Payload aligned(const MsgPtr& m, core::DType dtype);
// The bytes of frames[from...].
std::vector<std::span<const std::byte>> spans(const std::vector<MsgPtr>& frames, size_t from);

}  // namespace loom::ps::detail
