// The worker side of the parameter servers: the request plan
// (request_plan.h) sent through comm::RequestClient (one deadline per call,
// re-sent to the next replica when the failover policy says a server is lost).
#include <algorithm>
#include <cstring>
#include <exception>
#include <functional>
#include <map>

#include "loom/comm/rendezvous/coordinator.h"
#include "loom/comm/wire/endpoint.h"
#include "loom/comm/rendezvous/job_env.h"
#include "loom/comm/rendezvous/join_job.h"
#include "loom/comm/rendezvous/rendezvous_keys.h"
#include "loom/core/error.h"
#include "loom/ps/failover.h"
#include "loom/ps/kvstore.h"
#include "loom/ps/kvstore_internal.h"
#include "loom/ps/messages.h"
#include "loom/ps/request_plan.h"
#include "loom/ps/shm_staging.h"

namespace loom::ps {
namespace {

using comm::Call;
using comm::FramePtr;
using comm::OutFrame;

struct KeyInfo {
  KeyLayout layout;
  int64_t version = 0;  // this worker's pushes to the key
};

// A slice's state to send, and its frames (which borrow it).
struct SliceState {
  ShardState state;
  EncodedShardState frames;
};

// What the replies of one call said: error messages, and how many succeeded.
struct Replies {
  std::vector<std::string> errors;
  size_t ok = 0;
};

using OnPayload = std::function<void(std::span<const FramePtr> payload)>;

std::span<const std::byte> as_bytes(const std::vector<int64_t>& v) {
  return {reinterpret_cast<const std::byte*>(v.data()), v.size() * 8};
}

// Bytes the caller's tensor owns, lent to ZeroMQ without a copy when big.
OutFrame lend(const Tensor& t, std::span<const std::byte> bytes) { return OutFrame::lend(bytes, t.impl_ptr()); }

// The servers a worker may share memory with: those on its host, unless turned off.
std::vector<bool> servers_sharing_memory(const DistKVStoreOptions& o) {
  std::vector<bool> on(o.server_endpoints.size(), false);
  if (!o.options.shared_memory) return on;
  for (size_t s = 0; s < on.size() && s < o.servers_on_my_host.size(); ++s) on[s] = o.servers_on_my_host[s];
  return on;
}

// Shared with the coordinator's loss callback, which may outlive the store.
struct Links {
  explicit Links(io::Mode mode) : policy(mode) {}
  FailoverPolicy policy;
  std::unique_ptr<comm::RequestClient> client;
};

class DistKVStore final : public KVStore {
 public:
  explicit DistKVStore(DistKVStoreOptions o)
      : o_(std::move(o)), links_(std::make_shared<Links>(o_.type)), staging_(o_.rank, servers_sharing_memory(o_)) {
    LOOM_CHECK_T(ConfigError, io::uses_servers(o_.type), "kvstore: type '{}' has no parameter servers (dist_sync, "
                 "dist_async, dist_ssp)", o_.type);
    LOOM_CHECK_T(ConfigError, !o_.server_endpoints.empty(), "kvstore {}: the job has no parameter servers", o_.type);
    placement_ = {.num_servers = static_cast<int>(o_.server_endpoints.size()), .replicas = o_.options.replicas,
                  .split_bound = o_.options.split_bound, .slice_elements = o_.options.slice_elements};
    check_placement(placement_);
    links_->client = std::make_unique<comm::RequestClient>(comm::RequestClientOptions{
        .peers = o_.server_endpoints, .security = o_.security, .ids = request_ids(), .name = "kvstore"});
    if (client()) {
      std::weak_ptr<Links> weak = links_;
      client()->on_peer_lost([weak](const comm::LostPeer& p) {
        auto l = weak.lock();
        if (!l) return;
        if (const auto server = l->policy.lost(p)) l->client->peer_lost(*server, p.describe());
      });
    }
  }

  ~DistKVStore() override {
    // An error unwinding through the owner is not the end of training: leaving
    // would retire this worker from every round (the others would train on
    // without it) and wait at the close barrier for them. Dropping the
    // coordinator client without leave() reports this worker lost instead,
    // so every peer's call fails at once, naming it (ProcessGroup does the same).
    if (std::uncaught_exceptions() > 0) {
      core::log(o_.options.log, core::LogLevel::Error,
                format("kvstore: worker {} stopped on an error; not leaving the job, its peers learn it is lost",
                       o_.rank));
      return;
    }
    try {
      close();
    } catch (const std::exception& e) {
      core::log(o_.options.log, core::LogLevel::Error, format("kvstore: closing: {}", e.what()));
    }
  }

  io::Mode type() const override { return o_.type; }
  int rank() const override { return o_.rank; }
  int num_workers() const override { return o_.num_workers; }

  void init(std::span<const int64_t> keys, std::span<const Tensor> values) override {
    LOOM_CHECK(keys.size() == values.size(), "kvstore: init of {} keys with {} values", keys.size(), values.size());
    Replies replies;
    std::vector<Call> calls;
    for (size_t i = 0; i < keys.size(); ++i) {
      detail::check_value(keys[i], values[i], "init");
      LOOM_CHECK(!keys_info_.contains(keys[i]), "kvstore: key {} is already initialized", keys[i]);
      const KeyLayout layout = describe(keys[i], values[i]);
      const std::vector<int64_t> dims(layout.shape.begin(), layout.shape.end());
      for (DenseRequest& r : plan_dense(Op::Init, keys[i], layout, 0, placement_)) {
        std::vector<OutFrame> payload = {OutFrame::copy(as_bytes(dims))};
        if (o_.rank == 0) {
          r.header.flags = flag::kHasData;
          payload.push_back(lend(values[i], detail::bytes_of(values[i]).subspan(r.offset, r.nbytes)));
        }
        calls.push_back(call(r.header, std::move(r.chain), std::move(payload), nullptr, replies));
      }
    }
    run(calls, "init", replies);
    for (size_t i = 0; i < keys.size(); ++i) keys_info_.emplace(keys[i], KeyInfo{describe(keys[i], values[i])});
  }

  void push(std::span<const int64_t> keys, std::span<const Tensor> values) override {
    push_impl(keys, values, {}, Op::Push);
  }
  void pushpull(std::span<const int64_t> keys, std::span<const Tensor> values, std::span<const Tensor> outs) override {
    LOOM_CHECK(keys.size() == outs.size(), "kvstore: pushpull of {} keys into {} tensors", keys.size(), outs.size());
    push_impl(keys, values, outs, Op::PushPull);
  }

  void pull(std::span<const int64_t> keys, std::span<const Tensor> outs) override {
    LOOM_CHECK(keys.size() == outs.size(), "kvstore: pull of {} keys into {} tensors", keys.size(), outs.size());
    Replies replies;
    std::vector<DenseSend> sends;
    for (size_t i = 0; i < keys.size(); ++i) {
      detail::check_value(keys[i], outs[i], "pull");
      const KeyLayout layout = known_or_described(keys[i], outs[i], "pull").layout;
      for (DenseRequest& r : plan_dense(Op::Pull, keys[i], layout, 0, placement_)) {
        const auto out = detail::mutable_bytes_of(outs[i]).subspan(r.offset, r.nbytes);
        sends.push_back({.r = std::move(r), .key = keys[i], .out = out});
      }
    }
    std::vector<Call> calls = dense_calls(sends, replies);
    run(calls, "pull", replies);
  }

  void row_sparse_push(int64_t key, const Tensor& row_ids, const Tensor& rows) override {
    KeyInfo& info = known(key, "row_sparse_push");
    const auto ids = detail::row_ids_of(key, row_ids, true);
    check_rows_tensor(key, info.layout, rows, ids.size(), "row_sparse_push");
    check_row_ids(key, info.layout, ids, "row_sparse_push");
    const int64_t version = ++info.version;
    // dist_sync merges a round per slice, so every slice hears from every worker (maybe no rows).
    const auto plan = std::make_shared<std::vector<SparseRequest>>(
        plan_sparse(Op::Push, key, info.layout, ids, o_.type == io::Mode::DistSync, placement_, version));
    const auto all = detail::bytes_of(rows);
    const size_t rb = info.layout.row_bytes();
    Replies replies;
    std::vector<Call> calls;
    for (SparseRequest& r : *plan) {
      // This server's rows, gathered in the order of its ids; the frame owns them.
      auto gathered = std::make_shared<std::vector<std::byte>>();
      gathered->reserve(r.positions.size() * rb);
      for (size_t i : r.positions) gathered->insert(gathered->end(), all.begin() + i * rb, all.begin() + (i + 1) * rb);
      std::vector<OutFrame> payload = {OutFrame::lend(as_bytes(r.firsts), plan), OutFrame::lend(as_bytes(r.ids), plan),
                                       OutFrame::lend(*gathered, gathered)};
      calls.push_back(call(r.header, r.chain, std::move(payload), nullptr, replies));
    }
    run_versioned(calls, "row_sparse_push", replies, {&info});
  }

  void row_sparse_pull(int64_t key, const Tensor& out, const Tensor& row_ids) override {
    KeyInfo& info = known(key, "row_sparse_pull");
    const auto ids = detail::row_ids_of(key, row_ids, false);
    check_rows_tensor(key, info.layout, out, ids.size(), "row_sparse_pull");
    check_row_ids(key, info.layout, ids, "row_sparse_pull");
    const auto plan = std::make_shared<const std::vector<SparseRequest>>(
        plan_sparse(Op::Pull, key, info.layout, ids, false, placement_));
    const auto dst = detail::mutable_bytes_of(out);
    const size_t rb = info.layout.row_bytes();
    Replies replies;
    std::vector<Call> calls;
    for (const SparseRequest& r : *plan) {
      auto scatter = [&dst, &r, rb, key](std::span<const FramePtr> f) {
        LOOM_CHECK_T(CommError, f.size() == 1 && f[0]->bytes().size() == r.positions.size() * rb,
                     "kvstore: row_sparse_pull of key {}: reply of the wrong size", key);
        for (size_t i = 0; i < r.positions.size(); ++i) {
          std::memcpy(dst.data() + r.positions[i] * rb, f[0]->bytes().data() + i * rb, rb);
        }
      };
      calls.push_back(call(r.header, r.chain, {OutFrame::lend(as_bytes(r.firsts), plan), OutFrame::lend(as_bytes(r.ids), plan)},
                           scatter, replies));
    }
    run(calls, "row_sparse_pull", replies);
  }

  void set_optimizer(const optim::OptimizerSpec& spec) override {
    if (o_.rank == 0) {
      optim::check_spec(spec);  // here, not as one error reply per server
      const std::vector<std::byte> bytes = optim::encode_spec(spec);
      Replies replies;
      std::vector<Call> calls;
      for (ServerRequest& r : plan_every_server(Op::SetOptimizer, placement_)) {
        calls.push_back(call(r.header, std::move(r.chain), {OutFrame::copy(bytes)}, nullptr, replies));
        calls.back().optional = true;  // a lost server has nothing to set
      }
      run(calls, "set_optimizer", replies);
    }
    barrier();
  }

  void barrier() override {
    if (client()) client()->barrier(comm::rendezvous::kv_barrier(barriers_++), o_.options.timeout, "worker");
  }

  void advance_clock() override {
    if (o_.type != io::Mode::DistSsp || !client()) return;
    ++clock_;
    client()->set(comm::rendezvous::ssp_clock(o_.rank, clock_), comm::rendezvous::kDone, o_.options.timeout);
    // Starting step clock_+1 needs every worker to have finished step clock_ - s.
    const int64_t need = clock_ - o_.options.staleness;
    if (need < 1) return;
    if (seen_clock_.empty()) seen_clock_.assign(static_cast<size_t>(o_.num_workers), 0);
    for (int u = 0; u < o_.num_workers; ++u) {
      if (u == o_.rank || seen_clock_[static_cast<size_t>(u)] >= need) continue;
      client()->get(comm::rendezvous::ssp_clock(u, need), o_.options.timeout);
      seen_clock_[static_cast<size_t>(u)] = need;
    }
  }

  void optimizer_states(const std::string& prefix, io::NamedTensors& tensors, io::Metadata& meta) override {
    if (o_.rank != 0) return;
    std::map<int64_t, detail::KeyState> states;
    Replies replies;
    std::vector<Call> calls;
    for (auto& [key, info] : keys_info_) {
      auto& st = states[key];
      st.shape = info.layout.shape;
      st.dtype = info.layout.dtype;
      const size_t total = info.layout.nbytes();
      for (DenseRequest& r : plan_dense(Op::GetState, key, info.layout, 0, placement_)) {
        auto fill = [&st, offset = r.offset, n = r.nbytes, total, k = key](std::span<const FramePtr> f) {
          std::vector<std::span<const std::byte>> frames;
          for (const FramePtr& m : f) frames.push_back(m->bytes());
          ShardState s = decode_shard_state(frames);
          LOOM_CHECK_T(CommError, s.weights.size() == n, "kvstore: state of key {}: part of the wrong size", k);
          const size_t parts = 1 + s.slots.size();
          if (st.parts.empty()) st.parts.assign(parts, std::vector<std::byte>(total));
          LOOM_CHECK_T(CommError, st.parts.size() == parts, "kvstore: state of key {}: slices disagree", k);
          for (size_t j = 0; j < parts; ++j) {
            std::memcpy(st.parts[j].data() + offset, (j == 0 ? s.weights : s.slots[j - 1]).data(), n);
          }
          st.updates = std::max(st.updates, s.updates);
        };
        calls.push_back(call(r.header, std::move(r.chain), {}, fill, replies));
      }
    }
    run(calls, "save_optimizer_states", replies);
    detail::put_states(states, prefix, tensors, meta);
  }

  void restore_optimizer_states(const io::SafetensorsFile& file, const std::string& prefix,
                                const std::string& source) override {
    if (o_.rank == 0) {
      const auto states = detail::get_states(file, prefix, source);
      Replies replies;
      std::vector<Call> calls;
      for (const auto& [key, st] : states) {
        const KeyLayout& layout = known(key, "load_optimizer_states").layout;
        LOOM_CHECK_T(ShapeError, layout.shape == st.shape && layout.dtype == st.dtype,
                     "{}: key {} is {} {} there, {} {} here", source, key, core::name(st.dtype),
                     core::to_string(st.shape), core::name(layout.dtype), core::to_string(layout.shape));
        const std::vector<int64_t> dims(layout.shape.begin(), layout.shape.end());
        for (DenseRequest& r : plan_dense(Op::SetState, key, layout, 0, placement_)) {
          // The slice's part of each tensor; update count kept, rounds and
          // versions from 0 (the workers count their pushes from 0 again).
          auto slice = std::make_shared<SliceState>();
          auto part = [&](size_t j) {
            const auto b = std::span(st.parts[j]).subspan(r.offset, r.nbytes);
            return std::vector<std::byte>(b.begin(), b.end());
          };
          slice->state.weights = part(0);
          for (size_t j = 1; j < st.parts.size(); ++j) slice->state.slots.push_back(part(j));
          slice->state.updates = st.updates;
          slice->state.versions.assign(static_cast<size_t>(o_.num_workers), 0);
          slice->frames = encode_shard_state(slice->state);
          std::vector<OutFrame> payload = {OutFrame::copy(as_bytes(dims))};
          for (const auto& f : slice->frames.frames) payload.push_back(OutFrame::lend(f, slice));
          calls.push_back(call(r.header, std::move(r.chain), std::move(payload), nullptr, replies));
        }
      }
      run(calls, "load_optimizer_states", replies);
    }
    for (auto& [key, info] : keys_info_) info.version = 0;  // the servers count rounds from 0 again
    barrier();
  }

  KVStoreStats stats() const override {
    const comm::RequestStats& s = links_->client->stats();
    return {.requests = s.requests, .bytes_sent = s.bytes_sent + shm_bytes_sent_,
            .bytes_received = s.bytes_received + shm_bytes_received_, .shm_bytes_sent = shm_bytes_sent_,
            .shm_bytes_received = shm_bytes_received_};
  }

  void close() override {
    if (closed_) return;
    closed_ = true;
    // Tell every server first: dist_sync rounds stop waiting for this worker,
    // so workers with more steps left finish theirs instead of hanging.
    Replies replies;
    std::vector<Call> calls;
    for (ServerRequest& r : plan_every_server(Op::Leave, placement_)) {
      calls.push_back(call(r.header, std::move(r.chain), {}, nullptr, replies));
      calls.back().optional = true;  // nothing to tell a lost server
    }
    run(calls, "close", replies);
    if (!client()) return;
    client()->barrier(comm::rendezvous::kKvClose, o_.options.timeout, "worker");
    if (o_.rank == 0) client()->set(comm::rendezvous::kPsFinished, comm::rendezvous::kDone, o_.options.timeout);
    client()->leave();
  }

 private:
  comm::CoordinatorClient* client() const { return o_.owned_client ? o_.owned_client.get() : o_.client; }

  KeyLayout describe(int64_t key, const Tensor& t) const { return key_layout(key, t.shape(), t.dtype(), placement_); }
  KeyInfo& known(int64_t key, const char* what) {
    auto it = keys_info_.find(key);
    LOOM_CHECK(it != keys_info_.end(), "kvstore: {} of key {}, which is not initialized (call init first)", what, key);
    return it->second;
  }
  // A key this worker initialized is checked here; any other goes to the
  // servers as described by the tensor, and they decide.
  KeyInfo known_or_described(int64_t key, const Tensor& t, const char* what) {
    auto it = keys_info_.find(key);
    if (it == keys_info_.end()) return {describe(key, t)};
    detail::check_matches(key, t, it->second.layout.shape, it->second.layout.dtype, what);
    return it->second;
  }
  static void check_rows_tensor(int64_t key, const KeyLayout& layout, const Tensor& t, size_t n, const char* what) {
    detail::check_value(key, t, what);
    core::Shape want = layout.shape;
    if (want.empty()) want.push_back(1);
    want[0] = static_cast<int64_t>(n);
    LOOM_CHECK_T(ShapeError, t.shape() == want && t.dtype() == layout.dtype,
                 "kvstore: {} of key {}: rows are {} {}, expected {} {}", what, key, core::name(t.dtype()),
                 core::to_string(t.shape()), core::name(layout.dtype), core::to_string(want));
  }
  static void check_row_ids(int64_t key, const KeyLayout& layout, std::span<const int64_t> ids, const char* what) {
    for (int64_t id : ids) {
      LOOM_CHECK_T(IndexError, id >= 0 && id < key_rows(layout.shape), "kvstore: {} of key {}: row {} of {}", what,
                   key, id, key_rows(layout.shape));
    }
  }
  static OnPayload receive_into(std::span<std::byte> dst, int64_t key) {
    return [dst, key](std::span<const FramePtr> f) {
      LOOM_CHECK_T(CommError, f.size() == 1 && f[0]->bytes().size() == dst.size(),
                   "kvstore: key {}: reply of {} bytes for a slice of {}", key, f.empty() ? 0 : f[0]->bytes().size(),
                   dst.size());
      std::memcpy(dst.data(), f[0]->bytes().data(), dst.size());
    };
  }

  // One dense slice request: what it sends (push) and where its reply's bytes go (pull).
  struct DenseSend {
    DenseRequest r;
    int64_t key = 0;
    std::span<const std::byte> in;
    std::shared_ptr<const void> owner;  // keeps `in` alive while ZeroMQ sends it
    std::span<std::byte> out;
  };
  static constexpr size_t kOverSocket = ~size_t{0};

  // The calls for dense slice requests: through the staging region when every
  // server of the slice's chain shares this host (the bytes copied in now, the
  // reply's copied out as it comes), over the socket otherwise.
  std::vector<Call> dense_calls(std::vector<DenseSend>& sends, Replies& replies) {
    std::vector<size_t> at(sends.size(), kOverSocket);
    size_t total = 0;
    for (size_t k = 0; k < sends.size(); ++k) {
      if (!staging_.on_host(sends[k].r.chain)) continue;
      at[k] = total;
      total += (sends[k].r.nbytes + ShmStaging::kAlign - 1) / ShmStaging::kAlign * ShmStaging::kAlign;
    }
    if (total > 0) attach_staging(staging_.reserve(total));
    std::vector<Call> calls;
    calls.reserve(sends.size());
    for (size_t k = 0; k < sends.size(); ++k) {
      DenseSend& d = sends[k];
      if (at[k] != kOverSocket && staging_.covers(d.r.chain)) {
        std::byte* slot = staging_.data() + at[k];
        if (!d.in.empty()) std::memcpy(slot, d.in.data(), d.in.size());
        shm_bytes_sent_ += d.in.size();
        d.r.header.flags |= flag::kShm;
        const uint64_t offset = at[k];
        OnPayload into;
        if (!d.out.empty()) into = receive_staged(slot, d.out, d.key, shm_bytes_received_);
        calls.push_back(call(d.r.header, std::move(d.r.chain), {OutFrame::copy({reinterpret_cast<const std::byte*>(&offset), 8})},
                             std::move(into), replies));
        continue;
      }
      std::vector<OutFrame> payload;
      if (!d.in.empty()) payload.push_back(OutFrame::lend(d.in, d.owner));
      calls.push_back(call(d.r.header, std::move(d.r.chain), std::move(payload),
                           d.out.empty() ? OnPayload() : receive_into(d.out, d.key), replies));
    }
    return calls;
  }

  // The servers in `servers` map the staging region (Op::ShmAttach); one that
  // cannot is served over the socket from now on.
  void attach_staging(const std::vector<int>& servers) {
    if (servers.empty()) return;
    Replies replies;
    std::vector<Call> calls;
    const std::string& name = staging_.name();
    for (int s : servers) {
      Call c = call(Header{.op = Op::ShmAttach}, {s}, {OutFrame::copy(name)}, nullptr, replies);
      c.optional = true;  // a lost server maps nothing; its slices go to their backups over the socket
      c.on_reply = [this, s](std::span<const FramePtr> reply) {
        const Header h = decode_header(reply[0]->bytes());
        if (h.status == Status::Ok) return staging_.attached(s, true);
        staging_.attached(s, false);
        core::log(o_.options.log, core::LogLevel::Warning,
                  format("kvstore: server {} cannot map worker {}'s shared memory ({}); its slices go over the socket",
                         s, o_.rank, reply.size() > 1 ? reply[1]->view() : std::string_view("no reason given")));
      };
      calls.push_back(std::move(c));
    }
    try {
      run(calls, "shm_attach", replies);
    } catch (...) {
      staging_.attach_done();
      throw;
    }
    staging_.attach_done();
  }

  static OnPayload receive_staged(const std::byte* slot, std::span<std::byte> dst, int64_t key, uint64_t& counted) {
    return [slot, dst, key, &counted](std::span<const FramePtr> f) {
      LOOM_CHECK_T(CommError, f.empty(), "kvstore: key {}: a shared-memory reply with {} frames", key, f.size());
      std::memcpy(dst.data(), slot, dst.size());
      counted += dst.size();
    };
  }

  // One request: the header (the endpoint writes the request id into it), its
  // payload, who may answer, and what an Ok reply's payload frames go to.
  Call call(Header h, std::vector<int> chain, std::vector<OutFrame> payload, OnPayload on_payload,
            Replies& replies) const {
    h.sender = o_.rank;
    h.num_frames = static_cast<uint32_t>(payload.size());
    const HeaderBytes b = encode_header(h);
    Call c{.header = {b.begin(), b.end()}, .payload = std::move(payload), .peers = std::move(chain)};
    c.on_reply = [&replies, f = std::move(on_payload)](std::span<const FramePtr> reply) {
      const Header h = decode_header(reply[0]->bytes());
      if (h.status == Status::Error) {
        replies.errors.emplace_back(reply.size() > 1 ? reply[1]->view() : std::string_view());
        return;
      }
      ++replies.ok;
      if (f) f(reply.subspan(1));
    };
    return c;
  }

  void push_impl(std::span<const int64_t> keys, std::span<const Tensor> values, std::span<const Tensor> outs, Op op) {
    LOOM_CHECK(keys.size() == values.size(), "kvstore: push of {} keys with {} values", keys.size(), values.size());
    Replies replies;
    std::vector<DenseSend> sends;
    std::vector<KeyInfo*> counted;
    std::map<int64_t, KeyInfo> strangers;  // keys this worker did not init: the servers judge them
    for (size_t i = 0; i < keys.size(); ++i) {
      detail::check_value(keys[i], values[i], op_name(op).data());
      if (!outs.empty()) detail::check_value(keys[i], outs[i], "pushpull");
      const KeyInfo info = known_or_described(keys[i], values[i], "push");
      KeyInfo* live = keys_info_.contains(keys[i]) ? &keys_info_[keys[i]] : &(strangers[keys[i]] = info);
      const int64_t version = ++live->version;
      counted.push_back(live);
      const auto bytes = detail::bytes_of(values[i]);
      for (DenseRequest& r : plan_dense(op, keys[i], info.layout, version, placement_)) {
        const auto in = bytes.subspan(r.offset, r.nbytes);
        const auto out = outs.empty() ? std::span<std::byte>() : detail::mutable_bytes_of(outs[i]).subspan(r.offset, r.nbytes);
        sends.push_back({.r = std::move(r), .key = keys[i], .in = in, .owner = values[i].impl_ptr(), .out = out});
      }
    }
    std::vector<Call> calls = dense_calls(sends, replies);
    run_versioned(calls, op_name(op).data(), replies, counted);
  }

  // A push that every server refused did not count: the worker's version goes back.
  void run_versioned(std::vector<Call>& calls, const char* what, Replies& replies, const std::vector<KeyInfo*>& counted) {
    try {
      run(calls, what, replies);
    } catch (const ValueError&) {
      if (replies.ok == 0) {
        for (KeyInfo* k : counted) --k->version;
      }
      throw;
    }
  }

  // Sends every request, waits for every reply (one deadline), then throws
  // ValueError with the servers' error replies, if any.
  void run(std::vector<Call>& calls, const char* what, Replies& replies) {
    const Links& l = *links_;
    links_->client->call(calls, {.timeout = o_.options.timeout, .what = what, .check = [&l] { l.policy.check(); }});
    if (!replies.errors.empty()) {
      const auto& e = replies.errors;
      throw ValueError(e.size() == 1 ? e[0] : format("{} (and {} more errors)", e[0], e.size() - 1));
    }
  }

  DistKVStoreOptions o_;
  PlacementOptions placement_;
  std::shared_ptr<Links> links_;
  std::map<int64_t, KeyInfo> keys_info_;
  ShmStaging staging_;
  uint64_t shm_bytes_sent_ = 0, shm_bytes_received_ = 0;
  int64_t barriers_ = 0;
  int64_t clock_ = 0;
  std::vector<int64_t> seen_clock_;
  bool closed_ = false;
};

}  // namespace

std::unique_ptr<KVStore> connect_kvstore(DistKVStoreOptions options) {
  return std::make_unique<DistKVStore>(std::move(options));
}

std::unique_ptr<KVStore> KVStore::create(io::Mode type, const KVStoreOptions& options) {
  if (type == io::Mode::Local) return detail::create_local_kvstore();
  return join_kvstore(comm::read_job_env(), type, options);
}

std::unique_ptr<KVStore> join_kvstore(const comm::JobEnv& env, io::Mode type, const KVStoreOptions& options) {
  LOOM_CHECK_T(ConfigError, io::uses_servers(type), "kvstore: type '{}' has no parameter servers (dist_sync, "
               "dist_async, dist_ssp)", type);
  LOOM_CHECK_T(ConfigError, env.has_coordinator() && env.num_servers > 0,
               "kvstore {}: no parameter-server job to join (start it with `loom launch --servers S`, a job file with "
               "[distributed] servers, or DMLC_* / LOOM_* variables)", type);
  LOOM_CHECK_T(ConfigError, env.role == "worker", "kvstore {}: this process is a {}, not a worker", type, env.role);
  // A parameter-server worker has no data endpoint: it only sends requests.
  comm::JoinedJob job = comm::join_job(env, {.role = "worker", .timeout = options.join_timeout});
  const std::shared_ptr<comm::CoordinatorClient> client = job.client;
  const comm::Membership& m = job.membership;
  if (m.rank == 0) client->set(comm::rendezvous::kPsType, std::string(io::name(type)), options.join_timeout);
  // The servers publish how they place keys; the workers must place them the same way.
  const std::string config = client->get(comm::rendezvous::kPsConfig, options.join_timeout);
  KVStoreOptions o = options;
  try {
    const ServerConfig c = decode_config(config);
    o.replicas = c.replicas;
    o.split_bound = c.split_bound;
    o.slice_elements = c.slice_elements;
  } catch (const CommError& e) {
    throw CommError(format("kvstore: the servers published a bad configuration: {}", e.what()));
  }
  std::vector<bool> on_my_host;
  for (int s = 0; s < m.num_servers; ++s) on_my_host.push_back(m.at("server", s).host == m.self().host);
  return connect_kvstore({.type = type, .rank = m.rank, .num_workers = m.num_workers,
                          .server_endpoints = m.endpoints("server"), .security = env.security(), .options = o,
                          .owned_client = client, .servers_on_my_host = on_my_host});
}

}  // namespace loom::ps
