#include "loom/core/allocator.h"

#include <cstdlib>
#include <new>

namespace loom::core {

size_t CachingCpuAllocator::round_size(size_t nbytes) {
  if (nbytes == 0) nbytes = 1;
  size_t granule = nbytes < (1u << 16) ? kAlignment : 4096;
  return (nbytes + granule - 1) / granule * granule;
}

CachingCpuAllocator::~CachingCpuAllocator() { release_cached(); }

void* CachingCpuAllocator::allocate(size_t nbytes) {
  size_t size = round_size(nbytes);
  {
    std::lock_guard lock(mu_);
    auto it = free_.find(size);
    if (it != free_.end() && !it->second.empty()) {
      void* p = it->second.back();
      it->second.pop_back();
      ++stats_.cache_hits;
      stats_.live_bytes += size;
      return p;
    }
  }
  void* p = std::aligned_alloc(kAlignment, size);
  if (p == nullptr) {
    release_cached();
    p = std::aligned_alloc(kAlignment, size);
    if (p == nullptr) throw std::bad_alloc();
  }
  std::lock_guard lock(mu_);
  ++stats_.system_allocs;
  stats_.system_bytes += size;
  stats_.live_bytes += size;
  return p;
}

void CachingCpuAllocator::deallocate(void* p, size_t nbytes) {
  if (p == nullptr) return;
  size_t size = round_size(nbytes);
  std::lock_guard lock(mu_);
  free_[size].push_back(p);
  stats_.live_bytes -= size;
}

AllocatorStats CachingCpuAllocator::stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

void CachingCpuAllocator::release_cached() {
  std::lock_guard lock(mu_);
  for (auto& [size, blocks] : free_) {
    for (void* p : blocks) {
      std::free(p);
      stats_.system_bytes -= size;
    }
  }
  free_.clear();
}

CachingCpuAllocator& cpu_allocator() {
  // Leaked on purpose: tensors held by static objects may be freed after main.
  static auto* a = new CachingCpuAllocator();
  return *a;
}

}  // namespace loom::core
