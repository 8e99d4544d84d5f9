// A named POSIX shared-memory region of one size, mapped read-write: one
// process makes it, others on the same host open it by its name. The
// parameter servers' one-host data path (ps/shm_staging.h) is built on it.
//
//   auto mine = comm::SharedRegion::create("loom-ps-w0", 1 << 20);   // "/loom-ps-w0-<random hex>", mode 0600
//   std::memcpy(mine->data(), "hi", 2);
//   auto theirs = comm::SharedRegion::open(mine->name());          // another process, same host
//   mine->unlink();  // the name goes once every user has opened it; the mappings stay
//
// The random part of the name keeps two jobs (or a crashed run's leftovers)
// apart. A region is unlinked when its creator drops it, at the latest; open()
// checks the name's form (so a peer cannot make us open any file) and maps
// the size the region has now. Errors are CommError naming the region.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

namespace loom::comm {

class SharedRegion {
 public:
  // "/<prefix>-<16 random hex digits>", `bytes` long, zero-filled. `prefix`: [A-Za-z0-9._-], up to 100 characters.
  static std::shared_ptr<SharedRegion> create(const std::string& prefix, size_t bytes);
  static std::shared_ptr<SharedRegion> open(const std::string& name);
  // "/" then 1 to 200 of [A-Za-z0-9._-].
  static bool valid_name(const std::string& name);

  ~SharedRegion();
  SharedRegion(const SharedRegion&) = delete;
  SharedRegion& operator=(const SharedRegion&) = delete;

  std::byte* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& name() const { return name_; }
  // Removes the name (the creator's job; idempotent). Whoever mapped it keeps the memory.
  void unlink();

 private:
  SharedRegion(std::string name, std::byte* data, size_t size, bool owns_name)
      : name_(std::move(name)), data_(data), size_(size), owns_name_(owns_name) {}
  std::string name_;
  std::byte* data_ = nullptr;
  size_t size_ = 0;
  bool owns_name_ = false;
};

}  // namespace loom::comm
