#include "loom/parallel/strategy_factory.h"

#include "loom/comm/collectives/collectives.h"
#include "loom/core/error.h"
#include "loom/parallel/data_parallel_atoms.h"
#include "loom/parallel/parameter_server_strategy.h"
#include "loom/parallel/pipeline_strategy.h"

namespace loom::parallel {

namespace {

std::chrono::milliseconds seconds(double s) { return std::chrono::milliseconds(static_cast<int64_t>(s * 1000)); }

size_t mebibytes(double mb) { return static_cast<size_t>(mb * (1 << 20)); }

// Parameter-server modes: a worker, a server or (MXNet's scheduler) the
// coordinator of a job; or, outside a job, the one who starts it.
ProcessRole choose_ps_role(const io::JobConfig& job, const comm::JobEnv& env, int workers) {
  const auto& d = job.distributed;
  // Before starting a job whose every worker would refuse it.
  LOOM_CHECK_T(ConfigError, !d.deterministic || d.mode == io::Mode::DistSync,
               "{}: [distributed] deterministic = true with mode = \"{}\": only dist_sync can be deterministic (its "
               "servers add every worker's push of a step before updating); dist_async and dist_ssp apply each push "
               "as it arrives, so the weights depend on the order the pushes reach the servers", job.path, d.mode);
  if (!env.has_coordinator()) {
    if (d.deterministic) check_atoms(d.deterministic_atoms, workers);
    LOOM_CHECK_T(ConfigError, d.servers >= 1,
                 "{}: [distributed] mode = \"{}\" needs servers >= 1 to start a job (or run it under a launcher that "
                 "sets LOOM_NUM_SERVERS or DMLC_NUM_SERVER)", job.path, d.mode);
    return {.role = Role::Launch, .mode = d.mode, .workers = workers, .servers = static_cast<int>(d.servers)};
  }
  if (env.role == "server") return {.role = Role::Server, .mode = d.mode};
  if (env.role == "coordinator") return {.role = Role::Coordinator, .mode = d.mode};
  return {.role = Role::Train, .mode = d.mode};
}

// Pipeline mode: one process per stage, started here or by a launcher.
ProcessRole choose_pipeline_role(const io::JobConfig& job, const comm::JobEnv& env, int workers_option) {
  const auto& d = job.distributed;
  const int processes = static_cast<int>(d.stages * d.data_parallel);
  LOOM_CHECK_T(ConfigError, workers_option == 0 || workers_option == processes,
               "{}: a pipeline runs one process per stage and replica: --workers {} with [distributed] stages = {} x "
               "data_parallel = {}", job.path, workers_option, d.stages, d.data_parallel);
  if (env.has_coordinator()) {
    LOOM_CHECK_T(ConfigError, env.world_size == processes,
                 "{}: [distributed] stages = {} x data_parallel = {} processes, but the launcher started {}", job.path,
                 d.stages, d.data_parallel, env.world_size);
    return {.role = Role::Train, .mode = io::Mode::Pipeline};
  }
  return {.role = Role::Launch, .mode = io::Mode::Pipeline, .workers = processes};
}

}  // namespace

std::string_view name(Role role) {
  switch (role) {
    case Role::Train: return "train";
    case Role::Launch: return "launch";
    case Role::Server: return "server";
    case Role::Coordinator: return "coordinator";
  }
  return "?";
}

ProcessRole choose_role(const io::JobConfig& job, const comm::JobEnv& env, const ChooseRoleOptions& options) {
  const auto& d = job.distributed;
  const int workers = options.workers > 0 ? options.workers : static_cast<int>(d.workers);
  if (io::uses_servers(d.mode)) return choose_ps_role(job, env, workers);
  if (d.mode == io::Mode::Pipeline) return choose_pipeline_role(job, env, options.workers);
  // Deterministic mode runs even one process through the data-parallel path
  // (per-sample, fixed-point gradients), so its results match any worker count bit for bit.
  if (env.has_coordinator() && (env.world_size > 1 || d.deterministic)) {
    return {.role = Role::Train, .mode = io::Mode::Allreduce};  // started by loom launch, torchrun, mpirun, srun, ...
  }
  if (workers > 1 || d.deterministic) {
    LOOM_CHECK_T(ConfigError, d.mode != io::Mode::Local || options.workers > 0,
                 "{}: [distributed] workers = {} needs mode = \"allreduce\"", job.path, workers);
    if (d.deterministic) check_atoms(d.deterministic_atoms, workers);  // before starting workers that would refuse
    return {.role = Role::Launch, .mode = d.mode, .workers = workers};
  }
  return {.role = Role::Train, .mode = io::Mode::Local};
}

DataParallelStrategyOptions data_parallel_options(const io::DistributedConfig& d) {
  return {.data_parallel = {.bucket_bytes = mebibytes(d.bucket_mb),
                            .first_bucket_bytes = mebibytes(d.first_bucket_mb),
                            .algorithm = comm::algorithm_from_name(d.algorithm),
                            .timeout = seconds(d.timeout_s)},
          .deterministic = d.deterministic,
          .deterministic_atoms = d.deterministic_atoms};
}

ProcessGroupOptions process_group_options(const io::DistributedConfig& d) {
  return {.collective_timeout = seconds(d.timeout_s), .heartbeat_timeout = seconds(d.heartbeat_timeout_s),
          .transport = d.transport};
}

PipelineStrategyOptions pipeline_options(const io::JobConfig& job) {
  const auto& d = job.distributed;
  const int chunks = static_cast<int>(d.stages * d.virtual_stages);
  return {.stages = static_cast<int>(d.stages),
          .data_parallel = static_cast<int>(d.data_parallel),
          .microbatches = static_cast<int>(job.train.microbatches),
          .schedule = d.schedule,
          .virtual_stages = static_cast<int>(d.virtual_stages),
          .balance = d.balance == "time" ? StageBalance::Time : StageBalance::Parameters,
          .placement = d.placement,
          .recompute = d.recompute ? std::vector<bool>(static_cast<size_t>(chunks), true) : std::vector<bool>{},
          .deterministic = d.deterministic,
          .timeout = seconds(d.timeout_s)};
}

ps::KVStoreOptions kvstore_options(const io::DistributedConfig& d) {
  return {.staleness = static_cast<int>(d.staleness), .timeout = seconds(d.timeout_s)};
}

std::shared_ptr<train::Strategy> make_strategy(const ProcessRole& role, const io::JobConfig& job,
                                               const comm::JobEnv& env) {
  LOOM_CHECK(role.role == Role::Train, "make_strategy: this process's role is {}, not train", name(role.role));
  const auto& d = job.distributed;
  switch (role.mode) {
    case io::Mode::Local:
      return std::make_shared<train::LocalStrategy>();
    case io::Mode::Allreduce:
      return std::make_shared<DataParallelStrategy>(ProcessGroup::join(env, process_group_options(d)),
                                                    data_parallel_options(d));
    case io::Mode::DistSync:
    case io::Mode::DistAsync:
    case io::Mode::DistSsp:
      return std::make_shared<ParameterServerStrategy>(
          ps::join_kvstore(env, role.mode, kvstore_options(d)),
          ParameterServerStrategyOptions{.deterministic = d.deterministic, .deterministic_atoms = d.deterministic_atoms});
    case io::Mode::Pipeline:
      return std::make_shared<PipelineStrategy>(ProcessGroup::join(env, process_group_options(d)), pipeline_options(job));
  }
  LOOM_ASSERT(false);
  return nullptr;
}

}  // namespace loom::parallel
