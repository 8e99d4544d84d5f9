// Memory for tensor storage. The CPU allocator caches freed blocks by size so
// that a training step that repeats the same shapes reuses the same memory and
// asks the system for nothing new (see AllocatorStats::system_allocs).
//
//   // given: size_t nbytes
//   void* p = cpu_allocator().allocate(nbytes);  ...  cpu_allocator().deallocate(p, nbytes);
//   auto s = cpu_allocator().stats();   // s.system_allocs stops growing after warm-up
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace loom::core {

struct AllocatorStats {
  uint64_t system_allocs = 0;   // blocks obtained from the OS allocator
  uint64_t system_bytes = 0;    // bytes currently held from the OS (live + cached)
  uint64_t cache_hits = 0;      // allocations served from the cache
  uint64_t live_bytes = 0;      // bytes handed out and not yet returned
};

class Allocator {
 public:
  virtual ~Allocator() = default;
  virtual void* allocate(size_t nbytes) = 0;
  virtual void deallocate(void* p, size_t nbytes) = 0;
  virtual AllocatorStats stats() const = 0;
};

// Caching allocator for host memory, 64-byte aligned, thread-safe.
class CachingCpuAllocator final : public Allocator {
 public:
  static constexpr size_t kAlignment = 64;
  ~CachingCpuAllocator() override;
  void* allocate(size_t nbytes) override;
  void deallocate(void* p, size_t nbytes) override;
  AllocatorStats stats() const override;
  // Returns cached blocks to the OS.
  void release_cached();

 private:
  static size_t round_size(size_t nbytes);
  mutable std::mutex mu_;
  std::unordered_map<size_t, std::vector<void*>> free_;
  AllocatorStats stats_;
};

// The process's host allocator. Memory is a process resource (like malloc);
// everything else in Loom hangs off explicit objects.
CachingCpuAllocator& cpu_allocator();

}  // namespace loom::core
