#include "loom/comm/transport/shared_region.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <random>

#include "loom/core/error.h"

namespace loom::comm {
namespace {

bool name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
         c == '-';
}

std::string random_hex16() {
  std::random_device rd;
  static constexpr char kHex[] = "0123456789abcdef";
  std::string s;
  for (int i = 0; i < 16; ++i) s.push_back(kHex[rd() & 15]);
  return s;
}

// Maps all of `fd` (closed here either way).
std::byte* map_fd(int fd, size_t bytes, const std::string& name) {
  void* p = bytes == 0 ? nullptr : ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  const int err = errno;
  ::close(fd);
  if (p == MAP_FAILED) {
    throw CommError(format("shared region {}: cannot map {} bytes: {}", name, bytes, std::strerror(err)));
  }
  return static_cast<std::byte*>(p);
}

}  // namespace

bool SharedRegion::valid_name(const std::string& name) {
  if (name.size() < 2 || name.size() > 201 || name[0] != '/') return false;
  for (size_t i = 1; i < name.size(); ++i) {
    if (!name_char(name[i])) return false;
  }
  return true;
}

std::shared_ptr<SharedRegion> SharedRegion::create(const std::string& prefix, size_t bytes) {
  const std::string name = "/" + prefix + "-" + random_hex16();
  LOOM_CHECK_T(CommError, prefix.size() <= 100 && valid_name(name), "shared region: bad name prefix '{}'", prefix);
  LOOM_CHECK_T(CommError, bytes > 0, "shared region {}: size 0", name);
  const int fd = ::shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  if (fd < 0) throw CommError(format("shared region {}: cannot create: {}", name, std::strerror(errno)));
  if (::ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
    const int err = errno;
    ::close(fd);
    ::shm_unlink(name.c_str());
    throw CommError(format("shared region {}: cannot size it to {} bytes: {}", name, bytes, std::strerror(err)));
  }
  std::byte* data = nullptr;
  try {
    data = map_fd(fd, bytes, name);
  } catch (...) {
    ::shm_unlink(name.c_str());
    throw;
  }
  return std::shared_ptr<SharedRegion>(new SharedRegion(name, data, bytes, true));
}

std::shared_ptr<SharedRegion> SharedRegion::open(const std::string& name) {
  LOOM_CHECK_T(CommError, valid_name(name), "shared region: '{}' is not a region name", name);
  const int fd = ::shm_open(name.c_str(), O_RDWR, 0);
  if (fd < 0) throw CommError(format("shared region {}: cannot open: {}", name, std::strerror(errno)));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || st.st_size <= 0) {
    const int err = errno;
    ::close(fd);
    throw CommError(format("shared region {}: cannot read its size: {}", name,
                           st.st_size <= 0 ? "it is empty" : std::strerror(err)));
  }
  const auto bytes = static_cast<size_t>(st.st_size);
  return std::shared_ptr<SharedRegion>(new SharedRegion(name, map_fd(fd, bytes, name), bytes, false));
}

void SharedRegion::unlink() {
  if (!owns_name_) return;
  owns_name_ = false;
  ::shm_unlink(name_.c_str());
}

SharedRegion::~SharedRegion() {
  unlink();
  if (data_ != nullptr) ::munmap(data_, size_);
}

}  // namespace loom::comm
