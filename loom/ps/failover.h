// What a worker's calls do when the coordinator reports a process lost: a
// lost server's requests go to the next server of their replica chain; a
// lost worker ends dist_sync calls (its rounds would never complete); a lost
// coordinator ends every call. No sockets here: the KVStore asks it.
//
//   // given: comm::CoordinatorClient& client
//   ps::FailoverPolicy policy(io::Mode::DistSync);
//   client.on_peer_lost([&](const comm::LostPeer& p) {
//     if (std::optional<int> s = policy.lost(p)) { ... }  // re-send server *s's requests to its replicas
//   });
//   policy.check();   // between polls: PeerLostError when the call cannot go on
#pragma once

#include <mutex>
#include <optional>
#include <string>

#include "loom/comm/rendezvous/coordinator.h"
#include "loom/io/mode.h"

namespace loom::ps {

class FailoverPolicy {
 public:
  explicit FailoverPolicy(io::Mode mode) : mode_(mode) {}
  // Thread-safe. The rank of a lost server (whose requests go to their
  // replicas), or nothing for another role.
  std::optional<int> lost(const comm::LostPeer& p);
  // Thread-safe. PeerLostError naming the loss when calls cannot go on.
  void check() const;

 private:
  io::Mode mode_;
  mutable std::mutex mu_;
  std::string worker_;       // the first lost worker, described
  std::string coordinator_;  // set when the coordinator itself is lost
};

}  // namespace loom::ps
