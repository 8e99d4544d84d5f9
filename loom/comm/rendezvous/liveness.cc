// Liveness: last heard and silence past the heartbeat timeout (liveness.h).
#include "loom/comm/rendezvous/liveness.h"

namespace loom::comm::coordinator_state {

void Liveness::heard(const std::string& id, Clock::time_point now) {
  if (auto it = last_heard_.find(id); it != last_heard_.end()) it->second = now;
}

std::vector<Liveness::Silent> Liveness::silent(Clock::time_point now) const {
  std::vector<Silent> out;
  for (const auto& [id, last] : last_heard_) {
    if (now - last > timeout_) out.push_back({id, std::chrono::duration_cast<std::chrono::milliseconds>(now - last)});
  }
  return out;
}

}  // namespace loom::comm::coordinator_state
