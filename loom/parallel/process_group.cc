#include "loom/parallel/process_group.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <cstdlib>

#include "loom/comm/transport/inproc_transport.h"
#include "loom/comm/rendezvous/join_job.h"
#include "loom/comm/rendezvous/rendezvous_keys.h"
#include "loom/comm/wire/security.h"
#include "loom/comm/transport/shm_transport.h"
#include "loom/comm/transport/zmq_transport.h"

namespace loom::parallel {

std::unique_ptr<ProcessGroup> ProcessGroup::join(const ProcessGroupOptions& options) {
  return join(comm::read_job_env(), options);
}

std::unique_ptr<ProcessGroup> ProcessGroup::join(const comm::JobEnv& env, const ProcessGroupOptions& options) {
  std::unique_ptr<ProcessGroup> pg(new ProcessGroup());
  pg->env_ = env;
  if (!env.has_coordinator() || (env.world_size == 1 && env.num_servers == 0)) {
    // A single process: an in-process transport to itself, no coordinator.
    static comm::InProcHub* solo = new comm::InProcHub(1);  // NOLINT: one per process, never freed
    pg->comm_ = comm::make_communicator(solo->transport(0));
    pg->comm_.timeout = options.collective_timeout;
    return pg;
  }
  const comm::SecurityOptions security = env.security();
  // Foreign launchers start no coordinator: rank 0 hosts it (host_coordinator).
  const comm::JoinOptions join{
      .role = env.role, .timeout = options.timeout,
      .data_endpoint = [&env] {
        const std::string ip = comm::local_address_towards(env.coordinator_host, env.coordinator_port);
        return comm::pick_free_tcp_endpoint(ip);
      },
      .host_coordinator = true, .heartbeat_timeout = options.heartbeat_timeout};
  comm::JoinedJob job = comm::join_job(env, join);
  pg->coordinator_ = std::move(job.coordinator);
  pg->client_ = std::move(job.client);
  pg->membership_ = std::move(job.membership);

  const auto& m = pg->membership_;
  std::vector<int> hosts = m.host_indices(env.role);
  bool one_host = true;
  for (int h : hosts) one_host = one_host && h == hosts.front();
  std::shared_ptr<comm::Transport> transport;
  std::string kind = options.transport;
  // Same host: shared memory (no network stack, no encryption needed: the
  // segment is private to this user). Across hosts: ZeroMQ with CURVE.
  if (kind == "auto") kind = one_host ? "shm" : "zmq";
  if (kind == "shm") {
    LOOM_CHECK_T(ConfigError, one_host, "transport 'shm' needs every rank on one host");
    std::string job_id = pg->client_->endpoint();
    for (char& c : job_id) {
      if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
    }
    transport = std::make_shared<comm::ShmTransport>(comm::ShmOptions{.job_id = job_id, .rank = m.rank, .size = m.world_size});
  } else {
    LOOM_CHECK_T(ConfigError, kind == "zmq", "unknown transport '{}' (auto, zmq or shm)", kind);
    transport = std::make_shared<comm::ZmqTransport>(m.rank, m.endpoints(env.role), security);
  }
  // Any loss breaks synchronous training: fail every peer so that no rank
  // waits on a rank that is itself waiting on the dead one.
  std::weak_ptr<comm::Transport> weak = transport;
  const int world = m.world_size, self = m.rank;
  // Only the first loss is the cause; later ones (ranks that stopped because
  // of it) must not overwrite the reason every rank reports.
  auto first = std::make_shared<std::atomic<bool>>(false);
  pg->client_->on_peer_lost([weak, world, self, first](const comm::LostPeer& lost) {
    if (first->exchange(true)) return;
    if (auto t = weak.lock()) {
      for (int r = 0; r < world; ++r) {
        if (r != self) t->fail_peer(r, lost.describe());
      }
    }
  });
  pg->comm_ = comm::make_communicator(transport, hosts);
  pg->comm_.timeout = options.collective_timeout;
  pg->client_->barrier(comm::rendezvous::kTransportReady, options.timeout, env.role);
  pg->joined_ = true;
  return pg;
}

std::string ProcessGroup::host() const {
  if (membership_.processes.empty()) return comm::host_name();
  return membership_.self().host;
}

void ProcessGroup::finish() {
  if (!joined_ || finished_) return;
  finished_ = true;
  try {
    client_->barrier(comm::rendezvous::kFinish, std::chrono::seconds(60), env_.role);
    client_->leave();
  } catch (const Error&) {
    // Leaving is best effort: a peer already gone makes the barrier fail.
  }
  if (coordinator_) coordinator_->wait_finished(std::chrono::seconds(10));
}

// Without finish() (a failed join, or an error unwinding through the caller)
// nothing here talks to the peers: destroying the client without leave() tells
// the coordinator this process stopped on an error, so the others get
// PeerLostError now instead of waiting at a barrier this process never reaches.
// Members go in reverse order: transport, client, then the coordinator rank 0
// may host.
ProcessGroup::~ProcessGroup() = default;

}  // namespace loom::parallel
