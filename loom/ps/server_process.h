// A parameter-server process: joins the job the environment describes
// (LOOM_ROLE=server, DMLC_ROLE=server, or the last LOOM_NUM_SERVERS ranks of
// torchrun / Open MPI / Slurm), serves until the workers are done, exits.
//
//   comm::JobEnv env = comm::read_job_env();
//   if (env.role == "server") { int status = ps::run_server(env, {.replicas = 1}); ... }   // main returns it
//
// Bootstrap through the coordinator's key-value store: server 0 publishes the
// placement settings ("ps/config"), worker 0 the KVStore type ("ps/type", which
// sets sync or async merging), and worker 0 says when the job is done
// ("ps/finished"). A lost server is handed to KVServer::server_lost.
#pragma once

#include <chrono>
#include <cstdint>

#include "loom/comm/rendezvous/job_env.h"
#include "loom/core/log.h"
#include "loom/ps/placement.h"

namespace loom::ps {

struct ServerProcessOptions {
  int replicas = 0;
  int64_t split_bound = kDefaultSplitBound;
  std::chrono::milliseconds join_timeout{120000};
  core::LogSink log = core::log_to_stderr;  // the server's own lines and its KVServer's
};

// Returns the process exit status (0 when the workers finished).
int run_server(const comm::JobEnv& env, const ServerProcessOptions& options);

}  // namespace loom::ps
