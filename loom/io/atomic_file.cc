#include "loom/io/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

#include "loom/core/error.h"
#include "loom/core/stop_signals.h"

namespace loom::io {
namespace {

constexpr size_t kBufferBytes = size_t{1} << 20;

std::string errno_text(int err) { return std::strerror(err); }

// Distinguishes temporary files of several writers in one process.
std::atomic<uint64_t> g_temp_counter{0};

std::filesystem::path parent_dir(const std::filesystem::path& p) {
  auto dir = p.parent_path();
  return dir.empty() ? std::filesystem::path(".") : dir;
}

// Makes a rename or unlink in `dir` durable. File systems that cannot fsync a
// directory say EINVAL; there is nothing more to do on those.
void fsync_dir(const std::filesystem::path& dir, const std::filesystem::path& target) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  LOOM_CHECK_T(IoError, fd >= 0, "{}: cannot open directory {} to sync it: {}", target.string(), dir.string(),
               errno_text(errno));
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  LOOM_CHECK_T(IoError, rc == 0 || err == EINVAL || err == ENOTSUP, "{}: fsync of directory {} failed: {}",
               target.string(), dir.string(), errno_text(err));
}

}  // namespace

AtomicFile::AtomicFile(std::filesystem::path target) : target_(std::move(target)) {
  LOOM_CHECK_T(IoError, target_.has_filename(), "{}: not a file name", target_.string());
  const auto dir = parent_dir(target_);
  const std::string stem = format(".{}.tmp-{}-", target_.filename().string(), ::getpid());
  // O_EXCL: never reuse a name another writer holds. Mode 0666 lets the umask
  // decide the final permissions, as for any newly created file.
  for (int attempt = 0; attempt < 100 && fd_ < 0; ++attempt) {
    temp_path_ = dir / (stem + std::to_string(g_temp_counter.fetch_add(1)));
    fd_ = ::open(temp_path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd_ < 0 && errno != EEXIST) break;
  }
  LOOM_CHECK_T(IoError, fd_ >= 0, "{}: cannot create temporary file {}: {}", target_.string(), temp_path_.string(),
               errno_text(errno));
  try {
    cleanup_ = std::make_unique<core::AbortCleanup>(temp_path_);
  } catch (...) {
    discard();
    throw;
  }
  buffer_.reserve(kBufferBytes);
}

AtomicFile::~AtomicFile() {
  if (!committed_) discard();
}

void AtomicFile::discard() noexcept {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
  if (!temp_path_.empty()) {
    ::unlink(temp_path_.c_str());
    temp_path_.clear();
  }
  cleanup_.reset();
}

void AtomicFile::write_fully(const char* data, size_t nbytes) {
  while (nbytes > 0) {
    ssize_t n = ::write(fd_, data, nbytes);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int err = n < 0 ? errno : EIO;
      discard();
      throw IoError(format("{}: write failed after {} bytes: {}", target_.string(), nbytes_, errno_text(err)));
    }
    data += n;
    nbytes -= static_cast<size_t>(n);
  }
}

void AtomicFile::flush() {
  if (buffer_.empty()) return;
  write_fully(buffer_.data(), buffer_.size());
  buffer_.clear();
}

void AtomicFile::write(const void* data, size_t nbytes) {
  LOOM_CHECK_T(IoError, fd_ >= 0 && !committed_, "{}: write to a file that is closed", target_.string());
  const char* p = static_cast<const char*>(data);
  if (buffer_.size() + nbytes <= kBufferBytes) {
    buffer_.insert(buffer_.end(), p, p + nbytes);
  } else {
    flush();
    if (nbytes < kBufferBytes) {
      buffer_.insert(buffer_.end(), p, p + nbytes);
    } else {
      write_fully(p, nbytes);
    }
  }
  nbytes_ += nbytes;
}

void AtomicFile::commit() {
  LOOM_CHECK_T(IoError, fd_ >= 0 && !committed_, "{}: commit of a file that is closed", target_.string());
  flush();
  if (::fsync(fd_) != 0) {
    int err = errno;
    discard();
    throw IoError(format("{}: fsync failed: {}", target_.string(), errno_text(err)));
  }
  int rc = ::close(fd_);
  fd_ = -1;
  if (rc != 0) {
    int err = errno;
    discard();
    throw IoError(format("{}: close failed: {}", target_.string(), errno_text(err)));
  }
  if (::rename(temp_path_.c_str(), target_.c_str()) != 0) {
    int err = errno;
    discard();
    throw IoError(format("{}: cannot rename {} over it: {}", target_.string(), temp_path_.string(), errno_text(err)));
  }
  committed_ = true;
  temp_path_.clear();
  cleanup_.reset();
  fsync_dir(parent_dir(target_), target_);
}

void write_file_atomically(const std::filesystem::path& path, std::string_view contents) {
  AtomicFile f(path);
  f.write(contents);
  f.commit();
}

}  // namespace loom::io
