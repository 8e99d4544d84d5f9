#include "loom/ps/shm_staging.h"

#include <algorithm>

#include "loom/core/error.h"

namespace loom::ps {

namespace {
constexpr size_t kMinRegion = size_t{1} << 20;
}

ShmStaging::ShmStaging(int worker, std::vector<bool> on_my_host)
    : worker_(worker), local_(std::move(on_my_host)), attached_(local_.size(), false) {}

bool ShmStaging::any() const { return std::find(local_.begin(), local_.end(), true) != local_.end(); }

bool ShmStaging::on_host(std::span<const int> chain) const {
  if (chain.empty()) return false;
  for (int s : chain) {
    if (s < 0 || static_cast<size_t>(s) >= local_.size() || !local_[static_cast<size_t>(s)]) return false;
  }
  return true;
}

bool ShmStaging::covers(std::span<const int> chain) const {
  if (!region_ || !on_host(chain)) return false;
  for (int s : chain) {
    if (!attached_[static_cast<size_t>(s)]) return false;
  }
  return true;
}

std::vector<int> ShmStaging::reserve(size_t bytes) {
  if (!any() || bytes <= size()) return {};
  // Grown in powers of two from 1 MiB, so a model's calls settle on one region.
  size_t n = std::max(kMinRegion, size() * 2);
  while (n < bytes) n *= 2;
  region_ = comm::SharedRegion::create(format("loom-ps-w{}", worker_), n);
  std::vector<int> need;
  for (size_t s = 0; s < local_.size(); ++s) {
    attached_[s] = false;
    if (local_[s]) need.push_back(static_cast<int>(s));
  }
  return need;
}

void ShmStaging::attached(int server, bool ok) {
  const auto s = static_cast<size_t>(server);
  LOOM_CHECK(s < local_.size(), "shm staging: server {} of {}", server, local_.size());
  attached_[s] = ok;
  if (!ok) local_[s] = false;
}

void ShmStaging::attach_done() {
  if (region_) region_->unlink();
}

}  // namespace loom::ps
