#include "loom/train/tensorboard.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <ctime>
#include <exception>

#include "loom/core/error.h"
#include "loom/core/crc32c.h"

namespace loom::train {

using core::crc32c;
using core::mask_crc32c;
namespace {

// ---- protobuf wire format (only what Event / Summary need) ----
enum WireType : uint32_t { kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kFixed32 = 5 };

void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7F) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

void put_key(std::string& out, uint32_t field, WireType type) { put_varint(out, (field << 3) | type); }

void put_le(std::string& out, uint64_t v, int nbytes) {
  for (int i = 0; i < nbytes; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}

void put_bytes(std::string& out, uint32_t field, std::string_view bytes) {
  put_key(out, field, kLengthDelimited);
  put_varint(out, bytes.size());
  out.append(bytes);
}

void put_double(std::string& out, uint32_t field, double v) {
  uint64_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  put_key(out, field, kFixed64);
  put_le(out, bits, 8);
}

void put_float(std::string& out, uint32_t field, float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  put_key(out, field, kFixed32);
  put_le(out, bits, 4);
}

// tensorflow.Event fields
constexpr uint32_t kEventWallTime = 1, kEventStep = 2, kEventFileVersion = 3, kEventSummary = 5;
// tensorflow.Summary / Summary.Value fields
constexpr uint32_t kSummaryValue = 1, kValueTag = 1, kValueSimpleValue = 2;

double now_s() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string hostname() {
  char buf[256] = {};
  if (gethostname(buf, sizeof buf - 1) != 0 || buf[0] == '\0') return "localhost";
  return buf;
}

std::string errno_text() { return std::strerror(errno); }

}  // namespace

void append_tfrecord(std::string& out, std::string_view data) {
  std::string header;
  put_le(header, data.size(), 8);
  out.append(header);
  put_le(out, mask_crc32c(crc32c(header.data(), header.size())), 4);
  out.append(data);
  put_le(out, mask_crc32c(crc32c(data.data(), data.size())), 4);
}

TensorBoardWriter::TensorBoardWriter(const std::filesystem::path& log_dir, TensorBoardOptions options)
    : options_(std::move(options)) {
  LOOM_CHECK(options_.flush_every_records >= 1, "TensorBoardWriter: flush_every_records must be >= 1, got {}",
             options_.flush_every_records);
  std::error_code ec;
  std::filesystem::create_directories(log_dir, ec);
  if (ec)
    throw IoError(
        format("TensorBoardWriter: cannot create directory {}: {}", log_dir.string(), ec.message()));

  const std::string base =
      "events.out.tfevents." + std::to_string(static_cast<long long>(std::time(nullptr))) + "." + hostname();
  // O_EXCL: two writers on one folder in the same second get different files.
  for (int k = 0; fd_ < 0; ++k) {
    std::string name = base;
    if (k > 0) name.append(".").append(std::to_string(k));
    path_ = log_dir / name.append(options_.filename_suffix);
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd_ < 0 && (errno != EEXIST || k >= 1000)) {
      throw IoError(format("TensorBoardWriter: cannot create {}: {}", path_.string(), errno_text()));
    }
  }
  last_flush_ = std::chrono::steady_clock::now();

  event_.clear();
  put_double(event_, kEventWallTime, now_s());
  put_bytes(event_, kEventFileVersion, "brain.Event:2");
  append_record(event_);
  flush();  // TensorBoard sees the file as valid from the start
}

TensorBoardWriter::~TensorBoardWriter() {
  try {
    close();
  } catch (const std::exception&) {
    // A destructor must not throw; close() explicitly to get the error.
  }
}

void TensorBoardWriter::begin_event(double wall_time_s, int64_t step) {
  LOOM_CHECK(fd_ >= 0, "TensorBoardWriter: {} is closed", path_.string());
  event_.clear();
  summary_.clear();
  put_double(event_, kEventWallTime, wall_time_s);
  put_key(event_, kEventStep, kVarint);
  put_varint(event_, static_cast<uint64_t>(step));  // negative: 10 bytes, two's complement
}

void TensorBoardWriter::add_value(std::string_view tag, double value) {
  value_.clear();
  put_bytes(value_, kValueTag, tag);
  put_float(value_, kValueSimpleValue, static_cast<float>(value));
  put_bytes(summary_, kSummaryValue, value_);
}

void TensorBoardWriter::end_event() {
  put_bytes(event_, kEventSummary, summary_);
  append_record(event_);
}

void TensorBoardWriter::add_scalar(std::string_view tag, double value, int64_t step) {
  add_scalar(tag, value, step, now_s());
}

void TensorBoardWriter::add_scalar(std::string_view tag, double value, int64_t step, double wall_time_s) {
  begin_event(wall_time_s, step);
  add_value(tag, value);
  end_event();
}

void TensorBoardWriter::add_scalars(const std::map<std::string, double>& values, int64_t step) {
  begin_event(now_s(), step);
  for (const auto& [tag, value] : values) add_value(tag, value);
  end_event();
}

void TensorBoardWriter::append_record(std::string_view data) {
  append_tfrecord(pending_, data);
  ++num_records_;
  ++pending_records_;
  if (pending_records_ >= options_.flush_every_records ||
      std::chrono::steady_clock::now() - last_flush_ >= options_.flush_every) {
    flush();
  }
}

void TensorBoardWriter::flush() {
  LOOM_CHECK(fd_ >= 0, "TensorBoardWriter: {} is closed", path_.string());
  size_t done = 0;
  while (done < pending_.size()) {
    const ssize_t n = ::write(fd_, pending_.data() + done, pending_.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      // Keep what was not written, so a later flush can retry after the cause is fixed.
      pending_.erase(0, done);
      throw IoError(format("TensorBoardWriter: cannot write {}: {}", path_.string(), errno_text()));
    }
    done += static_cast<size_t>(n);
  }
  pending_.clear();
  pending_records_ = 0;
  last_flush_ = std::chrono::steady_clock::now();
}

void TensorBoardWriter::close() {
  if (fd_ < 0) return;
  std::exception_ptr error;
  try {
    flush();
  } catch (...) {
    error = std::current_exception();
  }
  const int rc = ::close(fd_);
  fd_ = -1;
  if (error) std::rethrow_exception(error);
  if (rc != 0) throw IoError(format("TensorBoardWriter: cannot close {}: {}", path_.string(), errno_text()));
}

}  // namespace loom::train
