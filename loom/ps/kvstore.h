// The KVStore: MXNet's key-value store API over Loom's parameter servers.
//
//   // given: Tensor weights, Tensor grad, Tensor rows_out, Tensor row_ids
//   auto kv = ps::KVStore::create(io::Mode::DistSync);   // joins the job the environment describes
//   kv->init(3, weights);                                 // every worker; rank 0's value is kept
//   kv->set_optimizer({.rule = optim::Rule::Sgd, .lr = 0.1});  // the servers run the update rule
//   kv->push(3, grad);                                    // summed over the workers, then updated
//   kv->pull(3, weights);                                 // the new value, written in place
//   kv->row_sparse_pull(7, rows_out, row_ids);            // only the rows asked for travel
//
// Types:
//   local       one process; the store and the update live in this process
//   dist_sync   a server applies an update once it has every worker's push for
//               that key and round, merged in worker-rank order; push returns
//               when the update is applied (and held by the backups)
//   dist_async  every push is applied on arrival
//   dist_ssp    as dist_async, plus a bound on staleness: advance_clock() at the
//               end of step t waits until no worker is more than `staleness`
//               steps behind, so no worker starts step t+s+1 before every worker
//               has finished step t
//
// Values are CPU tensors of f32 or f64, contiguous, of the key's shape. A key
// is an array whose first dimension counts rows (placement.h): row-sparse push
// and pull address rows of it. Without set_optimizer a push replaces the value
// with the merged push (MXNet's default); with it the server applies the rule
// to the merged gradient times `rescale_grad`.
//
// Errors: a request the server refuses (unknown key, wrong shape or dtype, push
// before init) throws ValueError with the server's reason at this worker; the
// others go on. Every call has a timeout (TimeoutError naming the key and server).
// A lost server whose slices have a live backup is replaced transparently;
// without one, PeerLostError names it. In dist_sync a lost worker makes every
// waiting call throw PeerLostError (its rounds can never complete).
#pragma once

#include <chrono>
#include <optional>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "loom/comm/wire/security.h"
#include "loom/core/log.h"
#include "loom/core/tensor.h"
#include "loom/io/mode.h"
#include "loom/io/safetensors.h"
#include "loom/optim/spec.h"
#include "loom/ps/placement.h"
#include "loom/ps/protocol.h"

namespace loom::comm {
class CoordinatorClient;
struct JobEnv;
}  // namespace loom::comm

namespace loom::ps {

using core::Tensor;

struct KVStoreOptions {
  int staleness = 0;  // dist_ssp's bound s
  std::chrono::milliseconds timeout{60000};   // one call
  std::chrono::milliseconds join_timeout{120000};
  int64_t split_bound = kDefaultSplitBound;   // elements; must match the servers'
  int replicas = 0;                           // must match the servers'
  int64_t slice_elements = kRemoteSliceElements;  // must match the servers' (join_kvstore takes theirs)
  core::LogSink log = core::log_to_stderr;        // what the store has to say on its own (closing while unwinding)
  // Dense slices to and from servers on this worker's host go through shared
  // memory (ps/shm_staging.h) instead of the socket.
  bool shared_memory = true;
};

struct KVStoreStats {
  uint64_t requests = 0;
  uint64_t bytes_sent = 0;      // payload bytes (values, gradients, row ids), by socket or shared memory
  uint64_t bytes_received = 0;
  uint64_t shm_bytes_sent = 0;  // the part of those that went through shared memory
  uint64_t shm_bytes_received = 0;
};

// One key's state, whole (its slices gathered): the value, the servers'
// optimizer slots in the rule's state_names() order (none before the first
// update) and the updates applied, the rule's step count. Every tensor has the
// key's shape and dtype.
struct KeySnapshot {
  Tensor value;
  std::vector<Tensor> slots;
  int64_t updates = 0;
};

class KVStore {
 public:
  virtual ~KVStore() = default;

  // Local here; DistSync | DistAsync | DistSsp join the job the environment
  // describes (comm::read_job_env) as a worker. Allreduce is no store type (ConfigError).
  static std::unique_ptr<KVStore> create(io::Mode type, const KVStoreOptions& options = {});

  virtual io::Mode type() const = 0;
  virtual int rank() const = 0;
  virtual int num_workers() const = 0;

  virtual void init(std::span<const int64_t> keys, std::span<const Tensor> values) = 0;
  virtual void push(std::span<const int64_t> keys, std::span<const Tensor> values) = 0;
  virtual void pull(std::span<const int64_t> keys, std::span<const Tensor> outs) = 0;
  virtual void pushpull(std::span<const int64_t> keys, std::span<const Tensor> values,
                        std::span<const Tensor> outs) = 0;
  // dist_sync's deterministic form: `sums` are this worker's gradients as
  // fixed point (i64 in units of 2^-40, optim/fixed_point.h; each of its
  // key's shape). The servers add a round's sums as integers, exact in any
  // order, and convert the total once, so the update is the same however the
  // workers split the gradient. Keys must be initialized. ConfigError for
  // the other types (they apply pushes as they come).
  virtual void pushpull_fixed_point(std::span<const int64_t> keys, std::span<const Tensor> sums,
                                    std::span<const Tensor> outs);
  // `row_ids`: i64, 1-D, ascending and unique; `rows`: [row_ids.size(), ...rest of the key's shape].
  virtual void row_sparse_push(int64_t key, const Tensor& row_ids, const Tensor& rows) = 0;
  // `row_ids`: i64, 1-D, any order; `out`: [row_ids.size(), ...], written in place.
  virtual void row_sparse_pull(int64_t key, const Tensor& out, const Tensor& row_ids) = 0;
  // Every worker: init (rank 0's value) then pull into `outs`.
  void broadcast(std::span<const int64_t> keys, std::span<const Tensor> values, std::span<const Tensor> outs);

  // Every worker calls it; rank 0's spec is sent to the servers.
  virtual void set_optimizer(const optim::OptimizerSpec& spec) = 0;
  // (timeout: this wait's own, e.g. for a peer that evaluates; default the store's)
  virtual void barrier(std::optional<std::chrono::milliseconds> timeout = std::nullopt) = 0;
  // dist_ssp: the end of one step (see above); a no-op for the other types.
  virtual void advance_clock() {}
  // Step-boundary agreement among the workers (ps/step_agreement.h): every
  // worker after every step, with its wish (bits, 0 for none) and the steps
  // it has done; returns the bits every worker acts on at this boundary.
  // Stores without a coordinator (local, one worker) return `wish`.
  virtual uint32_t vote(uint32_t wish, int64_t steps) { return wish; }
  // After the last step, until it returns nullopt: the next event's bits to
  // act on (StepAgreement::finish). Stores without a coordinator: nullopt.
  virtual std::optional<uint32_t> finish_votes(int64_t steps) { return std::nullopt; }

  // Rank 0 writes (others wait): every key's value and server-side optimizer
  // state, as one safetensors file (atomically). Loading puts them back.
  void save_optimizer_states(const std::filesystem::path& path);
  void load_optimizer_states(const std::filesystem::path& path);
  // The same state as tensors and metadata for a file of the caller's (the
  // Trainer's checkpoints), every name starting with `prefix`: rank 0 fills
  // them, the others add nothing. No barrier: in dist_sync, right after a
  // step of rank 0's, it is the state after that step.
  virtual void optimizer_states(const std::string& prefix, io::NamedTensors& tensors, io::Metadata& meta) = 0;
  // Every worker: rank 0 puts back the state `file` holds under `prefix`
  // (`source` names it in errors), then all wait, and count their pushes from
  // 0 again as the restored servers do.
  virtual void restore_optimizer_states(const io::SafetensorsFile& file, const std::string& prefix,
                                        const std::string& source) = 0;
  // The same, typed, for `keys` (rank 0; the others get an empty map): what
  // a checkpoint names by parameter (ParameterServerStrategy). The default
  // fetches every key's state and keeps those asked for.
  virtual std::map<int64_t, KeySnapshot> key_states(std::span<const int64_t> keys);
  // Every worker: rank 0 puts back the keys of `states` (the others' are
  // ignored), then as restore_optimizer_states.
  void restore_key_states(const std::map<int64_t, KeySnapshot>& states);

  virtual KVStoreStats stats() const = 0;
  // Tells the job this worker is done (the destructor does it too).
  virtual void close() {}

  // Single-key forms.
  void init(int64_t key, const Tensor& value) { init(std::span(&key, 1), std::span(&value, 1)); }
  void push(int64_t key, const Tensor& value) { push(std::span(&key, 1), std::span(&value, 1)); }
  void pull(int64_t key, const Tensor& out) { pull(std::span(&key, 1), std::span(&out, 1)); }
  void pushpull(int64_t key, const Tensor& value, const Tensor& out) {
    pushpull(std::span(&key, 1), std::span(&value, 1), std::span(&out, 1));
  }
};

// A worker's store connected to running servers (what create() does after the rendezvous).
struct DistKVStoreOptions {
  io::Mode type = io::Mode::DistSync;  // one that uses_servers
  int rank = 0;
  int num_workers = 1;
  std::vector<std::string> server_endpoints;
  comm::SecurityOptions security;
  KVStoreOptions options;
  // For barriers, set_optimizer, dist_ssp clocks and loss notices; may be null
  // for a single worker without them. Owned when `owned_client` is set.
  comm::CoordinatorClient* client = nullptr;
  std::shared_ptr<comm::CoordinatorClient> owned_client;
  // servers_on_my_host[s]: server s runs on this worker's host (its dense
  // slices may go through shared memory; see KVStoreOptions::shared_memory).
  std::vector<bool> servers_on_my_host;
};
std::unique_ptr<KVStore> connect_kvstore(DistKVStoreOptions options);
// create() for a dist type with the job described by `env` (create() reads the environment).
std::unique_ptr<KVStore> join_kvstore(const comm::JobEnv& env, io::Mode type, const KVStoreOptions& options = {});

}  // namespace loom::ps
