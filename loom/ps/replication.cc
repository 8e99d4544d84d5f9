#include "loom/ps/replication.h"

#include <algorithm>
#include <utility>

#include "loom/core/error.h"
#include "loom/core/log.h"

namespace loom::ps::detail {

Replication::Replication(const ServerOptions& o, SliceTable& slices, Replier& replier, ServerCounters& counters)
    : o_(o), slices_(slices), replier_(replier), n_(counters) {
  lost_.assign(static_cast<size_t>(o.placement.num_servers), false);
  peers_.resize(static_cast<size_t>(o.placement.num_servers));
}

void Replication::connect(comm::ServerEndpoint& ep, const std::vector<std::string>& endpoints) {
  for (size_t s = 0; s < endpoints.size(); ++s) {
    if (static_cast<int>(s) == o_.rank) continue;
    peers_[s] = comm::Socket::dealer(ep.context(), endpoints[s]);
    const int server = static_cast<int>(s);
    ep.watch(peers_[s], [this, server](std::vector<MsgPtr>& frames) { on_peer_reply(server, frames); });
  }
}

int Replication::primary_of(const std::vector<int>& chain) const {
  for (int s : chain) {
    if (alive(s)) return s;
  }
  return -1;
}

void Replication::replicate(const SliceId& id, Entry& e, Header h, std::span<const std::span<const std::byte>> frames,
                            std::vector<Waiting> replies, bool marks_value) {
  Job job{.slice = id, .replies = std::move(replies), .marks_value = marks_value};
  const auto me = std::find(e.chain.begin(), e.chain.end(), o_.rank);
  const uint64_t job_id = next_job_++;
  h.sender = server_sender(o_.rank);
  h.request_id = job_id;
  for (auto it = me + 1; it != e.chain.end(); ++it) {
    if (!alive(*it) || !peers_[static_cast<size_t>(*it)]) continue;
    n_.bytes_out += send_message(peers_[static_cast<size_t>(*it)], {}, h, frames);
    job.waiting.insert(*it);
  }
  if (job.waiting.empty()) {
    finish(job);
  } else {
    jobs_.emplace(job_id, std::move(job));
  }
}

void Replication::finish(Job& job) {
  Entry* e = slices_.find(job.slice);
  if (e == nullptr) return;
  for (const auto& w : job.replies) replier_.answer(*e, w);
  if (job.marks_value) {
    e->value_acked = true;
    for (const auto& w : e->inits) replier_.answer(*e, w);
    e->inits.clear();
  }
}

void Replication::applied(const SliceId& id, Entry& e) {
  ++n_.updates;
  std::vector<Waiting> replies = std::move(e.round);
  e.round.clear();
  const MergedUpdate u = e.shard->last_update();
  const ShardOptions& so = e.shard->options();
  Header r{.op = Op::Replicate, .dtype = so.dtype, .key = id.key, .version = u.version, .seq = e.shard->updates(),
           .row_begin = so.row_begin, .num_rows = so.num_rows, .row_numel = e.shard->row_numel(),
           .total_rows = key_rows(so.key_shape)};
  const ReplicateCountersBytes counters = encode_replicate_counters({.worker = u.worker, .version = u.version});
  std::vector<std::span<const std::byte>> f = {counters};
  if (!u.rows.empty() || u.data.size() != e.shard->nbytes()) {
    r.flags = flag::kSparse;
    f.push_back({reinterpret_cast<const std::byte*>(u.rows.data()), u.rows.size() * 8});
  }
  f.push_back(u.data);
  replicate(id, e, r, f, std::move(replies), false);
}

void Replication::from_primary(const std::vector<MsgPtr>& route, const Header& h, std::vector<MsgPtr>& frames,
                               const SliceId& id, int owner) {
  if (h.op == Op::Init || h.op == Op::SetState) {
    LOOM_CHECK_T(CommError, h.num_frames >= 2, "ps protocol: replicated {} without its frames", op_name(h.op));
    const auto dims = decode_dims(frames[2]->bytes(), h);
    Entry& e = slices_.create(id, h, dims, owner);
    if (h.op == Op::Init) e.shard->init(frames[3]->bytes());
    else e.shard->set_state(decode_shard_state(spans(frames, 3)));
    e.value_acked = true;
  } else {
    LOOM_CHECK_T(CommError, h.op == Op::Replicate && h.num_frames >= 2, "ps protocol: a server sent {}",
                 op_name(h.op));
    Entry& e = slices_.at(id, "replicate");
    const ReplicateCounters counters = decode_replicate_counters(frames[2]->bytes());
    MergedUpdate u{.worker = counters.worker, .version = counters.version};
    if (h.sparse()) {
      LOOM_CHECK_T(CommError, h.num_frames == 3, "ps protocol: a sparse replicate needs 3 frames");
      u.rows = decode_i64_frame(frames[3]->bytes(), "row ids");
    }
    const Payload p = aligned(frames.back(), h.dtype);
    u.data = p.bytes;
    if (e.shard->apply_replica(h.seq, u)) ++n_.updates;
  }
  replier_.reply(route, h, {});
}

void Replication::on_peer_reply(int server, std::vector<MsgPtr>& frames) {
  if (frames.empty()) return;
  Header h;
  try {
    h = decode_header(frames[0]->bytes());
  } catch (const Error& e) {
    core::log(o_.log, core::LogLevel::Warning,
              format("server {}: bad message from server {}: {}", o_.rank, server, e.what()));
    return;
  }
  auto it = jobs_.find(h.request_id);
  if (it == jobs_.end()) return;
  if (h.status == Status::Error) {
    const auto b = frames.size() > 1 ? frames[1]->bytes() : std::span<const std::byte>();
    core::log(o_.log, core::LogLevel::Error,
              format("server {}: backup {} refused an update: {}", o_.rank, server,
                     std::string_view(reinterpret_cast<const char*>(b.data()), b.size())));
  }
  it->second.waiting.erase(server);
  if (it->second.waiting.empty()) {
    Job job = std::move(it->second);
    jobs_.erase(it);
    finish(job);
  }
}

std::deque<std::vector<MsgPtr>> Replication::server_lost(int s) {
  if (s < 0 || s >= o_.placement.num_servers || lost_[static_cast<size_t>(s)] || s == o_.rank) return {};
  lost_[static_cast<size_t>(s)] = true;
  core::log(o_.log, core::LogLevel::Warning,
            format("server {}: server {} lost; taking over its slices where this server is next", o_.rank, s));
  // Jobs waiting for it finish without it.
  for (auto it = jobs_.begin(); it != jobs_.end();) {
    it->second.waiting.erase(s);
    if (it->second.waiting.empty()) {
      Job job = std::move(it->second);
      it = jobs_.erase(it);
      finish(job);
    } else {
      ++it;
    }
  }
  // Slices this server now leads: bring the backups after it to its state first.
  for (auto& [id, e] : slices_.entries()) {
    const auto pos = std::find(e.chain.begin(), e.chain.end(), s);
    if (pos == e.chain.end() || primary_of(e.chain) != o_.rank) continue;
    const auto me = std::find(e.chain.begin(), e.chain.end(), o_.rank);
    if (pos > me) continue;  // a backup after us was lost; nothing to take over
    if (!e.shard->initialized()) continue;
    take_over(id, e);
  }
  // Requests that waited for the primary to go.
  return std::exchange(deferred_, {});
}

void Replication::take_over(const SliceId& id, Entry& e) {
  const auto& shape = e.shard->options().key_shape;
  std::vector<int64_t> dims(shape.begin(), shape.end());
  const ShardState state = e.shard->state();
  const EncodedShardState encoded = encode_shard_state(state);
  std::vector<std::span<const std::byte>> f = {{reinterpret_cast<const std::byte*>(dims.data()), dims.size() * 8}};
  f.insert(f.end(), encoded.frames.begin(), encoded.frames.end());
  Header h{.op = Op::SetState, .dtype = e.shard->options().dtype, .key = id.key, .row_begin = id.row_begin,
           .num_rows = e.shard->options().num_rows, .row_numel = e.shard->row_numel(),
           .total_rows = key_rows(shape)};
  replicate(id, e, h, f, {}, true);
  e.value_acked = true;
}

}  // namespace loom::ps::detail
