// The worker side of the parameter servers: the KVStore interface over the
// request plan (request_plan.h), composed of the RPC glue (server_calls.h),
// the dense data path (dense_transfer.h: shared memory or socket) and the
// optimizer state's transfer (worker_state.h). Here: what the store knows of
// its keys, their push versions, the row-sparse calls, the dist_ssp clock,
// barriers and closing.
#include <exception>
#include <map>
#include <optional>

#include "loom/comm/rendezvous/coordinator.h"
#include "loom/comm/rendezvous/job_env.h"
#include "loom/comm/rendezvous/join_job.h"
#include "loom/comm/rendezvous/rendezvous_keys.h"
#include "loom/core/error.h"
#include "loom/ps/dense_transfer.h"
#include "loom/ps/kvstore.h"
#include "loom/ps/kvstore_internal.h"
#include "loom/ps/messages.h"
#include "loom/ps/request_plan.h"
#include "loom/ps/server_calls.h"
#include "loom/ps/sparse_transfer.h"
#include "loom/ps/step_agreement.h"
#include "loom/ps/worker_state.h"

namespace loom::ps {
namespace {

using comm::OutFrame;

struct KeyInfo {
  KeyLayout layout;
  int64_t version = 0;  // this worker's pushes to the key
};

// Bytes the caller's tensor owns, lent to ZeroMQ without a copy when big.
OutFrame lend(const Tensor& t, std::span<const std::byte> bytes) { return OutFrame::lend(bytes, t.impl_ptr()); }

// The servers a worker may share memory with: those on its host, unless turned off.
std::vector<bool> servers_sharing_memory(const DistKVStoreOptions& o) {
  std::vector<bool> on(o.server_endpoints.size(), false);
  if (!o.options.shared_memory) return on;
  for (size_t s = 0; s < on.size() && s < o.servers_on_my_host.size(); ++s) on[s] = o.servers_on_my_host[s];
  return on;
}

DistKVStoreOptions checked(DistKVStoreOptions o) {
  LOOM_CHECK_T(ConfigError, io::uses_servers(o.type), "kvstore: type '{}' has no parameter servers (dist_sync, "
               "dist_async, dist_ssp)", o.type);
  LOOM_CHECK_T(ConfigError, !o.server_endpoints.empty(), "kvstore {}: the job has no parameter servers", o.type);
  return o;
}

PlacementOptions placement_of(const DistKVStoreOptions& o) {
  PlacementOptions p{.num_servers = static_cast<int>(o.server_endpoints.size()), .replicas = o.options.replicas,
                     .split_bound = o.options.split_bound, .slice_elements = o.options.slice_elements};
  check_placement(p);
  return p;
}

void check_rows_tensor(int64_t key, const KeyLayout& layout, const Tensor& t, size_t n, const char* what) {
  detail::check_value(key, t, what);
  core::Shape want = layout.shape;
  if (want.empty()) want.push_back(1);
  want[0] = static_cast<int64_t>(n);
  LOOM_CHECK_T(ShapeError, t.shape() == want && t.dtype() == layout.dtype,
               "kvstore: {} of key {}: rows are {} {}, expected {} {}", what, key, core::name(t.dtype()),
               core::to_string(t.shape()), core::name(layout.dtype), core::to_string(want));
}

void check_row_ids(int64_t key, const KeyLayout& layout, std::span<const int64_t> ids, const char* what) {
  for (int64_t id : ids) {
    LOOM_CHECK_T(IndexError, id >= 0 && id < key_rows(layout.shape), "kvstore: {} of key {}: row {} of {}", what,
                 key, id, key_rows(layout.shape));
  }
}

// A fixed-point push's sums: CPU, contiguous, i64, of the key's shape.
void check_fixed_point(int64_t key, const Tensor& sums, const KeyLayout& layout) {
  LOOM_CHECK_T(TypeError, sums.defined() && sums.device().is_cpu() && sums.is_contiguous() &&
               sums.dtype() == core::DType::I64, "kvstore: pushpull_fixed_point of key {}: the sums must be a "
               "contiguous CPU i64 tensor", key);
  LOOM_CHECK_T(ShapeError, sums.shape() == layout.shape, "kvstore: pushpull_fixed_point of key {}: sums of shape {} "
               "for a key of shape {}", key, core::to_string(sums.shape()), core::to_string(layout.shape));
}

// One key's dense slice requests: `value`'s elements sent (push), `out`'s
// written (pull); a null tensor has none. `value` may have another dtype
// than the key (a fixed-point push's i64): its slice is the same elements.
void add_dense_slices(std::vector<DenseSlice>& slices, std::vector<DenseRequest> requests, int64_t key,
                      const Tensor* value, const Tensor* out, uint16_t flags = 0) {
  const auto in = value ? detail::bytes_of(*value) : std::span<const std::byte>();
  const auto dst = out ? detail::mutable_bytes_of(*out) : std::span<std::byte>();
  for (DenseRequest& r : requests) {
    DenseSlice d{.key = key};
    r.header.flags |= flags;
    if (value) {
      const size_t key_item = core::itemsize(r.header.dtype), item = core::itemsize(value->dtype());
      d.in = in.subspan(r.offset / key_item * item, r.nbytes / key_item * item);
      d.owner = value->impl_ptr();
    }
    if (out) d.out = dst.subspan(r.offset, r.nbytes);
    d.r = std::move(r);
    slices.push_back(std::move(d));
  }
}

// dist_ssp's clock over the coordinator's store: the end of step t publishes
// ssp/<rank>/t; starting step t + 1 waits for ssp/<u>/(t - s) of every worker u.
class SspClock {
 public:
  SspClock(int rank, int num_workers, int staleness, std::chrono::milliseconds timeout)
      : rank_(rank), staleness_(staleness), timeout_(timeout), seen_(static_cast<size_t>(num_workers), 0) {}

  void advance(comm::CoordinatorClient& client) {
    ++clock_;
    client.set(comm::rendezvous::ssp_clock(rank_, clock_), comm::rendezvous::kDone, timeout_);
    // Starting step clock_+1 needs every worker to have finished step clock_ - s.
    const int64_t need = clock_ - staleness_;
    if (need < 1) return;
    for (size_t u = 0; u < seen_.size(); ++u) {
      if (static_cast<int>(u) == rank_ || seen_[u] >= need) continue;
      client.get(comm::rendezvous::ssp_clock(static_cast<int>(u), need), timeout_);
      seen_[u] = need;
    }
  }

 private:
  int rank_;
  int64_t staleness_;
  std::chrono::milliseconds timeout_;
  std::vector<int64_t> seen_;  // per worker: the step it is known to have finished
  int64_t clock_ = 0;          // this worker's finished steps
};

class DistKVStore final : public KVStore {
 public:
  explicit DistKVStore(DistKVStoreOptions o)
      : o_(checked(std::move(o))),
        placement_(placement_of(o_)),
        servers_({.type = o_.type, .endpoints = o_.server_endpoints, .security = o_.security,
                  .timeout = o_.options.timeout, .coordinator = client()}),
        dense_(servers_, {.worker = o_.rank, .on_my_host = servers_sharing_memory(o_), .log = o_.options.log}) {}

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
    RequestBatch batch(o_.rank);
    for (size_t i = 0; i < keys.size(); ++i) {
      detail::check_value(keys[i], values[i], "init");
      LOOM_CHECK(!keys_info_.contains(keys[i]), "kvstore: key {} is already initialized", keys[i]);
      const KeyLayout layout = describe(keys[i], values[i]);
      const std::vector<int64_t> dims(layout.shape.begin(), layout.shape.end());
      for (DenseRequest& r : plan_dense(Op::Init, keys[i], layout, 0, placement_)) {
        std::vector<OutFrame> payload = {OutFrame::copy(i64_bytes(dims))};
        if (o_.rank == 0) {
          r.header.flags = flag::kHasData;
          payload.push_back(lend(values[i], detail::bytes_of(values[i]).subspan(r.offset, r.nbytes)));
        }
        batch.add(r.header, std::move(r.chain), std::move(payload));
      }
    }
    servers_.run(batch, "init");
    for (size_t i = 0; i < keys.size(); ++i) keys_info_.emplace(keys[i], KeyInfo{describe(keys[i], values[i])});
  }

  void push(std::span<const int64_t> keys, std::span<const Tensor> values) override {
    push_impl(keys, values, {}, Op::Push);
  }
  void pushpull(std::span<const int64_t> keys, std::span<const Tensor> values, std::span<const Tensor> outs) override {
    LOOM_CHECK(keys.size() == outs.size(), "kvstore: pushpull of {} keys into {} tensors", keys.size(), outs.size());
    push_impl(keys, values, outs, Op::PushPull);
  }
  void pushpull_fixed_point(std::span<const int64_t> keys, std::span<const Tensor> sums,
                            std::span<const Tensor> outs) override {
    if (o_.type != io::Mode::DistSync) return KVStore::pushpull_fixed_point(keys, sums, outs);  // ConfigError
    LOOM_CHECK(keys.size() == outs.size(), "kvstore: pushpull of {} keys into {} tensors", keys.size(), outs.size());
    push_impl(keys, sums, outs, Op::PushPull, true);
  }

  void pull(std::span<const int64_t> keys, std::span<const Tensor> outs) override {
    LOOM_CHECK(keys.size() == outs.size(), "kvstore: pull of {} keys into {} tensors", keys.size(), outs.size());
    std::vector<DenseSlice> slices;
    for (size_t i = 0; i < keys.size(); ++i) {
      detail::check_value(keys[i], outs[i], "pull");
      const KeyLayout layout = known_or_described(keys[i], outs[i], "pull").layout;
      add_dense_slices(slices, plan_dense(Op::Pull, keys[i], layout, 0, placement_), keys[i], nullptr, &outs[i]);
    }
    RequestBatch batch(o_.rank);
    dense_.add(batch, slices);
    servers_.run(batch, "pull");
  }

  void row_sparse_push(int64_t key, const Tensor& row_ids, const Tensor& rows) override {
    KeyInfo& info = known(key, "row_sparse_push");
    const auto ids = detail::row_ids_of(key, row_ids, true);
    check_rows_tensor(key, info.layout, rows, ids.size(), "row_sparse_push");
    check_row_ids(key, info.layout, ids, "row_sparse_push");
    const int64_t version = ++info.version;
    // dist_sync merges a round per slice, so every slice hears from every worker (maybe no rows).
    const auto plan = std::make_shared<const std::vector<SparseRequest>>(
        plan_sparse(Op::Push, key, info.layout, ids, o_.type == io::Mode::DistSync, placement_, version));
    RequestBatch batch(o_.rank);
    add_sparse_push(batch, plan, detail::bytes_of(rows), info.layout.row_bytes());
    run_versioned(batch, "row_sparse_push", {&info});
  }

  void row_sparse_pull(int64_t key, const Tensor& out, const Tensor& row_ids) override {
    KeyInfo& info = known(key, "row_sparse_pull");
    const auto ids = detail::row_ids_of(key, row_ids, false);
    check_rows_tensor(key, info.layout, out, ids.size(), "row_sparse_pull");
    check_row_ids(key, info.layout, ids, "row_sparse_pull");
    const auto plan = std::make_shared<const std::vector<SparseRequest>>(
        plan_sparse(Op::Pull, key, info.layout, ids, false, placement_));
    RequestBatch batch(o_.rank);
    add_sparse_pull(batch, plan, detail::mutable_bytes_of(out), info.layout.row_bytes(), key);
    servers_.run(batch, "row_sparse_pull");
  }

  void set_optimizer(const optim::OptimizerSpec& spec) override {
    if (o_.rank == 0) {
      optim::check_spec(spec);  // here, not as one error reply per server
      const std::vector<std::byte> bytes = optim::encode_spec(spec);
      RequestBatch batch(o_.rank);
      for (ServerRequest& r : plan_every_server(Op::SetOptimizer, placement_)) {
        batch.add(r.header, std::move(r.chain), {OutFrame::copy(bytes)}).optional = true;  // a lost server has nothing to set
      }
      servers_.run(batch, "set_optimizer");
    }
    barrier();
  }

  void barrier(std::optional<std::chrono::milliseconds> timeout = std::nullopt) override {
    if (client()) {
      client()->barrier(comm::rendezvous::kv_barrier(barriers_++), timeout.value_or(o_.options.timeout), "worker");
    }
  }

  void advance_clock() override {
    if (o_.type == io::Mode::DistSsp && client()) clock_.advance(*client());
  }

  uint32_t vote(uint32_t wish, int64_t steps) override {
    return client() ? agreement().vote(wish, steps) : wish;
  }

  std::optional<uint32_t> finish_votes(int64_t steps) override {
    return client() ? agreement().finish(steps) : std::nullopt;
  }

  void optimizer_states(const std::string& prefix, io::NamedTensors& tensors, io::Metadata& meta) override {
    if (o_.rank != 0) return;
    std::vector<int64_t> keys;
    for (const auto& [key, info] : keys_info_) keys.push_back(key);
    const auto states = fetch_key_states(servers_, keys, layout_of("save_optimizer_states"), state_options());
    detail::put_states(states, prefix, tensors, meta);
  }

  void restore_optimizer_states(const io::SafetensorsFile& file, const std::string& prefix,
                                const std::string& source) override {
    if (o_.rank == 0) {
      const auto states = detail::get_states(file, prefix, source);
      send_key_states(servers_, states, layout_of("load_optimizer_states"), source, state_options());
    }
    for (auto& [key, info] : keys_info_) info.version = 0;  // the servers count rounds from 0 again
    barrier();
  }

  KVStoreStats stats() const override {
    const comm::RequestStats& s = servers_.stats();
    const uint64_t shm_sent = dense_.shm_bytes_sent(), shm_received = dense_.shm_bytes_received();
    return {.requests = s.requests, .bytes_sent = s.bytes_sent + shm_sent,
            .bytes_received = s.bytes_received + shm_received, .shm_bytes_sent = shm_sent,
            .shm_bytes_received = shm_received};
  }

  void close() override {
    if (closed_) return;
    closed_ = true;
    // Tell every server first: dist_sync rounds stop waiting for this worker,
    // so workers with more steps left finish theirs instead of hanging.
    RequestBatch batch(o_.rank);
    for (ServerRequest& r : plan_every_server(Op::Leave, placement_)) {
      batch.add(r.header, std::move(r.chain), {}).optional = true;  // nothing to tell a lost server
    }
    servers_.run(batch, "close");
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
  LayoutOf layout_of(const char* what) {
    return [this, what](int64_t key) -> const KeyLayout& { return known(key, what).layout; };
  }
  WorkerStateOptions state_options() const {
    return {.rank = o_.rank, .num_workers = o_.num_workers, .placement = placement_};
  }
  // A key this worker initialized is checked here; any other goes to the
  // servers as described by the tensor, and they decide.
  KeyInfo known_or_described(int64_t key, const Tensor& t, const char* what) {
    auto it = keys_info_.find(key);
    if (it == keys_info_.end()) return {describe(key, t)};
    detail::check_matches(key, t, it->second.layout.shape, it->second.layout.dtype, what);
    return it->second;
  }

  // `fixed_point`: the values are i64 sums (pushpull_fixed_point) of keys this worker initialized.
  void push_impl(std::span<const int64_t> keys, std::span<const Tensor> values, std::span<const Tensor> outs, Op op,
                 bool fixed_point = false) {
    LOOM_CHECK(keys.size() == values.size(), "kvstore: push of {} keys with {} values", keys.size(), values.size());
    std::vector<DenseSlice> slices;
    std::vector<KeyInfo*> counted;
    std::map<int64_t, KeyInfo> strangers;  // keys this worker did not init: the servers judge them
    for (size_t i = 0; i < keys.size(); ++i) {
      if (!fixed_point) detail::check_value(keys[i], values[i], op_name(op).data());
      if (!outs.empty()) detail::check_value(keys[i], outs[i], "pushpull");
      if (fixed_point) check_fixed_point(keys[i], values[i], known(keys[i], "pushpull_fixed_point").layout);
      const KeyInfo info = known_or_described(keys[i], fixed_point ? outs[i] : values[i], "push");
      KeyInfo* live = keys_info_.contains(keys[i]) ? &keys_info_[keys[i]] : &(strangers[keys[i]] = info);
      const int64_t version = ++live->version;
      counted.push_back(live);
      add_dense_slices(slices, plan_dense(op, keys[i], info.layout, version, placement_), keys[i], &values[i],
                       outs.empty() ? nullptr : &outs[i], fixed_point ? flag::kFixedPoint : 0);
    }
    RequestBatch batch(o_.rank);
    dense_.add(batch, slices);
    run_versioned(batch, op_name(op).data(), counted);
  }

  // A push that every server refused did not count: the worker's version goes back.
  void run_versioned(RequestBatch& batch, const char* what, const std::vector<KeyInfo*>& counted) {
    try {
      servers_.run(batch, what);
    } catch (const ValueError&) {
      if (batch.ok() == 0) {
        for (KeyInfo* k : counted) --k->version;
      }
      throw;
    }
  }

  DistKVStoreOptions o_;
  PlacementOptions placement_;
  ServerCalls servers_;
  DenseTransfer dense_;  // sends through servers_
  std::map<int64_t, KeyInfo> keys_info_;
  int64_t barriers_ = 0;
  std::optional<StepAgreement> agreement_;  // made at the first vote

  StepAgreement& agreement() {
    if (!agreement_) {
      const int64_t staleness = o_.type == io::Mode::DistSsp ? o_.options.staleness : 0;
      agreement_.emplace(*client(), StepAgreementOptions{.margin = 1 + staleness, .timeout = o_.options.timeout});
    }
    return *agreement_;
  }
  SspClock clock_{o_.rank, o_.num_workers, o_.options.staleness, o_.options.timeout};
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
