// A parameter server: holds slices of keys (placement.h), merges the
// workers' pushes, runs the update rule, answers pulls, and keeps its backups
// in step (replication).
//
//   // given: comm::SecurityOptions sec, std::vector<std::string> endpoints_of_all_servers
//   ps::KVServer server({.rank = 0, .num_workers = 4, .sync = true,
//                        .placement = {.num_servers = 2, .replicas = 1}, .security = sec});
//   server.connect_servers(endpoints_of_all_servers);   // after every server has bound
//   server.start();                                      // serves on its own thread
//   // the coordinator client's on_peer_lost calls server.server_lost(rank) for a lost server
//   server.stop();
//
// One thread owns every socket: a ROUTER that workers (and other servers)
// send requests to, and one DEALER per other server for replication. A
// request that fails (unknown key, wrong shape or dtype, push before init, a
// malformed message) is answered with an error naming what was wrong; the
// server goes on serving everyone else.
//
// Replication: for a slice with backups, the primary applies an update, sends
// it to every live backup (Op::Replicate, the merged update itself, so the
// backups run the same rule on the same bytes), and answers the workers only
// once every live backup has acknowledged it. When a server is lost, the next
// live server of each of its chains becomes primary: it first sends its full
// state of the slice to the backups after it (Op::SetState), then serves the
// requests that workers re-send to it. Requests a backup receives for a slice
// whose primary it still believes alive wait until it learns otherwise.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "loom/comm/wire/security.h"
#include "loom/core/log.h"
#include "loom/ps/placement.h"

namespace loom::ps {

struct ServerOptions {
  int rank = 0;
  int num_workers = 1;
  bool sync = true;  // dist_sync; otherwise every push is applied on arrival (dist_async, dist_ssp)
  PlacementOptions placement;
  std::string bind = "tcp://127.0.0.1:0";
  comm::SecurityOptions security;
  core::LogSink log = core::log_to_stderr;  // a lost peer, a dropped message (from the server's thread)
};

struct ServerStats {
  uint64_t requests = 0;
  uint64_t errors = 0;
  uint64_t updates = 0;
  uint64_t bytes_in = 0;   // payload bytes received
  uint64_t bytes_out = 0;  // payload bytes sent
};

class KVServer {
 public:
  explicit KVServer(const ServerOptions& options);  // binds (CommError if it cannot)
  ~KVServer();
  KVServer(const KVServer&) = delete;
  KVServer& operator=(const KVServer&) = delete;

  std::string endpoint() const;
  // Rank and mode, when they are only known after binding (the rendezvous
  // assigns the rank; the workers say which mode). Before start().
  void set_role(int rank, bool sync);
  // How big slices are (slice_elements_for the job's hosts), known after the
  // rendezvous too. Before start().
  void set_slice_elements(int64_t slice_elements);
  // The endpoints of every server, by rank (this one's included).
  void connect_servers(const std::vector<std::string>& endpoints);
  void start();
  void stop();
  // Thread-safe: server `rank` is gone (the coordinator said so).
  void server_lost(int rank);
  ServerStats stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace loom::ps
