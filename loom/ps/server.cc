#include "loom/ps/server.h"

#include <algorithm>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <thread>

#include "loom/comm/endpoint.h"
#include "loom/comm/shared_region.h"
#include "loom/core/error.h"
#include "loom/ps/shard.h"
#include "loom/ps/shm_staging.h"

namespace loom::ps {

using MsgPtr = comm::FramePtr;
using comm::OutFrame;

namespace {

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

struct Job {  // an update sent to backups, not yet acknowledged by all
  SliceId slice;
  std::set<int> waiting;
  std::vector<Waiting> replies;
  bool marks_value = false;  // an init: value_acked once done
};

// A frame as i64 values (copied: frames need not be aligned).
std::vector<int64_t> read_i64(std::span<const std::byte> bytes, const char* what) {
  LOOM_CHECK_T(CommError, bytes.size() % 8 == 0, "ps protocol: {} frame of {} bytes is not a list of i64", what,
               bytes.size());
  std::vector<int64_t> out(bytes.size() / 8);
  if (!out.empty()) std::memcpy(out.data(), bytes.data(), bytes.size());
  return out;
}

// Sends [prefix...] [header] [frames...] (frames copied into ZeroMQ); returns the payload bytes.
size_t send_message(const comm::Socket& socket, std::span<const MsgPtr> prefix, Header h,
                    std::span<const std::span<const std::byte>> frames) {
  h.num_frames = static_cast<uint32_t>(frames.size());
  const HeaderBytes hb = encode_header(h);
  std::vector<OutFrame> out;
  out.reserve(prefix.size() + 1 + frames.size());
  for (const auto& p : prefix) out.push_back(OutFrame::borrow(p->bytes()));
  out.push_back(OutFrame::borrow(hb));
  size_t payload = 0;
  for (const auto& f : frames) {
    out.push_back(OutFrame::borrow(f));
    payload += f.size();
  }
  socket.send(out);
  return payload;
}

std::vector<int64_t> check_dims(std::span<const std::byte> frame, const Header& h) {
  std::vector<int64_t> dims = read_i64(frame, "dims");
  LOOM_CHECK_T(CommError, dims.size() <= 8, "ps protocol: {} dims", dims.size());
  for (int64_t d : dims) LOOM_CHECK_T(CommError, d >= 0 && d <= (int64_t{1} << 40), "ps protocol: dim {}", d);
  const core::Shape shape(dims.begin(), dims.end());
  LOOM_CHECK_T(CommError, key_rows(shape) == h.total_rows && key_row_numel(shape) == h.row_numel,
               "ps protocol: shape {} does not match {} rows of {}", core::to_string(shape), h.total_rows, h.row_numel);
  return dims;
}

}  // namespace

struct KVServer::Impl {
  ServerOptions o;
  std::unique_ptr<comm::ServerEndpoint> ep;  // the ROUTER workers and other servers send requests to
  std::vector<comm::Socket> peers;  // DEALER per server (none for self), watched by ep; never resized
  std::vector<bool> lost;
  std::map<SliceId, Entry> entries;
  std::map<uint64_t, Job> jobs;
  uint64_t next_job = 1;
  std::deque<std::pair<std::vector<MsgPtr>, std::vector<MsgPtr>>> deferred;  // (route, frames)
  std::shared_ptr<const ServerOptimizer> optimizer;
  std::set<int> retired;  // workers that left
  std::map<int, std::shared_ptr<comm::SharedRegion>> regions;  // staging regions of workers on this host
  std::thread thread;
  std::atomic<bool> stopping{false};
  std::mutex lost_mu;
  std::vector<int> lost_queue;
  std::atomic<uint64_t> n_requests{0}, n_errors{0}, n_updates{0}, n_in{0}, n_out{0};

  ~Impl() {
    stop();
    peers.clear();
    ep.reset();
  }

  void stop() {
    stopping = true;
    if (thread.joinable()) thread.join();
  }

  bool alive(int s) const { return !lost[static_cast<size_t>(s)]; }
  int primary_of(const std::vector<int>& chain) const {
    for (int s : chain) {
      if (alive(s)) return s;
    }
    return -1;
  }

  void reply(const std::vector<MsgPtr>& route, const Header& req, std::span<const std::span<const std::byte>> frames,
             Status status = Status::Ok, uint16_t flags = 0) {
    Header h = req;
    h.op = Op::Reply;
    h.status = status;
    h.flags = flags;
    n_out += send_message(ep->router(), route, h, frames);
  }
  void reply_error(const std::vector<MsgPtr>& route, const Header& req, const std::string& message) {
    ++n_errors;
    const std::span<const std::byte> f(reinterpret_cast<const std::byte*>(message.data()), message.size());
    reply(route, req, std::span(&f, 1), Status::Error);
  }
  // Answers a pull (or pushpull) with the slice's value: in a frame, or
  // written into the worker's staging region (Flag::Shm).
  void reply_value(const Waiting& w, std::span<const std::byte> value) {
    if (!w.staged.region) {
      reply(w.route, w.request, std::span(&value, 1));
      return;
    }
    std::memcpy(w.staged.at(), value.data(), value.size());
    n_out += value.size();
    reply(w.route, w.request, {}, Status::Ok, flag::kShm);
  }

  // A Flag::Shm request's place in its worker's region: the offset its one
  // frame names, checked against the region and the slice's size.
  Staged staged(const Header& h, const std::vector<MsgPtr>& frames) {
    if ((h.flags & flag::kShm) == 0) return {};
    LOOM_CHECK_T(CommError, !h.sparse() && h.num_frames == 1 && frames[2]->bytes().size() == 8,
                 "ps protocol: a shared-memory {} needs one 8-byte offset frame", op_name(h.op));
    uint64_t offset = 0;
    std::memcpy(&offset, frames[2]->bytes().data(), 8);
    const auto it = regions.find(h.sender);
    LOOM_CHECK_T(CommError, it != regions.end(),
                 "kvstore: worker {} sent a shared-memory {} to server {}, which has not mapped its region",
                 h.sender, op_name(h.op), o.rank);
    const size_t size = it->second->size(), n = h.slice_nbytes();
    LOOM_CHECK_T(CommError, offset % core::itemsize(h.dtype) == 0 && offset <= size && n <= size - offset,
                 "kvstore: worker {}'s {} names bytes [{}, {}+{}) of its {}-byte shared region", h.sender,
                 op_name(h.op), offset, offset, n, size);
    n_in += n;
    return {it->second, static_cast<size_t>(offset)};
  }

  // Op::ShmAttach: maps a worker's staging region (replacing its last one; a
  // push still waiting in a round keeps the old one mapped).
  void handle_shm_attach(const std::vector<MsgPtr>& route, const Header& h, std::vector<MsgPtr>& frames) {
    LOOM_CHECK(h.sender >= 0 && h.sender < o.num_workers, "kvstore: shm_attach from worker {} (the job has {})",
               h.sender, o.num_workers);
    LOOM_CHECK_T(CommError, h.num_frames == 1, "ps protocol: shm_attach needs 1 frame");
    const std::string name(frames[2]->view());
    // Only a worker's staging region (ShmStaging's names), never another of this user's regions.
    LOOM_CHECK_T(CommError, name.rfind(ShmStaging::kNamePrefix, 0) == 0, "ps protocol: '{}' is not a worker's staging region",
                 name);
    regions[h.sender] = comm::SharedRegion::open(name);
    reply(route, h, {});
  }

  // Answers a finished push/init: pushpull gets the slice's value.
  void answer(Entry& e, const Waiting& w) {
    if (w.join) {
      if (--w.join->remaining == 0) reply(w.join->route, w.join->request, {});
      return;
    }
    if (w.request.op == Op::PushPull) {
      reply_value(w, e.shard->weights());
    } else {
      reply(w.route, w.request, {});
    }
  }

  // Sends one message about a slice to every live backup after this server in the chain;
  // the replies wait until all have acknowledged it.
  void replicate(const SliceId& id, Entry& e, Header h, std::span<const std::span<const std::byte>> frames,
                 std::vector<Waiting> replies, bool marks_value) {
    Job job{.slice = id, .replies = std::move(replies), .marks_value = marks_value};
    const auto me = std::find(e.chain.begin(), e.chain.end(), o.rank);
    const uint64_t job_id = next_job++;
    h.sender = server_sender(o.rank);
    h.request_id = job_id;
    for (auto it = me + 1; it != e.chain.end(); ++it) {
      if (!alive(*it) || !peers[static_cast<size_t>(*it)]) continue;
      n_out += send_message(peers[static_cast<size_t>(*it)], {}, h, frames);
      job.waiting.insert(*it);
    }
    if (job.waiting.empty()) {
      finish(job);
    } else {
      jobs.emplace(job_id, std::move(job));
    }
  }

  void finish(Job& job) {
    auto it = entries.find(job.slice);
    if (it == entries.end()) return;
    Entry& e = it->second;
    for (const auto& w : job.replies) answer(e, w);
    if (job.marks_value) {
      e.value_acked = true;
      for (const auto& w : e.inits) answer(e, w);
      e.inits.clear();
    }
  }

  std::vector<std::span<const std::byte>> spans(const std::vector<MsgPtr>& frames, size_t from) {
    std::vector<std::span<const std::byte>> out;
    for (size_t i = from; i < frames.size(); ++i) out.push_back(frames[i]->bytes());
    return out;
  }

  Entry& create_entry(const SliceId& id, const Header& h, const std::vector<int64_t>& dims, int owner) {
    auto [it, inserted] = entries.try_emplace(id);
    Entry& e = it->second;
    if (inserted) {
      e.shard = std::make_unique<Shard>(ShardOptions{.key = h.key, .dtype = h.dtype,
                                                     .key_shape = core::Shape(dims.begin(), dims.end()),
                                                     .row_begin = h.row_begin, .num_rows = h.num_rows,
                                                     .num_workers = o.num_workers, .sync = o.sync});
      e.chain = replica_chain(owner, o.placement);
      if (optimizer) e.shard->set_optimizer(optimizer);
      for (int w : retired) e.shard->retire(w);
    }
    return e;
  }

  // The slice of the key a header names that starts at `row_begin`; ShapeError if there is none.
  Slice slice_at(const Header& h, int64_t row_begin) const {
    const auto s = slice_starting_at(h.key, h.total_rows, h.row_numel, row_begin, o.placement);
    LOOM_CHECK_T(ShapeError, s.has_value(),
                 "kvstore: key {} has no slice starting at row {} (the worker's placement differs)", h.key, row_begin);
    return *s;
  }
  // The owner of the slice a header names, checking that the slice exists in the placement.
  int owner_of(const Header& h) {
    const Slice s = slice_at(h, h.row_begin);
    LOOM_CHECK_T(ShapeError, s.num_rows == h.num_rows, "kvstore: key {}: the slice at row {} has {} rows, not {}", h.key,
                 s.row_begin, s.num_rows, h.num_rows);
    return s.server;
  }

  // ---- requests ----

  void on_request(std::vector<MsgPtr>& frames) {
    // frames: [routing id] [header] [payload...]
    LOOM_CHECK_T(CommError, frames.size() >= 2, "ps protocol: a message of {} frames", frames.size());
    std::vector<MsgPtr> route(frames.begin(), frames.begin() + 1);
    Header h;
    try {
      h = decode_header(frames[1]->bytes());
      LOOM_CHECK_T(CommError, frames.size() - 2 == h.num_frames, "ps protocol: header announces {} frames, got {}",
                   h.num_frames, frames.size() - 2);
    } catch (const Error& e) {
      reply_error(route, Header{}, e.what());
      return;
    }
    ++n_requests;
    for (size_t i = 2; i < frames.size(); ++i) n_in += frames[i]->bytes().size();
    try {
      handle(route, h, frames);
    } catch (const Error& e) {
      reply_error(route, h, e.what());
    } catch (const std::exception& e) {
      reply_error(route, h, format("server {}: {}", o.rank, e.what()));
    }
  }

  void handle(const std::vector<MsgPtr>& route, const Header& h, std::vector<MsgPtr>& frames) {
    const bool from_server = h.sender < 0;
    if (h.op == Op::SetOptimizer) {
      LOOM_CHECK_T(CommError, h.num_frames == 1, "ps protocol: set_optimizer needs 1 frame");
      optimizer = make_server_optimizer(optim::decode_spec(frames[2]->bytes()));
      for (auto& [id, e] : entries) e.shard->set_optimizer(optimizer);
      reply(route, h, {});
      return;
    }
    if (h.op == Op::ShmAttach) return handle_shm_attach(route, h, frames);
    if (h.op == Op::Leave) {  // a worker is done: no round waits for it any more
      LOOM_CHECK(h.sender >= 0 && h.sender < o.num_workers, "kvstore: leave from worker {} (the job has {})", h.sender,
                 o.num_workers);
      retired.insert(h.sender);
      for (auto& [id, e] : entries) {
        if (e.shard->retire(h.sender) == PushResult::Applied) applied(id, e);
      }
      reply(route, h, {});
      return;
    }
    LOOM_CHECK(h.op != Op::Reply, "ps protocol: a reply sent as a request");
    if (h.sparse() && !from_server) return handle_sparse(route, h, frames);
    const int owner = owner_of(h);
    const std::vector<int> chain = replica_chain(owner, o.placement);
    LOOM_CHECK(std::find(chain.begin(), chain.end(), o.rank) != chain.end(),
               "kvstore: key {} rows [{}, {}) are not held by server {} (its servers: {}...)", h.key, h.row_begin,
               h.row_begin + h.num_rows, o.rank, owner);
    const SliceId id{h.key, h.row_begin};
    if (from_server) {
      handle_from_primary(route, h, frames, id, owner);
      return;
    }
    if (primary_of(chain) != o.rank) {  // a backup: wait until the primary is known lost
      deferred.emplace_back(route, frames);
      return;
    }
    switch (h.op) {
      case Op::Init: return handle_init(route, h, frames, id, owner);
      case Op::Push:
      case Op::PushPull: return handle_push(route, h, frames, id);
      case Op::Pull: return handle_pull(route, h, frames, id);
      case Op::GetState: return handle_get_state(route, h, id);
      case Op::SetState: return handle_set_state(route, h, frames, id, owner);
      default: throw CommError(format("ps protocol: a worker cannot send {}", op_name(h.op)));
    }
  }

  Entry& entry(const SliceId& id, const char* what) {
    auto it = entries.find(id);
    LOOM_CHECK(it != entries.end() && it->second.shard->initialized(),
               "kvstore: {} of key {}, which is not initialized (call init first)", what, id.key);
    return it->second;
  }

  void handle_init(const std::vector<MsgPtr>& route, const Header& h, std::vector<MsgPtr>& frames, const SliceId& id,
                   int owner) {
    const bool has_data = (h.flags & flag::kHasData) != 0;
    LOOM_CHECK_T(CommError, h.num_frames == (has_data ? 2u : 1u), "ps protocol: init needs {} frames",
                 has_data ? 2 : 1);
    const auto dims = check_dims(frames[2]->bytes(), h);
    const core::Shape shape(dims.begin(), dims.end());
    Entry& e = create_entry(id, h, dims, owner);
    e.shard->check_request(h, &shape);
    if (!has_data) {
      if (e.value_acked) {
        reply(route, h, {});
      } else {
        e.inits.push_back({route, h});
      }
      return;
    }
    if (e.shard->initialized()) {  // a repeated init (a retry after a failover): the value stays
      if (e.value_acked) reply(route, h, {});
      else e.inits.push_back({route, h});
      return;
    }
    e.shard->init(frames[3]->bytes());
    const auto f = spans(frames, 2);
    replicate(id, e, h, f, {{route, h}}, true);
  }

  void handle_push(const std::vector<MsgPtr>& route, const Header& h, std::vector<MsgPtr>& frames, const SliceId& id) {
    Entry& e = entry(id, "push");
    e.shard->check_request(h, nullptr);
    LOOM_CHECK_T(CommError, h.num_frames == 1, "ps protocol: a push needs 1 frame");
    const int worker = h.sender;
    LOOM_CHECK(worker >= 0 && worker < o.num_workers, "kvstore: push from worker {} (the job has {})", worker,
               o.num_workers);
    const Waiting w{.route = route, .request = h, .staged = staged(h, frames)};
    // The pushed bytes stay where they arrived: the frame, or the worker's
    // region (the worker leaves them there until this push is answered).
    PushData data{.data = w.staged.region ? Payload{w.staged.region, {w.staged.at(), h.slice_nbytes()}}
                                          : aligned(frames[2], h.dtype)};
    switch (e.shard->push(worker, h.version, std::move(data))) {
      case PushResult::Duplicate: answer(e, w); return;
      case PushResult::Pending: e.round.push_back(w); return;
      case PushResult::Applied: break;
    }
    e.round.push_back(w);
    applied(id, e);
  }

  // An update was applied: send it to the backups; the waiting pushes are answered once they hold it.
  void applied(const SliceId& id, Entry& e) {
    ++n_updates;
    std::vector<Waiting> replies = std::move(e.round);
    e.round.clear();
    const MergedUpdate u = e.shard->last_update();
    const ShardOptions& so = e.shard->options();
    Header r{.op = Op::Replicate, .dtype = so.dtype, .key = id.key, .version = u.version, .seq = e.shard->updates(),
             .row_begin = so.row_begin, .num_rows = so.num_rows, .row_numel = e.shard->row_numel(),
             .total_rows = key_rows(so.key_shape)};
    const int64_t meta[2] = {u.worker, u.version};
    std::vector<std::span<const std::byte>> f = {{reinterpret_cast<const std::byte*>(meta), sizeof meta}};
    if (!u.rows.empty() || u.data.size() != e.shard->nbytes()) {
      r.flags = flag::kSparse;
      f.push_back({reinterpret_cast<const std::byte*>(u.rows.data()), u.rows.size() * 8});
    }
    f.push_back(u.data);
    replicate(id, e, r, f, std::move(replies), false);
  }

  // A frame's bytes as a payload aligned for its dtype (ZeroMQ keeps small frames inline).
  static Payload aligned(const MsgPtr& m, core::DType dtype) {
    const auto b = m->bytes();
    if (reinterpret_cast<uintptr_t>(b.data()) % core::itemsize(dtype) != 0) return Payload::copy_of(b);
    return {m, b};
  }

  void handle_pull(const std::vector<MsgPtr>& route, const Header& h, std::vector<MsgPtr>& frames, const SliceId& id) {
    Entry& e = entry(id, "pull");
    e.shard->check_request(h, nullptr);
    const Waiting w{.route = route, .request = h, .staged = staged(h, frames)};
    LOOM_CHECK_T(CommError, h.num_frames == (w.staged.region ? 1u : 0u), "ps protocol: a pull has no frames");
    reply_value(w, e.shard->weights());
  }

  // A row-sparse push or pull (protocol.h): [first rows of the slices it is
  // about, all of one replica chain] [their row ids, slice by slice] (+ for a
  // push: [those rows]). The whole request is checked before any slice takes
  // it; a push is answered once every slice has applied it (dist_sync: merged
  // its round), a pull with the rows in the order asked.
  void handle_sparse(const std::vector<MsgPtr>& route, const Header& h, std::vector<MsgPtr>& frames) {
    LOOM_CHECK_T(CommError, h.op == Op::Push || h.op == Op::Pull, "ps protocol: a sparse {}", op_name(h.op));
    const uint32_t want = h.op == Op::Push ? 3 : 2;
    LOOM_CHECK_T(CommError, h.num_frames == want, "ps protocol: a sparse {} needs {} frames, got {}", op_name(h.op),
                 want, h.num_frames);
    const auto firsts = read_i64(frames[2]->bytes(), "slice list");
    const auto ids = read_i64(frames[3]->bytes(), "row ids");
    const size_t row_bytes = static_cast<size_t>(h.row_numel) * core::itemsize(h.dtype);
    Payload rows;
    if (h.op == Op::Push) {
      rows = aligned(frames[4], h.dtype);
      LOOM_CHECK_T(ShapeError, rows.bytes.size() == ids.size() * row_bytes,
                   "kvstore: row_sparse_push to key {}: {} bytes for {} rows of {} bytes", h.key, rows.bytes.size(),
                   ids.size(), row_bytes);
    }
    struct Part {
      SliceId id;
      Header h;
      Entry* e;
      PushData data;
    };
    std::vector<Part> parts;
    for (const SliceRows& r : split_rows(h.key, h.total_rows, h.row_numel, firsts, ids, o.placement)) {
      const Slice& s = r.slice;
      const std::vector<int> chain = replica_chain(s.server, o.placement);
      LOOM_CHECK(std::find(chain.begin(), chain.end(), o.rank) != chain.end(),
                 "kvstore: key {} rows [{}, {}) are not held by server {}", h.key, s.row_begin, s.row_begin + s.num_rows,
                 o.rank);
      if (primary_of(chain) != o.rank) {  // a backup: wait until the primary is known lost
        deferred.emplace_back(route, frames);
        return;
      }
      Part p{.id = {h.key, s.row_begin}, .h = h, .e = nullptr};
      p.h.row_begin = s.row_begin;
      p.h.num_rows = s.num_rows;
      p.e = &entry(p.id, h.op == Op::Push ? "row_sparse_push" : "row_sparse_pull");
      p.e->shard->check_request(p.h, nullptr);
      p.data.rows = std::vector<int64_t>(ids.begin() + static_cast<ptrdiff_t>(r.begin), ids.begin() + static_cast<ptrdiff_t>(r.end));
      if (h.op == Op::Push) {
        p.data.data = {rows.owner, rows.bytes.subspan(r.begin * row_bytes, (r.end - r.begin) * row_bytes)};
        p.e->shard->check_push(h.sender, h.version, p.data);
      }
      parts.push_back(std::move(p));
    }
    if (h.op == Op::Pull) {
      std::vector<std::byte> out(ids.size() * row_bytes);
      size_t at = 0;
      for (const Part& p : parts) {
        const size_t n = p.data.rows->size() * row_bytes;
        p.e->shard->read_rows(*p.data.rows, std::span(out).subspan(at, n));
        at += n;
      }
      const std::span<const std::byte> f = out;
      reply(route, h, std::span(&f, 1));
      return;
    }
    auto join = std::make_shared<Join>(Join{.route = route, .request = h, .remaining = parts.size()});
    for (Part& p : parts) {
      const Waiting w{.route = route, .request = p.h, .join = join};
      switch (p.e->shard->push(h.sender, h.version, std::move(p.data))) {
        case PushResult::Duplicate: answer(*p.e, w); break;
        case PushResult::Pending: p.e->round.push_back(w); break;
        case PushResult::Applied:
          p.e->round.push_back(w);
          applied(p.id, *p.e);
          break;
      }
    }
  }

  void handle_get_state(const std::vector<MsgPtr>& route, const Header& h, const SliceId& id) {
    Entry& e = entry(id, "get_state");
    const ShardState state = e.shard->state();
    reply(route, h, encode_shard_state(state).frames);
  }

  void handle_set_state(const std::vector<MsgPtr>& route, const Header& h, std::vector<MsgPtr>& frames,
                        const SliceId& id, int owner) {
    LOOM_CHECK_T(CommError, h.num_frames >= 3, "ps protocol: set_state needs dims, weights and counters");
    const auto dims = check_dims(frames[2]->bytes(), h);
    const core::Shape shape(dims.begin(), dims.end());
    Entry& e = create_entry(id, h, dims, owner);
    e.shard->check_request(h, &shape);
    e.shard->set_state(decode_shard_state(spans(frames, 3)));
    replicate(id, e, h, spans(frames, 2), {{route, h}}, true);
  }

  // A backup receiving its primary's init, update or state.
  void handle_from_primary(const std::vector<MsgPtr>& route, const Header& h, std::vector<MsgPtr>& frames,
                           const SliceId& id, int owner) {
    if (h.op == Op::Init || h.op == Op::SetState) {
      LOOM_CHECK_T(CommError, h.num_frames >= 2, "ps protocol: replicated {} without its frames", op_name(h.op));
      const auto dims = check_dims(frames[2]->bytes(), h);
      Entry& e = create_entry(id, h, dims, owner);
      if (h.op == Op::Init) e.shard->init(frames[3]->bytes());
      else e.shard->set_state(decode_shard_state(spans(frames, 3)));
      e.value_acked = true;
    } else {
      LOOM_CHECK_T(CommError, h.op == Op::Replicate && h.num_frames >= 2, "ps protocol: a server sent {}",
                   op_name(h.op));
      Entry& e = entry(id, "replicate");
      const auto meta = read_i64(frames[2]->bytes(), "replication counters");
      LOOM_CHECK_T(CommError, meta.size() == 2, "ps protocol: replication counters of {} values", meta.size());
      MergedUpdate u{.worker = static_cast<int>(meta[0]), .version = meta[1]};
      if (h.sparse()) {
        LOOM_CHECK_T(CommError, h.num_frames == 3, "ps protocol: a sparse replicate needs 3 frames");
        u.rows = read_i64(frames[3]->bytes(), "row ids");
      }
      u.data = frames.back()->bytes();
      const Payload p = aligned(frames.back(), h.dtype);
      u.data = p.bytes;
      if (e.shard->apply_replica(h.seq, u)) ++n_updates;
    }
    reply(route, h, {});
  }

  // ---- replication acknowledgements ----

  void on_peer_reply(int server, std::vector<MsgPtr>& frames) {
    if (frames.empty()) return;
    Header h;
    try {
      h = decode_header(frames[0]->bytes());
    } catch (const Error& e) {
      core::log(o.log, core::LogLevel::Warning, format("server {}: bad message from server {}: {}", o.rank, server, e.what()));
      return;
    }
    auto it = jobs.find(h.request_id);
    if (it == jobs.end()) return;
    if (h.status == Status::Error) {
      const auto b = frames.size() > 1 ? frames[1]->bytes() : std::span<const std::byte>();
      core::log(o.log, core::LogLevel::Error,
                format("server {}: backup {} refused an update: {}", o.rank, server,
                       std::string_view(reinterpret_cast<const char*>(b.data()), b.size())));
    }
    it->second.waiting.erase(server);
    if (it->second.waiting.empty()) {
      Job job = std::move(it->second);
      jobs.erase(it);
      finish(job);
    }
  }

  void on_server_lost(int s) {
    if (s < 0 || s >= o.placement.num_servers || lost[static_cast<size_t>(s)] || s == o.rank) return;
    lost[static_cast<size_t>(s)] = true;
    core::log(o.log, core::LogLevel::Warning,
              format("server {}: server {} lost; taking over its slices where this server is next", o.rank, s));
    // Jobs waiting for it finish without it.
    for (auto it = jobs.begin(); it != jobs.end();) {
      it->second.waiting.erase(s);
      if (it->second.waiting.empty()) {
        Job job = std::move(it->second);
        it = jobs.erase(it);
        finish(job);
      } else {
        ++it;
      }
    }
    // Slices this server now leads: bring the backups after it to its state first.
    for (auto& [id, e] : entries) {
      const auto pos = std::find(e.chain.begin(), e.chain.end(), s);
      if (pos == e.chain.end() || primary_of(e.chain) != o.rank) continue;
      const auto me = std::find(e.chain.begin(), e.chain.end(), o.rank);
      if (pos > me) continue;  // a backup after us was lost; nothing to take over
      if (!e.shard->initialized()) continue;
      const auto& shape = e.shard->options().key_shape;
      std::vector<int64_t> dims(shape.begin(), shape.end());
      const ShardState state = e.shard->state();
      const EncodedShardState encoded = encode_shard_state(state);
      std::vector<std::span<const std::byte>> f = {
          {reinterpret_cast<const std::byte*>(dims.data()), dims.size() * 8}};
      f.insert(f.end(), encoded.frames.begin(), encoded.frames.end());
      Header h{.op = Op::SetState, .dtype = e.shard->options().dtype, .key = id.key, .row_begin = id.row_begin,
               .num_rows = e.shard->options().num_rows, .row_numel = e.shard->row_numel(),
               .total_rows = key_rows(shape)};
      replicate(id, e, h, f, {}, true);
      e.value_acked = true;
    }
    // Requests that waited for the primary to go.
    auto waiting = std::move(deferred);
    deferred.clear();
    for (auto& [route, frames] : waiting) on_request(frames);
  }

  // ---- the loop ----

  void loop() {
    while (!stopping) {
      {
        std::vector<int> q;
        {
          std::lock_guard lock(lost_mu);
          q.swap(lost_queue);
        }
        for (int s : q) on_server_lost(s);
      }
      try {
        ep->poll(std::chrono::milliseconds(20), [this](const comm::Route& from, std::vector<MsgPtr>& frames) {
          frames.insert(frames.begin(), from);  // handlers see [route] [header] [payload...]
          try {
            on_request(frames);
          } catch (const std::exception& e) {
            ++n_errors;
            core::log(o.log, core::LogLevel::Warning, format("server {}: dropped a message: {}", o.rank, e.what()));
          }
        });
      } catch (const std::exception& e) {
        core::log(o.log, core::LogLevel::Error, format("server {}: {}", o.rank, e.what()));
        return;
      }
    }
  }
};

KVServer::KVServer(const ServerOptions& options) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.o = options;
  check_placement(options.placement);
  LOOM_CHECK_T(ConfigError, options.rank >= 0 && options.rank < options.placement.num_servers,
               "server rank {} of {} servers", options.rank, options.placement.num_servers);
  LOOM_CHECK_T(ConfigError, options.num_workers >= 1, "parameter server: needs at least one worker");
  comm::check_security(options.security);
  try {
    m.ep = std::make_unique<comm::ServerEndpoint>(comm::ServerEndpointOptions{.bind = options.bind,
                                                                               .security = options.security});
  } catch (const CommError& e) {
    throw CommError(format("parameter server: {}", e.what()));
  }
  m.lost.assign(static_cast<size_t>(options.placement.num_servers), false);
  m.peers.resize(static_cast<size_t>(options.placement.num_servers));
}

KVServer::~KVServer() = default;

std::string KVServer::endpoint() const { return impl_->ep->endpoint(); }

void KVServer::set_role(int rank, bool sync) {
  LOOM_CHECK(!impl_->thread.joinable(), "parameter server: set_role() after start()");
  LOOM_CHECK_T(ConfigError, rank >= 0 && rank < impl_->o.placement.num_servers, "server rank {} of {} servers", rank,
               impl_->o.placement.num_servers);
  impl_->o.rank = rank;
  impl_->o.sync = sync;
}

void KVServer::set_slice_elements(int64_t slice_elements) {
  LOOM_CHECK(!impl_->thread.joinable(), "parameter server: set_slice_elements() after start()");
  PlacementOptions placement = impl_->o.placement;
  placement.slice_elements = slice_elements;
  check_placement(placement);
  impl_->o.placement = placement;
}

void KVServer::connect_servers(const std::vector<std::string>& endpoints) {
  Impl& m = *impl_;
  LOOM_CHECK_T(ConfigError, static_cast<int>(endpoints.size()) == m.o.placement.num_servers,
               "parameter server: {} server endpoints for {} servers", endpoints.size(), m.o.placement.num_servers);
  LOOM_CHECK(!m.thread.joinable(), "parameter server: connect_servers() after start()");
  if (m.o.placement.replicas == 0) return;  // servers only talk to each other to replicate
  for (size_t s = 0; s < endpoints.size(); ++s) {
    if (static_cast<int>(s) == m.o.rank) continue;
    m.peers[s] = comm::Socket::dealer(m.ep->context(), endpoints[s]);
    const int server = static_cast<int>(s);
    m.ep->watch(m.peers[s], [&m, server](std::vector<MsgPtr>& frames) { m.on_peer_reply(server, frames); });
  }
}

void KVServer::start() {
  LOOM_CHECK(!impl_->thread.joinable(), "parameter server: started twice");
  impl_->thread = std::thread([m = impl_.get()] { m->loop(); });
}

void KVServer::stop() { impl_->stop(); }

void KVServer::server_lost(int rank) {
  std::lock_guard lock(impl_->lost_mu);
  impl_->lost_queue.push_back(rank);
}

ServerStats KVServer::stats() const {
  const Impl& m = *impl_;
  return {.requests = m.n_requests, .errors = m.n_errors, .updates = m.n_updates, .bytes_in = m.n_in,
          .bytes_out = m.n_out};
}

}  // namespace loom::ps
