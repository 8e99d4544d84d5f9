// The one place that decides, from the job file and the launcher's
// environment, what this process does: train with a strategy (local,
// all-reduce data parallel, parameter servers), start the job's processes,
// or serve as one of its parameter servers or its coordinator.
//
//   // given: const io::JobConfig& job
//   comm::JobEnv env = comm::read_job_env();
//   parallel::ProcessRole role = parallel::choose_role(job, env);
//   if (role.role == parallel::Role::Train) {
//     std::shared_ptr<train::Strategy> strategy = parallel::make_strategy(role, job, env);   // joins the job
//     train::Trainer(job, {}, strategy).fit();
//     strategy->finish();
//   }
//
// choose_role is pure (no sockets), so which strategy or role a job and an
// environment give is tested directly; make_strategy then joins the job
// (ProcessGroup::join, ps::join_kvstore) and builds the strategy with the
// job's [distributed] options, `deterministic` included.
#pragma once

#include <memory>
#include <string_view>

#include "loom/comm/rendezvous/job_env.h"
#include "loom/io/config.h"
#include "loom/io/mode.h"
#include "loom/parallel/data_parallel_strategy.h"
#include "loom/parallel/pipeline_strategy.h"
#include "loom/ps/kvstore.h"
#include "loom/train/strategy.h"

namespace loom::parallel {

enum class Role {
  Train,        // a worker: train with the strategy `mode` names
  Launch,       // outside a job that needs several processes: start them (coordinator, servers, workers)
  Server,       // a parameter server of the job
  Coordinator,  // the job's coordinator (MXNet's scheduler role)
};
std::string_view name(Role role);

struct ProcessRole {
  Role role = Role::Train;
  io::Mode mode = io::Mode::Local;  // Train: the strategy; Launch: the job's mode
  int workers = 1;                  // Launch: worker processes to start
  int servers = 0;                  // Launch: parameter servers to start
};

struct ChooseRoleOptions {
  int workers = 0;  // > 0: the command line's --workers, over [distributed] workers
};

// Throws ConfigError for a job that cannot run here (parameter servers
// without servers = S or a launcher that provides them; workers > 1 in
// local mode without an explicit --workers).
ProcessRole choose_role(const io::JobConfig& job, const comm::JobEnv& env, const ChooseRoleOptions& options = {});

// The strategy for role.role == Role::Train: LocalStrategy, a
// DataParallelStrategy over a joined ProcessGroup, or a
// ParameterServerStrategy over a joined KVStore.
std::shared_ptr<train::Strategy> make_strategy(const ProcessRole& role, const io::JobConfig& job,
                                               const comm::JobEnv& env);

// What the job's [distributed] table sets for each strategy.
DataParallelStrategyOptions data_parallel_options(const io::DistributedConfig& d);
ProcessGroupOptions process_group_options(const io::DistributedConfig& d);
ps::KVStoreOptions kvstore_options(const io::DistributedConfig& d);
// The pipeline's options: [distributed] stages, schedule, ... and [train] microbatches.
PipelineStrategyOptions pipeline_options(const io::JobConfig& job);

}  // namespace loom::parallel
