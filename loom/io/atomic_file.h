// Writing a file so that a crash never leaves half of it under its final name.
//
//   // given: std::string bytes
//   io::AtomicFile f("run/model.safetensors");   // opens run/.model.safetensors.tmp-<pid>-<n>
//   f.write(bytes.data(), bytes.size());
//   f.commit();   // flush, fsync, rename over the target, fsync the directory
//
// Destroyed without commit() (an exception was thrown, the write failed), or
// the process ended at once by a second stop signal (core/stop_signals.h):
// the temporary file is removed and whatever was under the target name before
// is untouched. Readers see either the old file or the complete new one.
//
//   io::write_file_atomically("run/config.toml", text);   // the same, in one call
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string_view>
#include <vector>

namespace loom::core {
class AbortCleanup;
}

namespace loom::io {

class AtomicFile {
 public:
  // Creates the temporary file next to `target` (same directory, hence same
  // file system, so the rename is atomic). Throws IoError naming the target.
  explicit AtomicFile(std::filesystem::path target);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  // Appends bytes (buffered). Throws IoError naming the target on failure;
  // the object is then unusable and its destructor removes the temporary file.
  void write(const void* data, size_t nbytes);
  void write(std::string_view bytes) { write(bytes.data(), bytes.size()); }

  // Makes the written bytes the target's content, durably. Throws IoError.
  void commit();

  const std::filesystem::path& target() const { return target_; }
  const std::filesystem::path& temp_path() const { return temp_path_; }
  // Bytes written so far.
  uint64_t nbytes() const { return nbytes_; }

 private:
  void flush();
  void write_fully(const char* data, size_t nbytes);
  void discard() noexcept;

  std::filesystem::path target_;
  std::filesystem::path temp_path_;
  int fd_ = -1;
  bool committed_ = false;
  uint64_t nbytes_ = 0;
  std::vector<char> buffer_;  // small writes are gathered here
  // The temporary file is removed if a second stop signal ends the process
  // at once (core/stop_signals.h).
  std::unique_ptr<core::AbortCleanup> cleanup_;
};

void write_file_atomically(const std::filesystem::path& path, std::string_view contents);

}  // namespace loom::io
