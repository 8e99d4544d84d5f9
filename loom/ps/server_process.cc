#include "loom/ps/server_process.h"

#include <atomic>
#include <cstdio>
#include <mutex>
#include <optional>
#include <string>

#include "loom/comm/rendezvous/coordinator.h"
#include "loom/comm/rendezvous/join_job.h"
#include "loom/comm/rendezvous/rendezvous_keys.h"
#include "loom/core/error.h"
#include "loom/io/mode.h"
#include "loom/ps/messages.h"
#include "loom/ps/server.h"

namespace loom::ps {
namespace {

// What the workers asked for: the KVStore type's name and whether it is dist_sync.
struct ServedType {
  std::string name;
  bool sync = false;
};

// Once joined: every server derives the slice size from the same membership
// (server 0 tells the workers), takes the KVStore type the workers asked for
// and connects to the other servers.
ServedType configure(KVServer& server, comm::CoordinatorClient& client, const comm::Membership& m,
                     const ServerProcessOptions& options) {
  const int64_t slice_elements = slice_elements_for(m.num_hosts);
  server.set_slice_elements(slice_elements);
  if (m.rank == 0) {
    client.set(comm::rendezvous::kPsConfig,
               encode_config({.replicas = options.replicas, .split_bound = options.split_bound,
                              .slice_elements = slice_elements}),
               options.join_timeout);
  }
  const std::string type_name = client.get(comm::rendezvous::kPsType, options.join_timeout);
  const std::optional<io::Mode> type = io::parse_mode(type_name);
  LOOM_CHECK_T(ConfigError, type && io::uses_servers(*type), "parameter server: the workers asked for KVStore type '{}'",
               type_name);
  const bool sync = *type == io::Mode::DistSync;
  server.set_role(m.rank, sync);
  server.connect_servers(m.endpoints("server"));
  return {type_name, sync};
}

void log_stats(const KVServer& server, int rank, const ServerProcessOptions& options) {
  const ServerStats s = server.stats();
  char line[200];
  std::snprintf(line, sizeof line, "server %d: %llu requests (%llu refused), %llu updates, %.1f MB in, %.1f MB out",
                rank, static_cast<unsigned long long>(s.requests), static_cast<unsigned long long>(s.errors),
                static_cast<unsigned long long>(s.updates), s.bytes_in / 1e6, s.bytes_out / 1e6);
  core::log(options.log, core::LogLevel::Info, line);
}

}  // namespace

int run_server(const comm::JobEnv& env, const ServerProcessOptions& options) {
  LOOM_CHECK_T(ConfigError, env.has_coordinator(), "parameter server: no coordinator to join (LOOM_COORDINATOR, "
                                                   "DMLC_PS_ROOT_URI/PORT, MASTER_ADDR/PORT)");
  LOOM_CHECK_T(ConfigError, env.num_servers >= 1, "parameter server: the job has no servers (LOOM_NUM_SERVERS)");
  const comm::SecurityOptions security = env.security();
  const PlacementOptions placement{.num_servers = env.num_servers, .replicas = options.replicas,
                                   .split_bound = options.split_bound};
  check_placement(placement);
  // The server binds once the coordinator answered, and registers its endpoint.
  // `job` is declared first so that the client outlives the server.
  comm::JoinedJob job;
  std::optional<KVServer> bound;
  const comm::JoinOptions join{
      .role = "server", .timeout = options.join_timeout, .data_endpoint = [&] {
        const std::string ip = comm::local_address_towards(env.coordinator_host, env.coordinator_port);
        bound.emplace(ServerOptions{.rank = 0, .num_workers = env.world_size, .placement = placement,
                                    .bind = format("tcp://{}:*", ip), .security = security, .log = options.log});
        return bound->endpoint();
      }};
  job = comm::join_job(env, join);  // says how to pass a secret with the launcher that started us
  comm::CoordinatorClient& client = *job.client;
  KVServer& server = *bound;
  const comm::Membership& m = job.membership;
  const ServedType type = configure(server, client, m, options);
  const bool sync = type.sync;

  std::atomic<bool> worker_lost{false};
  std::mutex why_mu;
  std::string why;
  client.on_peer_lost([&](const comm::LostPeer& p) {
    if (p.role == "server") {
      server.server_lost(p.rank);
    } else if (p.role == "worker" && sync) {
      std::lock_guard lock(why_mu);
      if (why.empty()) why = p.describe();
      worker_lost = true;
    }
  });
  server.start();
  core::log(options.log, core::LogLevel::Info,
            format("server {} of {} ({}) serving on {}", m.rank, m.num_servers, type.name, server.endpoint()));
  int status = 0;
  for (;;) {
    try {
      client.get(comm::rendezvous::kPsFinished, std::chrono::milliseconds(500));
      break;
    } catch (const TimeoutError&) {
    } catch (const PeerLostError& e) {
      core::log(options.log, core::LogLevel::Error, format("server {}: {}", m.rank, e.what()));
      status = 1;
      break;
    }
    if (worker_lost) {
      std::lock_guard lock(why_mu);
      core::log(options.log, core::LogLevel::Error,
                format("server {}: {}; dist_sync cannot go on without it", m.rank, why));
      status = 1;
      break;
    }
  }
  server.stop();
  log_stats(server, m.rank, options);
  if (status == 0) client.leave();
  return status;
}

}  // namespace loom::ps
