#include "loom/comm/rendezvous/join_job.h"

#include "loom/core/error.h"

namespace loom::comm {

JoinedJob join_job(const JobEnv& env, const JoinOptions& options) {
  LOOM_ASSERT(env.has_coordinator());  // the callers refuse a job without one, in their own words
  // Before anything connects, and with the launcher's way to pass a secret.
  check_job_security(env);
  const SecurityOptions security = env.security();
  JoinedJob job;
  if (options.host_coordinator && env.source != "LOOM" && env.role == "worker" && env.rank == 0) {
    job.coordinator = std::make_unique<Coordinator>(CoordinatorOptions{
        .bind = format("tcp://*:{}", env.coordinator_port), .num_workers = env.world_size,
        .num_servers = env.num_servers, .security = security, .heartbeat_timeout = options.heartbeat_timeout});
  }
  job.client = std::make_shared<CoordinatorClient>(env.coordinator_endpoint(), security, options.timeout);
  const std::string endpoint = options.data_endpoint ? options.data_endpoint() : std::string();
  const RegisterRequest request{.role = options.role, .host = env.host, .rank = env.rank, .endpoint = endpoint};
  job.membership = job.client->register_process(request, options.timeout);
  return job;
}

}  // namespace loom::comm
