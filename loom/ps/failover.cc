#include "loom/ps/failover.h"

#include "loom/core/error.h"

namespace loom::ps {

std::optional<int> FailoverPolicy::lost(const comm::LostPeer& p) {
  std::lock_guard lock(mu_);
  if (p.role == "server") return p.rank;
  if (p.role == "worker") {
    if (worker_.empty()) worker_ = p.describe();
  } else {
    coordinator_ = p.describe();
  }
  return std::nullopt;
}

void FailoverPolicy::check() const {
  std::lock_guard lock(mu_);
  if (!coordinator_.empty()) throw PeerLostError(coordinator_);
  if (!worker_.empty() && mode_ == io::Mode::DistSync) throw PeerLostError(worker_);
}

}  // namespace loom::ps
