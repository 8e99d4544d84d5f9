#include "loom/ps/server_handlers.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "loom/core/error.h"
#include "loom/optim/spec.h"
#include "loom/ps/shm_staging.h"

namespace loom::ps::detail {
namespace {

// The wire header's description of the slice, for the network-free Shard.
SliceRequest slice_request(const Header& h, std::optional<core::Shape> shape = std::nullopt) {
  return {.key = h.key, .dtype = h.dtype, .total_rows = h.total_rows, .row_numel = h.row_numel,
          .row_begin = h.row_begin, .num_rows = h.num_rows, .shape = std::move(shape)};
}

// Bytes of a dense request's data: the slice's, or (a fixed-point push) 8 per element.
uint64_t data_nbytes(const Header& h) {
  if ((h.flags & flag::kFixedPoint) == 0) return h.slice_nbytes();
  return static_cast<uint64_t>(h.num_rows) * static_cast<uint64_t>(h.row_numel) * 8;
}

}  // namespace

struct RequestHandlers::SparsePart {
  SliceId id;
  Header h;
  Entry* e = nullptr;
  PushData data;
};

void RequestHandlers::handle(const std::vector<MsgPtr>& route, const Header& h, std::vector<MsgPtr>& frames) {
  const bool from_server = h.sender < 0;
  if (h.op == Op::SetOptimizer) return set_optimizer(route, h, frames);
  if (h.op == Op::ShmAttach) return shm_attach(route, h, frames);
  if (h.op == Op::Leave) return leave(route, h);
  LOOM_CHECK(h.op != Op::Reply, "ps protocol: a reply sent as a request");
  LOOM_CHECK_T(CommError, (h.flags & flag::kFixedPoint) == 0 || (!h.sparse() && (h.op == Op::Push || h.op == Op::PushPull)),
               "ps protocol: fixed-point data in a {}{} (only dense pushes carry them)", h.sparse() ? "sparse " : "",
               op_name(h.op));
  if (h.sparse() && !from_server) return sparse(route, h, frames);
  const int owner = slices_.owner_of(h);
  const std::vector<int> chain = replica_chain(owner, o_.placement);
  LOOM_CHECK(std::find(chain.begin(), chain.end(), o_.rank) != chain.end(),
             "kvstore: key {} rows [{}, {}) are not held by server {} (its servers: {}...)", h.key, h.row_begin,
             h.row_begin + h.num_rows, o_.rank, owner);
  const SliceId id{h.key, h.row_begin};
  if (from_server) return replication_.from_primary(route, h, frames, id, owner);
  if (replication_.primary_of(chain) != o_.rank) {  // a backup: wait until the primary is known lost
    replication_.defer(frames);
    return;
  }
  switch (h.op) {
    case Op::Init: return init(route, h, frames, id, owner);
    case Op::Push:
    case Op::PushPull: return push(route, h, frames, id);
    case Op::Pull: return pull(route, h, frames, id);
    case Op::GetState: return get_state(route, h, id);
    case Op::SetState: return set_state(route, h, frames, id, owner);
    default: throw CommError(format("ps protocol: a worker cannot send {}", op_name(h.op)));
  }
}

void RequestHandlers::set_optimizer(const std::vector<MsgPtr>& route, const Header& h, std::vector<MsgPtr>& frames) {
  LOOM_CHECK_T(CommError, h.num_frames == 1, "ps protocol: set_optimizer needs 1 frame");
  slices_.set_optimizer(make_server_optimizer(optim::decode_spec(frames[2]->bytes())));
  replier_.reply(route, h, {});
}

// A worker is done: no round waits for it any more.
void RequestHandlers::leave(const std::vector<MsgPtr>& route, const Header& h) {
  LOOM_CHECK(h.sender >= 0 && h.sender < o_.num_workers, "kvstore: leave from worker {} (the job has {})", h.sender,
             o_.num_workers);
  slices_.retire(h.sender, [this](const SliceId& id, Entry& e) { replication_.applied(id, e); });
  replier_.reply(route, h, {});
}

// Op::ShmAttach: maps a worker's staging region (replacing its last one; a
// push still waiting in a round keeps the old one mapped).
void RequestHandlers::shm_attach(const std::vector<MsgPtr>& route, const Header& h, std::vector<MsgPtr>& frames) {
  LOOM_CHECK(h.sender >= 0 && h.sender < o_.num_workers, "kvstore: shm_attach from worker {} (the job has {})",
             h.sender, o_.num_workers);
  LOOM_CHECK_T(CommError, h.num_frames == 1, "ps protocol: shm_attach needs 1 frame");
  const std::string name(frames[2]->view());
  // Only a worker's staging region (ShmStaging's names), never another of this user's regions.
  LOOM_CHECK_T(CommError, name.rfind(ShmStaging::kNamePrefix, 0) == 0, "ps protocol: '{}' is not a worker's staging region",
               name);
  regions_[h.sender] = comm::SharedRegion::open(name);
  replier_.reply(route, h, {});
}

Staged RequestHandlers::staged(const Header& h, const std::vector<MsgPtr>& frames) {
  if ((h.flags & flag::kShm) == 0) return {};
  LOOM_CHECK_T(CommError, !h.sparse() && h.num_frames == 1 && frames[2]->bytes().size() == 8,
               "ps protocol: a shared-memory {} needs one 8-byte offset frame", op_name(h.op));
  uint64_t offset = 0;
  std::memcpy(&offset, frames[2]->bytes().data(), 8);
  const auto it = regions_.find(h.sender);
  LOOM_CHECK_T(CommError, it != regions_.end(),
               "kvstore: worker {} sent a shared-memory {} to server {}, which has not mapped its region", h.sender,
               op_name(h.op), o_.rank);
  const size_t size = it->second->size(), n = data_nbytes(h);  // a pushpull's reply is no bigger
  LOOM_CHECK_T(CommError, offset % core::itemsize(h.dtype) == 0 && offset <= size && n <= size - offset,
               "kvstore: worker {}'s {} names bytes [{}, {}+{}) of its {}-byte shared region", h.sender, op_name(h.op),
               offset, offset, n, size);
  n_.bytes_in += n;
  return {it->second, static_cast<size_t>(offset)};
}

void RequestHandlers::init(const std::vector<MsgPtr>& route, const Header& h, std::vector<MsgPtr>& frames,
                           const SliceId& id, int owner) {
  const bool has_data = (h.flags & flag::kHasData) != 0;
  LOOM_CHECK_T(CommError, h.num_frames == (has_data ? 2u : 1u), "ps protocol: init needs {} frames", has_data ? 2 : 1);
  const auto dims = decode_dims(frames[2]->bytes(), h);
  const core::Shape shape(dims.begin(), dims.end());
  Entry& e = slices_.create(id, h, dims, owner);
  e.shard->check_request(slice_request(h, shape));
  // Without data, or repeated (a retry after a failover: the value stays):
  // answered once the value is set and its backups hold it.
  if (!has_data || e.shard->initialized()) {
    if (e.value_acked) replier_.reply(route, h, {});
    else e.inits.push_back({route, h});
    return;
  }
  e.shard->init(frames[3]->bytes());
  replication_.replicate(id, e, h, spans(frames, 2), {{route, h}}, true);
}

void RequestHandlers::push(const std::vector<MsgPtr>& route, const Header& h, std::vector<MsgPtr>& frames,
                           const SliceId& id) {
  Entry& e = slices_.at(id, "push");
  e.shard->check_request(slice_request(h));
  LOOM_CHECK_T(CommError, h.num_frames == 1, "ps protocol: a push needs 1 frame");
  const int worker = h.sender;
  LOOM_CHECK(worker >= 0 && worker < o_.num_workers, "kvstore: push from worker {} (the job has {})", worker,
             o_.num_workers);
  const Waiting w{.route = route, .request = h, .staged = staged(h, frames)};
  // The pushed bytes stay where they arrived: the frame, or the worker's
  // region (the worker leaves them there until this push is answered).
  const bool fixed_point = (h.flags & flag::kFixedPoint) != 0;
  PushData data{.data = w.staged.region ? Payload{w.staged.region, {w.staged.at(), data_nbytes(h)}}
                                        : aligned(frames[2], fixed_point ? core::DType::I64 : h.dtype),
                .fixed_point = fixed_point};
  switch (e.shard->push(worker, h.version, std::move(data))) {
    case PushResult::Duplicate: replier_.answer(e, w); return;
    case PushResult::Pending: e.round.push_back(w); return;
    case PushResult::Applied: break;
  }
  e.round.push_back(w);
  replication_.applied(id, e);
}

void RequestHandlers::pull(const std::vector<MsgPtr>& route, const Header& h, std::vector<MsgPtr>& frames,
                           const SliceId& id) {
  Entry& e = slices_.at(id, "pull");
  e.shard->check_request(slice_request(h));
  const Waiting w{.route = route, .request = h, .staged = staged(h, frames)};
  LOOM_CHECK_T(CommError, h.num_frames == (w.staged.region ? 1u : 0u), "ps protocol: a pull has no frames");
  replier_.reply_value(w, e.shard->weights());
}

// A row-sparse push or pull (protocol.h): [first rows of the slices it is
// about, all of one replica chain] [their row ids, slice by slice] (+ for a
// push: [those rows]). The whole request is checked before any slice takes
// it; a push is answered once every slice has applied it (dist_sync: merged
// its round), a pull with the rows in the order asked.
void RequestHandlers::sparse(const std::vector<MsgPtr>& route, const Header& h, std::vector<MsgPtr>& frames) {
  LOOM_CHECK_T(CommError, h.op == Op::Push || h.op == Op::Pull, "ps protocol: a sparse {}", op_name(h.op));
  const uint32_t want = h.op == Op::Push ? 3 : 2;
  LOOM_CHECK_T(CommError, h.num_frames == want, "ps protocol: a sparse {} needs {} frames, got {}", op_name(h.op), want,
               h.num_frames);
  std::vector<SparsePart> parts;
  if (!sparse_parts(h, frames, parts)) {  // a backup: wait until the primary is known lost
    replication_.defer(frames);
    return;
  }
  if (h.op == Op::Pull) {
    const size_t row_bytes = static_cast<size_t>(h.row_numel) * core::itemsize(h.dtype);
    size_t num_ids = 0;
    for (const SparsePart& p : parts) num_ids += p.data.rows->size();
    std::vector<std::byte> out(num_ids * row_bytes);
    size_t at = 0;
    for (const SparsePart& p : parts) {
      const size_t n = p.data.rows->size() * row_bytes;
      p.e->shard->read_rows(*p.data.rows, std::span(out).subspan(at, n));
      at += n;
    }
    const std::span<const std::byte> f = out;
    replier_.reply(route, h, std::span(&f, 1));
    return;
  }
  auto join = std::make_shared<Join>(Join{.route = route, .request = h, .remaining = parts.size()});
  for (SparsePart& p : parts) {
    const Waiting w{.route = route, .request = p.h, .join = join};
    switch (p.e->shard->push(h.sender, h.version, std::move(p.data))) {
      case PushResult::Duplicate: replier_.answer(*p.e, w); break;
      case PushResult::Pending: p.e->round.push_back(w); break;
      case PushResult::Applied:
        p.e->round.push_back(w);
        replication_.applied(p.id, *p.e);
        break;
    }
  }
}

bool RequestHandlers::sparse_parts(const Header& h, std::vector<MsgPtr>& frames, std::vector<SparsePart>& parts) {
  const auto firsts = decode_i64_frame(frames[2]->bytes(), "slice list");
  const auto ids = decode_i64_frame(frames[3]->bytes(), "row ids");
  const size_t row_bytes = static_cast<size_t>(h.row_numel) * core::itemsize(h.dtype);
  Payload rows;
  if (h.op == Op::Push) {
    rows = aligned(frames[4], h.dtype);
    LOOM_CHECK_T(ShapeError, rows.bytes.size() == ids.size() * row_bytes,
                 "kvstore: row_sparse_push to key {}: {} bytes for {} rows of {} bytes", h.key, rows.bytes.size(),
                 ids.size(), row_bytes);
  }
  for (const SliceRows& r : split_rows(h.key, h.total_rows, h.row_numel, firsts, ids, o_.placement)) {
    const Slice& s = r.slice;
    const std::vector<int> chain = replica_chain(s.server, o_.placement);
    LOOM_CHECK(std::find(chain.begin(), chain.end(), o_.rank) != chain.end(),
               "kvstore: key {} rows [{}, {}) are not held by server {}", h.key, s.row_begin, s.row_begin + s.num_rows,
               o_.rank);
    if (replication_.primary_of(chain) != o_.rank) return false;
    SparsePart p{.id = {h.key, s.row_begin}, .h = h};
    p.h.row_begin = s.row_begin;
    p.h.num_rows = s.num_rows;
    p.e = &slices_.at(p.id, h.op == Op::Push ? "row_sparse_push" : "row_sparse_pull");
    p.e->shard->check_request(slice_request(p.h));
    const auto begin = ids.begin() + static_cast<ptrdiff_t>(r.begin), end = ids.begin() + static_cast<ptrdiff_t>(r.end);
    p.data.rows = std::vector<int64_t>(begin, end);
    if (h.op == Op::Push) {
      p.data.data = {rows.owner, rows.bytes.subspan(r.begin * row_bytes, (r.end - r.begin) * row_bytes)};
      p.e->shard->check_push(h.sender, h.version, p.data);
    }
    parts.push_back(std::move(p));
  }
  return true;
}

void RequestHandlers::get_state(const std::vector<MsgPtr>& route, const Header& h, const SliceId& id) {
  Entry& e = slices_.at(id, "get_state");
  const ShardState state = e.shard->state();
  replier_.reply(route, h, encode_shard_state(state).frames);
}

void RequestHandlers::set_state(const std::vector<MsgPtr>& route, const Header& h, std::vector<MsgPtr>& frames,
                                const SliceId& id, int owner) {
  LOOM_CHECK_T(CommError, h.num_frames >= 3, "ps protocol: set_state needs dims, weights and counters");
  const auto dims = decode_dims(frames[2]->bytes(), h);
  const core::Shape shape(dims.begin(), dims.end());
  Entry& e = slices_.create(id, h, dims, owner);
  e.shard->check_request(slice_request(h, shape));
  e.shard->set_state(decode_shard_state(spans(frames, 3)));
  replication_.replicate(id, e, h, spans(frames, 2), {{route, h}}, true);
}

}  // namespace loom::ps::detail
