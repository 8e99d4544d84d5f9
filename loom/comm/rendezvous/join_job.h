// Joining a job: the one sequence every process of a distributed job runs to
// meet the others at the coordinator, whatever its role does next. It checks
// the job secret (check_job_security), hosts the coordinator where nobody
// started one (if asked), connects, lets the caller open its data endpoint,
// and registers; it returns once every expected process has registered.
//
//   // given: comm::JobEnv env
//   comm::JoinedJob job = comm::join_job(env, {.role = "worker", .timeout = 120s});
//   const comm::Membership& m = job.membership;                // m.rank, m.endpoints("server"), ...
//   job.client->barrier(comm::rendezvous::kTransportReady, 120s, "worker");
//
// Its callers add what their role waits for: parallel::ProcessGroup::join
// (all-reduce workers: a data endpoint, the transport, a barrier),
// ps::join_kvstore (parameter-server workers: publish the KVStore type, read
// the servers' placement) and ps::run_server (a server binds its endpoint once
// connected, publishes the placement, reads the type).
//
// Errors: ConfigError without a job secret (the message says how to pass one
// with the launcher that started the process) or when the coordinator refuses
// the registration; TimeoutError, AuthError, PeerLostError from the
// coordinator client. On an error nothing is left behind: a client dropped
// without leave() tells the others only that this process is gone.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "loom/comm/rendezvous/coordinator.h"
#include "loom/comm/rendezvous/job_env.h"
#include "loom/comm/rendezvous/rendezvous_keys.h"

namespace loom::comm {

struct JoinOptions {
  std::string role = "worker";  // what to register as, at env.rank on env.host
  // Connecting to the coordinator, and again the rendezvous.
  std::chrono::milliseconds timeout{120000};
  // Called once connected, before registering: opens this process's data
  // endpoint and returns where it listens. None: it registers without one.
  std::function<std::string()> data_endpoint;
  // Under a foreign launcher (env.source != "LOOM") nobody started a
  // coordinator: worker 0 then hosts one at env.coordinator_port, as
  // torchrun's rank 0 hosts its store (JoinedJob::coordinator).
  bool host_coordinator = false;
  std::chrono::milliseconds heartbeat_timeout{10000};  // the hosted coordinator's
};

struct JoinedJob {
  // Worker 0's in-process coordinator (host_coordinator), else null. Keep it
  // alive after the client: the others depend on it until they have left.
  std::unique_ptr<Coordinator> coordinator;
  std::shared_ptr<CoordinatorClient> client;
  Membership membership;
};

// `env` must name a coordinator (env.has_coordinator()); callers say in their
// own words what a process without one should do.
JoinedJob join_job(const JobEnv& env, const JoinOptions& options);

}  // namespace loom::comm
