// The worker side of the parameter servers: routes each key slice to its
// primary, sends a call's requests together and waits for all the replies,
// re-sending to the next replica when a server is lost.
#include <zmq.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <set>

#include "loom/comm/coordinator.h"
#include "loom/comm/job_env.h"
#include "loom/core/error.h"
#include "loom/ps/kvstore.h"
#include "loom/ps/kvstore_internal.h"
#include "loom/ps/zmq_frames.h"

namespace loom::ps {
namespace {

using Clock = std::chrono::steady_clock;
using detail::MsgPtr;

// What the coordinator told us about lost processes (written from its thread).
struct Losses {
  std::mutex mu;
  std::set<int> servers;
  std::string worker;       // the first lost worker, described
  std::string coordinator;  // set when the coordinator itself is lost
  std::map<int, std::string> server_why;
};

struct KeyInfo {
  core::Shape shape;
  core::DType dtype = core::DType::F32;
  std::vector<Slice> slices;
  int64_t version = 0;  // this worker's pushes to the key
  size_t row_bytes() const { return static_cast<size_t>(key_row_numel(shape)) * core::itemsize(dtype); }
};

struct Request {
  Header h;
  std::vector<std::span<const std::byte>> frames;
  std::vector<int> chain;  // servers that may answer, in order
  bool any_server = false;  // set_optimizer: goes to chain[0] only, skipped if it is lost
  int sent_to = -1;
  bool done = false;
  bool failed = false;
  std::function<void(std::vector<MsgPtr>&)> on_reply;  // reply frames after the header
};

class DistKVStore final : public KVStore {
 public:
  explicit DistKVStore(DistKVStoreOptions o) : o_(std::move(o)), losses_(std::make_shared<Losses>()) {
    LOOM_CHECK_T(ConfigError, io::uses_servers(o_.type), "kvstore: type '{}' has no parameter servers (dist_sync, "
                 "dist_async, dist_ssp)", o_.type);
    LOOM_CHECK_T(ConfigError, !o_.server_endpoints.empty(), "kvstore {}: the job has no parameter servers", o_.type);
    placement_ = {.num_servers = static_cast<int>(o_.server_endpoints.size()), .replicas = o_.options.replicas,
                  .split_bound = o_.options.split_bound};
    check_placement(placement_);
    comm::check_security(o_.security);
    if (!o_.security.insecure) keys_ = std::make_unique<comm::CurveKeys>(comm::derive_curve_keys(o_.security.secret));
    context_ = zmq_ctx_new();
    for (const auto& e : o_.server_endpoints) {
      dealers_.push_back(detail::make_dealer(context_, e, o_.security, keys_.get()));
      loans_.push_back(std::make_unique<detail::Loans>());
    }
    if (client()) {
      std::weak_ptr<Losses> weak = losses_;
      client()->on_peer_lost([weak](const comm::LostPeer& p) {
        auto l = weak.lock();
        if (!l) return;
        std::lock_guard lock(l->mu);
        if (p.role == "server") {
          l->servers.insert(p.rank);
          l->server_why[p.rank] = p.describe();
        } else if (p.role == "worker") {
          if (l->worker.empty()) l->worker = p.describe();
        } else {
          l->coordinator = p.describe();
        }
      });
    }
  }

  ~DistKVStore() override {
    try {
      close();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "kvstore: closing: %s\n", e.what());
    }
    for (void* d : dealers_) detail::close_socket(d);
    if (context_) zmq_ctx_term(context_);
  }

  io::Mode type() const override { return o_.type; }
  int rank() const override { return o_.rank; }
  int num_workers() const override { return o_.num_workers; }

  void init(std::span<const int64_t> keys, std::span<const Tensor> values) override {
    LOOM_CHECK(keys.size() == values.size(), "kvstore: init of {} keys with {} values", keys.size(), values.size());
    std::vector<Request> reqs;
    std::vector<std::vector<int64_t>> dims(keys.size());
    for (size_t i = 0; i < keys.size(); ++i) {
      detail::check_value(keys[i], values[i], "init");
      LOOM_CHECK(!keys_info_.contains(keys[i]), "kvstore: key {} is already initialized", keys[i]);
      const KeyInfo info = describe(keys[i], values[i]);
      dims[i].assign(info.shape.begin(), info.shape.end());
      for (const Slice& s : info.slices) {
        Request r = request(Op::Init, keys[i], info, s);
        r.frames.push_back({reinterpret_cast<const std::byte*>(dims[i].data()), dims[i].size() * 8});
        if (o_.rank == 0) {
          r.h.flags = flag::kHasData;
          r.frames.push_back(slice_bytes(values[i], info, s));
        }
        reqs.push_back(std::move(r));
      }
    }
    run(reqs, "init");
    for (size_t i = 0; i < keys.size(); ++i) keys_info_.emplace(keys[i], describe(keys[i], values[i]));
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
    std::vector<Request> reqs;
    for (size_t i = 0; i < keys.size(); ++i) {
      detail::check_value(keys[i], outs[i], "pull");
      const KeyInfo info = known_or_described(keys[i], outs[i], "pull");
      for (const Slice& s : info.slices) {
        Request r = request(Op::Pull, keys[i], info, s);
        r.on_reply = receive_into(mutable_slice(outs[i], info, s), keys[i]);
        reqs.push_back(std::move(r));
      }
    }
    run(reqs, "pull");
  }

  void row_sparse_push(int64_t key, const Tensor& row_ids, const Tensor& rows) override {
    KeyInfo& info = known(key, "row_sparse_push");
    const auto ids = detail::row_ids_of(key, row_ids, true);
    check_rows_tensor(key, info, rows, ids.size(), "row_sparse_push");
    check_row_ids(key, info, ids, "row_sparse_push");
    const int64_t version = ++info.version;
    // dist_sync merges a round per slice, so every slice hears from every worker (maybe no rows).
    SparseRequests sr = sparse_requests(Op::Push, key, info, ids, o_.type == io::Mode::DistSync);
    // Each server's rows, gathered in the order of its ids.
    const auto all = detail::bytes_of(rows);
    const size_t rb = info.row_bytes();
    sr.rows.resize(sr.reqs.size());
    for (size_t j = 0; j < sr.reqs.size(); ++j) {
      for (size_t i : sr.groups[j].positions) sr.rows[j].insert(sr.rows[j].end(), all.begin() + i * rb, all.begin() + (i + 1) * rb);
      sr.reqs[j].frames.push_back(sr.rows[j]);
      sr.reqs[j].h.version = version;
    }
    run_versioned(sr.reqs, "row_sparse_push", {&info});
  }

  void row_sparse_pull(int64_t key, const Tensor& out, const Tensor& row_ids) override {
    KeyInfo& info = known(key, "row_sparse_pull");
    const auto ids = detail::row_ids_of(key, row_ids, false);
    check_rows_tensor(key, info, out, ids.size(), "row_sparse_pull");
    check_row_ids(key, info, ids, "row_sparse_pull");
    SparseRequests sr = sparse_requests(Op::Pull, key, info, ids, false);
    const auto dst = detail::mutable_bytes_of(out);
    const size_t rb = info.row_bytes();
    for (size_t j = 0; j < sr.reqs.size(); ++j) {
      sr.reqs[j].on_reply = [&, j, key](std::vector<MsgPtr>& f) {
        const auto& positions = sr.groups[j].positions;
        LOOM_CHECK_T(CommError, f.size() == 1 && f[0]->bytes().size() == positions.size() * rb,
                     "kvstore: row_sparse_pull of key {}: reply of the wrong size", key);
        for (size_t i = 0; i < positions.size(); ++i) {
          std::memcpy(dst.data() + positions[i] * rb, f[0]->bytes().data() + i * rb, rb);
        }
      };
    }
    run(sr.reqs, "row_sparse_pull");
  }

  void set_optimizer(const optim::OptimizerSpec& spec) override {
    if (o_.rank == 0) {
      optim::check_spec(spec);  // here, not as one error reply per server
      const std::vector<std::byte> bytes = optim::encode_spec(spec);
      std::vector<Request> reqs;
      for (int s = 0; s < placement_.num_servers; ++s) {
        Request r;
        r.h = {.op = Op::SetOptimizer};
        r.chain = {s};
        r.any_server = true;
        r.frames.push_back(bytes);
        reqs.push_back(std::move(r));
      }
      run(reqs, "set_optimizer");
    }
    barrier();
  }

  void barrier() override {
    if (client()) client()->barrier(format("kv-barrier-{}", barriers_++), o_.options.timeout, "worker");
  }

  void advance_clock() override {
    if (o_.type != io::Mode::DistSsp || !client()) return;
    ++clock_;
    client()->set(format("ssp/{}/{}", o_.rank, clock_), "1", o_.options.timeout);
    // Starting step clock_+1 needs every worker to have finished step clock_ - s.
    const int64_t need = clock_ - o_.options.staleness;
    if (need < 1) return;
    if (seen_clock_.empty()) seen_clock_.assign(static_cast<size_t>(o_.num_workers), 0);
    for (int u = 0; u < o_.num_workers; ++u) {
      if (u == o_.rank || seen_clock_[static_cast<size_t>(u)] >= need) continue;
      client()->get(format("ssp/{}/{}", u, need), o_.options.timeout);
      seen_clock_[static_cast<size_t>(u)] = need;
    }
  }

  void optimizer_states(const std::string& prefix, io::NamedTensors& tensors, io::Metadata& meta) override {
    if (o_.rank == 0) {
      std::map<int64_t, detail::KeyState> states;
      std::vector<Request> reqs;
      for (auto& [key, info] : keys_info_) {
        auto& st = states[key];
        st.shape = info.shape;
        st.dtype = info.dtype;
        const int64_t k = key;
        for (const Slice& s : info.slices) {
          Request r = request(Op::GetState, key, info, s);
          const size_t offset = static_cast<size_t>(s.row_begin) * info.row_bytes();
          const size_t total = static_cast<size_t>(key_rows(info.shape)) * info.row_bytes();
          const size_t n = static_cast<size_t>(s.num_rows) * info.row_bytes();
          r.on_reply = [&st, offset, total, n, k](std::vector<MsgPtr>& f) {
            LOOM_CHECK_T(CommError, f.size() >= 2, "kvstore: state of key {}: {} parts", k, f.size());
            if (st.parts.empty()) st.parts.assign(f.size() - 1, std::vector<std::byte>(total));
            LOOM_CHECK_T(CommError, st.parts.size() == f.size() - 1, "kvstore: state of key {}: slices disagree", k);
            for (size_t j = 0; j + 1 < f.size(); ++j) {
              LOOM_CHECK_T(CommError, f[j]->bytes().size() == n, "kvstore: state of key {}: part of the wrong size", k);
              std::memcpy(st.parts[j].data() + offset, f[j]->bytes().data(), n);
            }
            int64_t updates = 0;
            std::memcpy(&updates, f.back()->bytes().data(), 8);
            st.updates = std::max(st.updates, updates);
          };
          reqs.push_back(std::move(r));
        }
      }
      run(reqs, "save_optimizer_states");
      detail::put_states(states, prefix, tensors, meta);
    }
  }

  void restore_optimizer_states(const io::SafetensorsFile& file, const std::string& prefix,
                                const std::string& source) override {
    if (o_.rank == 0) {
      auto states = detail::get_states(file, prefix, source);
      std::vector<Request> reqs;
      std::vector<std::vector<std::byte>> metas;
      std::vector<std::vector<int64_t>> dims;
      metas.reserve(states.size());
      dims.reserve(states.size());
      for (auto& [key, st] : states) {
        KeyInfo& info = known(key, "load_optimizer_states");
        LOOM_CHECK_T(ShapeError, info.shape == st.shape && info.dtype == st.dtype, "{}: key {} is {} {} there, {} {} here",
                     source, key, core::name(st.dtype), core::to_string(st.shape), core::name(info.dtype),
                     core::to_string(info.shape));
        metas.push_back(detail::restored_meta(st.updates, o_.num_workers));
        dims.emplace_back(info.shape.begin(), info.shape.end());
        for (const Slice& s : info.slices) {
          Request r = request(Op::SetState, key, info, s);
          r.frames.push_back({reinterpret_cast<const std::byte*>(dims.back().data()), dims.back().size() * 8});
          for (const auto& part : st.parts) {
            r.frames.push_back(std::span<const std::byte>(part).subspan(static_cast<size_t>(s.row_begin) * info.row_bytes(),
                                                                         static_cast<size_t>(s.num_rows) * info.row_bytes()));
          }
          r.frames.push_back(metas.back());
          reqs.push_back(std::move(r));
        }
      }
      run(reqs, "load_optimizer_states");
    }
    for (auto& [key, info] : keys_info_) info.version = 0;  // the servers count rounds from 0 again
    barrier();
  }

  KVStoreStats stats() const override { return stats_; }

  void close() override {
    if (closed_) return;
    closed_ = true;
    // Tell every server first: dist_sync rounds stop waiting for this worker,
    // so workers with more steps left finish theirs instead of hanging.
    std::vector<Request> reqs;
    for (int s = 0; s < placement_.num_servers; ++s) {
      Request r;
      r.h = {.op = Op::Leave};
      r.chain = {s};
      r.any_server = true;
      reqs.push_back(std::move(r));
    }
    run(reqs, "close");
    if (!client()) return;
    client()->barrier("kv-close", o_.options.timeout, "worker");
    if (o_.rank == 0) client()->set("ps/finished", "1", o_.options.timeout);
    client()->leave();
  }

 private:
  comm::CoordinatorClient* client() const { return o_.owned_client ? o_.owned_client.get() : o_.client; }

  KeyInfo describe(int64_t key, const Tensor& t) const {
    return {.shape = t.shape(), .dtype = t.dtype(), .slices = place_key(key, t.shape(), placement_)};
  }
  KeyInfo& known(int64_t key, const char* what) {
    auto it = keys_info_.find(key);
    LOOM_CHECK(it != keys_info_.end(), "kvstore: {} of key {}, which is not initialized (call init first)", what, key);
    return it->second;
  }
  // A key this worker initialized is checked here; any other goes to the
  // servers as described by the tensor, and they decide.
  KeyInfo known_or_described(int64_t key, const Tensor& t, const char* what) {
    auto it = keys_info_.find(key);
    if (it == keys_info_.end()) return describe(key, t);
    detail::check_matches(key, t, it->second.shape, it->second.dtype, what);
    return it->second;
  }
  void check_rows_tensor(int64_t key, const KeyInfo& info, const Tensor& t, size_t n, const char* what) {
    detail::check_value(key, t, what);
    core::Shape want = info.shape;
    if (want.empty()) want.push_back(1);
    want[0] = static_cast<int64_t>(n);
    LOOM_CHECK_T(ShapeError, t.shape() == want && t.dtype() == info.dtype, "kvstore: {} of key {}: rows are {} {}, expected {} {}",
                 what, key, core::name(t.dtype()), core::to_string(t.shape()), core::name(info.dtype),
                 core::to_string(want));
  }

  Request request(Op op, int64_t key, const KeyInfo& info, const Slice& s) const {
    Request r;
    r.h = {.op = op, .dtype = info.dtype, .key = key, .row_begin = s.row_begin, .num_rows = s.num_rows,
           .row_numel = key_row_numel(info.shape), .total_rows = key_rows(info.shape)};
    r.chain = replica_chain(s.server, placement_);
    return r;
  }
  // Row-sparse requests (protocol.h), one per server holding some of `ids`
  // (group_rows): [slices named] [their ids]. With `every_slice` a request
  // names every slice of its server, as the single value -1 - server.
  struct SparseRequests {
    std::vector<Request> reqs;
    std::vector<RowGroup> groups;              // what each request carries
    std::vector<std::vector<std::byte>> rows;  // push: the rows gathered, per request
  };
  SparseRequests sparse_requests(Op op, int64_t key, const KeyInfo& info, std::span<const int64_t> ids,
                                 bool every_slice) const {
    SparseRequests sr{.groups = group_rows(info.slices, ids, placement_.num_servers, every_slice)};
    for (RowGroup& g : sr.groups) {
      if (every_slice) g.firsts = {-1 - static_cast<int64_t>(g.server)};  // 8 bytes, however big the table
      Request r = request(op, key, info, {.server = g.server, .row_begin = 0, .num_rows = key_rows(info.shape)});
      r.h.flags = flag::kSparse;
      r.frames.push_back({reinterpret_cast<const std::byte*>(g.firsts.data()), g.firsts.size() * 8});
      r.frames.push_back({reinterpret_cast<const std::byte*>(g.ids.data()), g.ids.size() * 8});
      sr.reqs.push_back(std::move(r));
    }
    return sr;
  }
  void check_row_ids(int64_t key, const KeyInfo& info, std::span<const int64_t> ids, const char* what) const {
    for (int64_t id : ids) {
      LOOM_CHECK_T(IndexError, id >= 0 && id < key_rows(info.shape), "kvstore: {} of key {}: row {} of {}", what, key,
                   id, key_rows(info.shape));
    }
  }
  static std::span<const std::byte> slice_bytes(const Tensor& t, const KeyInfo& info, const Slice& s) {
    return detail::bytes_of(t).subspan(static_cast<size_t>(s.row_begin) * info.row_bytes(),
                                       static_cast<size_t>(s.num_rows) * info.row_bytes());
  }
  static std::span<std::byte> mutable_slice(const Tensor& t, const KeyInfo& info, const Slice& s) {
    return detail::mutable_bytes_of(t).subspan(static_cast<size_t>(s.row_begin) * info.row_bytes(),
                                               static_cast<size_t>(s.num_rows) * info.row_bytes());
  }
  static std::function<void(std::vector<MsgPtr>&)> receive_into(std::span<std::byte> dst, int64_t key) {
    return [dst, key](std::vector<MsgPtr>& f) {
      LOOM_CHECK_T(CommError, f.size() == 1 && f[0]->bytes().size() == dst.size(),
                   "kvstore: key {}: reply of {} bytes for a slice of {}", key, f.empty() ? 0 : f[0]->bytes().size(),
                   dst.size());
      std::memcpy(dst.data(), f[0]->bytes().data(), dst.size());
    };
  }

  void push_impl(std::span<const int64_t> keys, std::span<const Tensor> values, std::span<const Tensor> outs, Op op) {
    LOOM_CHECK(keys.size() == values.size(), "kvstore: push of {} keys with {} values", keys.size(), values.size());
    std::vector<Request> reqs;
    std::vector<KeyInfo*> counted;
    std::map<int64_t, KeyInfo> strangers;  // keys this worker did not init: the servers judge them
    for (size_t i = 0; i < keys.size(); ++i) {
      detail::check_value(keys[i], values[i], op_name(op).data());
      if (!outs.empty()) detail::check_value(keys[i], outs[i], "pushpull");
      KeyInfo info = known_or_described(keys[i], values[i], "push");
      KeyInfo* live = keys_info_.contains(keys[i]) ? &keys_info_[keys[i]] : &(strangers[keys[i]] = info);
      const int64_t version = ++live->version;
      counted.push_back(live);
      for (const Slice& s : info.slices) {
        Request r = request(op, keys[i], info, s);
        r.h.version = version;
        r.frames.push_back(slice_bytes(values[i], info, s));
        if (!outs.empty()) r.on_reply = receive_into(mutable_slice(outs[i], info, s), keys[i]);
        reqs.push_back(std::move(r));
      }
    }
    run_versioned(reqs, op_name(op).data(), counted);
  }

  // A push that every server refused did not count: the worker's version goes back.
  void run_versioned(std::vector<Request>& reqs, const char* what, const std::vector<KeyInfo*>& counted) {
    try {
      run(reqs, what);
    } catch (const ValueError&) {
      bool any_ok = false;
      for (const auto& r : reqs) any_ok = any_ok || (r.done && !r.failed);
      if (!any_ok) {
        for (KeyInfo* k : counted) --k->version;
      }
      throw;
    }
  }

  void send(Request& r, std::map<uint64_t, size_t>& by_id, size_t index) {
    int target = -1;
    {
      std::lock_guard lock(losses_->mu);
      for (int s : r.chain) {
        if (!losses_->servers.contains(s)) {
          target = s;
          break;
        }
      }
      if (target < 0 && r.any_server) {
        r.done = true;  // nothing to tell a lost server
        return;
      }
      if (target < 0) {
        throw PeerLostError(format("kvstore: key {} rows [{}, {}) have no live server: {}", r.h.key, r.h.row_begin,
                                   r.h.row_begin + r.h.num_rows, losses_->server_why[r.chain.front()]));
      }
    }
    r.h.request_id = next_id_++;
    r.h.sender = o_.rank;
    by_id[r.h.request_id] = index;
    r.sent_to = target;
    const auto t = static_cast<size_t>(target);
    LOOM_CHECK_T(CommError, dealers_[t] != nullptr, "kvstore: no connection to server {} (reconnecting failed)", target);
    stats_.bytes_sent += detail::send_message(dealers_[t], {}, r.h, r.frames, loans_[t].get());
    ++stats_.requests;
  }

  // Big request frames are lent to ZeroMQ, not copied (they point into the
  // caller's tensors); whatever way run() ends, it first takes them back.
  void run(std::vector<Request>& reqs, const char* what) {
    struct Reclaim {
      DistKVStore* self;
      ~Reclaim() { self->reclaim_loans(); }
    } reclaim{this};
    run_requests(reqs, what);
  }

  // Returns once ZeroMQ holds no pointer into memory a request lent. When
  // every reply is in, the loans are back or about to be; a message still
  // queued for a lost (or silent) server is dropped by closing that server's
  // socket, and a new one is connected in its place.
  void reclaim_loans() noexcept {
    for (size_t s = 0; s < dealers_.size(); ++s) {
      if (loans_[s]->wait(std::chrono::milliseconds(200))) continue;
      detail::close_socket(dealers_[s]);
      dealers_[s] = nullptr;
      if (!loans_[s]->wait(std::chrono::seconds(10))) {
        std::fprintf(stderr, "kvstore: ZeroMQ kept %lld messages lent to it after their socket was closed\n",
                     static_cast<long long>(loans_[s]->out()));
        std::abort();  // returning would let the caller free memory ZeroMQ may still read
      }
      try {
        dealers_[s] = detail::make_dealer(context_, o_.server_endpoints[s], o_.security, keys_.get());
      } catch (const std::exception& e) {
        std::fprintf(stderr, "kvstore: reconnecting to server %zu: %s\n", s, e.what());
      }
    }
  }
  void run_requests(std::vector<Request>& reqs, const char* what) {
    std::map<uint64_t, size_t> by_id;
    for (size_t i = 0; i < reqs.size(); ++i) send(reqs[i], by_id, i);
    size_t remaining = 0;
    for (const auto& r : reqs) remaining += !r.done;
    std::vector<std::string> errors;
    const auto deadline = Clock::now() + o_.options.timeout;
    std::vector<zmq_pollitem_t> items;
    for (void* d : dealers_) items.push_back({d, -1, static_cast<short>(d ? ZMQ_POLLIN : 0), 0});
    std::vector<MsgPtr> frames;
    while (remaining > 0) {
      {
        std::unique_lock lock(losses_->mu);
        if (!losses_->coordinator.empty()) throw PeerLostError(losses_->coordinator);
        if (!losses_->worker.empty() && o_.type == io::Mode::DistSync) throw PeerLostError(losses_->worker);
        std::vector<size_t> resend;
        for (size_t i = 0; i < reqs.size(); ++i) {
          if (!reqs[i].done && losses_->servers.contains(reqs[i].sent_to)) resend.push_back(i);
        }
        lock.unlock();
        for (size_t i : resend) {
          send(reqs[i], by_id, i);
          if (reqs[i].done) --remaining;
        }
      }
      if (remaining == 0) break;
      if (zmq_poll(items.data(), static_cast<int>(items.size()), 20) < 0 && zmq_errno() != EINTR) {
        throw CommError(format("kvstore: poll failed: {}", zmq_strerror(zmq_errno())));
      }
      for (size_t s = 0; s < items.size(); ++s) {
        if (!(items[s].revents & ZMQ_POLLIN)) continue;
        while (detail::recv_all(dealers_[s], frames)) {
          Header h;
          try {
            h = decode_header(frames.at(0)->bytes());
          } catch (const Error& e) {
            throw CommError(format("kvstore: bad reply from server {}: {}", s, e.what()));
          }
          auto it = by_id.find(h.request_id);
          if (it == by_id.end()) {  // an answer to a request already re-sent elsewhere, or a protocol error
            if (h.status == Status::Error && h.request_id == 0) {
              const auto b = frames.size() > 1 ? frames[1]->bytes() : std::span<const std::byte>();
              throw CommError(format("kvstore: server {} could not read a request: {}", s,
                                     std::string_view(reinterpret_cast<const char*>(b.data()), b.size())));
            }
            continue;
          }
          Request& r = reqs[it->second];
          by_id.erase(it);
          if (r.done) continue;
          r.done = true;
          --remaining;
          std::vector<MsgPtr> payload(frames.begin() + 1, frames.end());
          for (const auto& p : payload) stats_.bytes_received += p->bytes().size();
          if (h.status == Status::Error) {
            r.failed = true;
            const auto b = payload.empty() ? std::span<const std::byte>() : payload[0]->bytes();
            errors.emplace_back(reinterpret_cast<const char*>(b.data()), b.size());
          } else if (r.on_reply) {
            r.on_reply(payload);
          }
        }
      }
      if (remaining > 0 && Clock::now() > deadline) {
        for (const auto& r : reqs) {
          if (!r.done) {
            throw TimeoutError(format("kvstore: {} of key {}: no answer from server {} within {} s", what, r.h.key,
                                      r.sent_to, o_.options.timeout.count() / 1000.0));
          }
        }
      }
    }
    if (!errors.empty()) {
      throw ValueError(errors.size() == 1 ? errors[0] : format("{} (and {} more errors)", errors[0], errors.size() - 1));
    }
  }

  DistKVStoreOptions o_;
  PlacementOptions placement_;
  std::shared_ptr<Losses> losses_;
  std::unique_ptr<comm::CurveKeys> keys_;
  void* context_ = nullptr;
  std::vector<void*> dealers_;  // one per server; null only if reconnecting failed
  std::vector<std::unique_ptr<detail::Loans>> loans_;  // frames lent to ZeroMQ, per dealer
  std::map<int64_t, KeyInfo> keys_info_;
  uint64_t next_id_ = 1;
  int64_t barriers_ = 0;
  int64_t clock_ = 0;
  std::vector<int64_t> seen_clock_;
  bool closed_ = false;
  KVStoreStats stats_;
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
  comm::check_job_security(env);  // says how to pass a secret with the launcher that started us
  auto client = std::make_shared<comm::CoordinatorClient>(env.coordinator_endpoint(), env.security(), options.join_timeout);
  const comm::Membership m = client->register_process(
      {.role = "worker", .host = env.host, .rank = env.rank, .endpoint = ""},
      options.join_timeout);
  if (m.rank == 0) client->set("ps/type", std::string(io::name(type)), options.join_timeout);
  // The servers publish how they place keys; the workers must place them the same way.
  const std::string config = client->get("ps/config", options.join_timeout);
  KVStoreOptions o = options;
  if (std::sscanf(config.c_str(), "replicas=%d split_bound=%ld", &o.replicas, &o.split_bound) != 2) {
    throw CommError(format("kvstore: the servers published a bad configuration '{}'", config));
  }
  return connect_kvstore({.type = type, .rank = m.rank, .num_workers = m.num_workers,
                          .server_endpoints = m.endpoints("server"), .security = env.security(), .options = o,
                          .owned_client = client});
}

}  // namespace loom::ps
