// The job coordinator: rendezvous, barriers, bootstrap values and membership
// by heartbeat. One per job; every worker and server talks to it.
//
//   // given: comm::SecurityOptions sec, std::string coord_endpoint, std::string my_data_endpoint, std::string id
//   comm::Coordinator coord({.bind = "tcp://10.77.0.1:29400", .num_workers = 8, .security = sec});
//
//   comm::CoordinatorClient client(coord_endpoint, sec, 30s);       // in each process
//   std::shared_ptr<comm::Transport> transport;                       // set once registered
//   client.on_peer_lost([&](const comm::LostPeer& p) { transport->fail_peer(p.rank, p.describe()); });
//   comm::Membership m = client.register_process({.role = "worker", .host = comm::host_name(),
//                                                  .endpoint = my_data_endpoint}, 120s);
//   transport = std::make_shared<comm::ZmqTransport>(m.rank, m.endpoints("worker"), sec);
//   if (m.rank == 0) client.set("nccl_id", id);  else id = client.get("nccl_id", 60s);
//   client.barrier("start", 60s);
//   ...
//   if (client.try_get("stop_at")) ...                        // each step, without waiting: a stop proposed?
//   std::string stop_at = client.propose("stop_at", "1200");  // on SIGTERM: the first proposal wins
//   client.leave();                                   // a clean exit: nobody is told "lost"
//
// Rendezvous: register_process() returns once every expected process
// (num_workers workers, num_servers servers) has registered. A process may ask
// for a rank; the others get the free ranks, ordered by host name so ranks on
// one host are contiguous. The result lists every process: role, rank, host,
// host index (hosts numbered in rank order, workers first), local rank (index
// among the processes of its role on its host) and data endpoint.
//
// Membership: a client's background thread sends a heartbeat every
// `heartbeat_interval`. A registered process the coordinator has not heard
// from for `heartbeat_timeout` (killed, hung, cut off), or whose client was
// destroyed without leave(), is lost: every other client is told at once
// (and again in every heartbeat reply), its on_peer_lost callback runs with
// the role, rank, host and reason, and barriers waiting for it fail with
// PeerLostError. If the coordinator stops answering for `heartbeat_timeout`,
// each client reports the coordinator itself lost (role "coordinator",
// rank -1) and every pending and later call throws PeerLostError naming it.
//
// Every call has a timeout (TimeoutError). Requests refused by the coordinator
// (a rank taken twice, a full job, an unknown role) throw ConfigError; a
// client whose keys do not come from the job secret cannot connect (AuthError
// when ZeroMQ reports the refused handshake, TimeoutError otherwise).
//
// Wire format (ZeroMQ DEALER -> ROUTER, CURVE unless insecure): two frames, a
// 16-byte header {magic "LMCO", u16 version, u16 type, u64 request id} and a
// body of little-endian fields (u32-length-prefixed strings, i64 integers),
// every length checked against the frame and against limits before use.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "loom/comm/wire/security.h"

namespace loom::comm {

struct CoordinatorOptions {
  std::string bind = "tcp://127.0.0.1:0";  // port 0 (or *): any free port, see Coordinator::endpoint()
  int num_workers = 1;
  int num_servers = 0;
  SecurityOptions security;
  std::chrono::milliseconds heartbeat_interval{1000};
  std::chrono::milliseconds heartbeat_timeout{10000};
};

// One process of the job, as the rendezvous describes it.
struct ProcessInfo {
  std::string role;  // "worker" or "server"
  int rank = -1;     // within the role
  std::string host;
  int host_index = -1;   // hosts numbered by first appearance, workers by rank, then servers
  int local_rank = -1;   // among the processes of this role on this host, by rank
  std::string endpoint;  // where its data transport listens
};

struct Membership {
  std::string role;
  int rank = -1;
  int world_size = 0;  // processes in this role
  int num_workers = 0;
  int num_servers = 0;
  int num_hosts = 0;
  std::vector<ProcessInfo> processes;  // workers by rank, then servers by rank

  const ProcessInfo& self() const { return at(role, rank); }
  const ProcessInfo& at(const std::string& role, int rank) const;
  // Data endpoints of one role, indexed by rank (what ZmqTransport takes).
  std::vector<std::string> endpoints(const std::string& role) const;
  // Host index per rank of one role (for hierarchical collectives).
  std::vector<int> host_indices(const std::string& role) const;
};

struct LostPeer {
  std::string role;  // "worker", "server" or "coordinator"
  int rank = -1;     // -1 for the coordinator
  std::string host;  // for the coordinator: its endpoint
  std::string reason;
  std::string describe() const;  // "worker 3 on host a7 lost: no heartbeat for 10.0 s"
};

class Coordinator {
 public:
  // Binds (CommError if it cannot) and starts serving on its own thread.
  explicit Coordinator(CoordinatorOptions options);
  ~Coordinator();  // stop()
  Coordinator(const Coordinator&) = delete;
  Coordinator& operator=(const Coordinator&) = delete;

  // The endpoint clients connect to, with the port actually bound.
  std::string endpoint() const;
  // Stops the thread and closes the socket; clients then see the coordinator lost.
  void stop();
  // Whether the rendezvous is complete.
  bool formed() const;
  // Processes lost so far.
  std::vector<LostPeer> lost() const;
  // Waits until the job formed and every process left or was lost (what a
  // coordinator process waits for before it exits); false at the timeout.
  bool wait_finished(std::chrono::milliseconds timeout) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

struct RegisterRequest {
  std::string role = "worker";  // "worker" or "server"
  std::string host;             // host name; ranks sharing one are grouped
  int rank = -1;                // the rank wanted, or -1 for any
  std::string endpoint;         // this process's data endpoint
};

class CoordinatorClient {
 public:
  // Connects and waits up to `timeout` for the coordinator's welcome
  // (TimeoutError, AuthError); then heartbeats in the background.
  CoordinatorClient(std::string endpoint, const SecurityOptions& security,
                    std::chrono::milliseconds timeout = std::chrono::seconds(30));
  // Without leave(), the coordinator reports this process lost to the others.
  ~CoordinatorClient();
  CoordinatorClient(const CoordinatorClient&) = delete;
  CoordinatorClient& operator=(const CoordinatorClient&) = delete;

  Membership register_process(const RegisterRequest& request, std::chrono::milliseconds timeout);
  // Waits until every process of `role` ("" = all processes) reached the barrier of this name.
  void barrier(const std::string& name, std::chrono::milliseconds timeout, const std::string& role = "");
  void set(const std::string& key, const std::string& value,
           std::chrono::milliseconds timeout = std::chrono::seconds(30));
  // Waits until `key` is set (TimeoutError otherwise).
  std::string get(const std::string& key, std::chrono::milliseconds timeout);
  // Sets `key` to `value` unless it is set already; returns the value the
  // key holds afterwards: `value` if this call set it, else the earlier one
  // (the first proposal wins; every caller learns the same winner).
  std::string propose(const std::string& key, const std::string& value,
                      std::chrono::milliseconds timeout = std::chrono::seconds(30));
  // The value of `key` if it is set, without waiting for it (nullopt if not).
  std::optional<std::string> try_get(const std::string& key,
                                     std::chrono::milliseconds timeout = std::chrono::seconds(30));
  // Tells the coordinator this process is done; others are not told it is lost.
  void leave(std::chrono::milliseconds timeout = std::chrono::seconds(5));

  // Runs on the client's background thread for every lost process (and for
  // the coordinator itself), once each; losses seen before the callback was
  // set are replayed to it. Keep it short; it must not call this client.
  void on_peer_lost(std::function<void(const LostPeer&)> callback);
  std::vector<LostPeer> lost_peers() const;
  const std::string& endpoint() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// This machine's host name (gethostname), for RegisterRequest::host.
std::string host_name();

}  // namespace loom::comm
