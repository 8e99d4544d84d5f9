// Internal to loom_comm (coordinator_server.cc): when each watched process
// was last heard from, and which have been silent for longer than the
// heartbeat timeout. Every message renews; a process is watched from its
// hello until it leaves, is lost or is forgotten (membership.h decides which).
// No socket and no clock: the caller passes the time.
#pragma once

#include <chrono>
#include <map>
#include <string>
#include <vector>

#include "loom/comm/transport/transport.h"  // Clock

namespace loom::comm::coordinator_state {

class Liveness {
 public:
  explicit Liveness(std::chrono::milliseconds timeout) : timeout_(timeout) {}

  // Starts watching `id`, or renews it.
  void watch(const std::string& id, Clock::time_point now) { last_heard_[id] = now; }
  // Renews a watched process; one not watched (left, lost) stays unwatched.
  void heard(const std::string& id, Clock::time_point now);
  void forget(const std::string& id) { last_heard_.erase(id); }
  bool watched(const std::string& id) const { return last_heard_.contains(id); }

  struct Silent {
    std::string id;
    std::chrono::milliseconds silent_for;
  };
  // Watched processes not heard from for longer than the timeout, by id.
  std::vector<Silent> silent(Clock::time_point now) const;

  std::chrono::milliseconds timeout() const { return timeout_; }

 private:
  std::chrono::milliseconds timeout_;
  std::map<std::string, Clock::time_point> last_heard_;  // by routing id
};

}  // namespace loom::comm::coordinator_state
