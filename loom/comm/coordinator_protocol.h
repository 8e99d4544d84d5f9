// Internal to the coordinator (coordinator_server.cc, coordinator_client.cc):
// the wire format both ends speak and the eventfd that wakes their polling
// loops. Not part of the public API; the format is described in coordinator.h.
//
//   // given: uint64_t request_id, std::string name, int64_t timeout_ms, std::string_view frame
//   using namespace comm::coordinator_protocol;
//   std::string header = encode_header(Type::Get, request_id);   // 16 bytes
//   std::string body = BodyWriter().str(name).i64(timeout_ms).take();
//   Header h = decode_header(frame);                            // CommError if bad
//   BodyReader r(body, "get");                                  // every field checked
//   std::string key = r.str("key", kMaxNameBytes);
//   r.done();                                                   // no trailing bytes
#pragma once

#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

#include "loom/comm/coordinator.h"
#include "loom/core/error.h"

namespace loom::comm::coordinator_protocol {

using Ms = std::chrono::milliseconds;

// ---- wire format --------------------------------------------------------

inline constexpr char kMagic[4] = {'L', 'M', 'C', 'O'};
inline constexpr uint16_t kVersion = 1;
inline constexpr size_t kHeaderBytes = 16;
inline constexpr size_t kMaxBodyBytes = size_t{4} << 20;
inline constexpr size_t kMaxNameBytes = 4096;  // role, host, endpoint, key, barrier name, reason
inline constexpr size_t kMaxValueBytes = size_t{1} << 20;
inline constexpr int64_t kMaxProcesses = 1 << 16;

enum class Type : uint16_t {
  // client -> coordinator
  Hello = 1,
  Register = 2,
  Barrier = 3,
  Set = 4,
  Get = 5,
  Heartbeat = 6,
  Leave = 7,
  // coordinator -> client
  Welcome = 32,
  Registered = 33,
  Done = 34,
  Value = 35,
  HeartbeatAck = 36,
  Lost = 37,
  Error = 38,
};

bool known_type(uint16_t t);

enum ErrorCode : int64_t { kRefused = 1, kTimedOut = 2, kPeerLost = 3, kProtocol = 4 };

struct Header {
  Type type;
  uint64_t request;
};

std::string encode_header(Type type, uint64_t request);
// CommError for a wrong size, magic, version or type.
Header decode_header(std::string_view h);

class BodyWriter {
 public:
  BodyWriter& i64(int64_t v) {
    for (int i = 0; i < 8; ++i) buf_.push_back(static_cast<char>((static_cast<uint64_t>(v) >> (8 * i)) & 0xff));
    return *this;
  }
  BodyWriter& str(std::string_view s) {
    const auto n = static_cast<uint32_t>(s.size());
    for (int i = 0; i < 4; ++i) buf_.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
    buf_.append(s);
    return *this;
  }
  std::string take() { return std::move(buf_); }

 private:
  std::string buf_;
};

// Reads fields in order; anything out of bounds is a CommError naming the field.
class BodyReader {
 public:
  BodyReader(std::string_view data, const char* message) : data_(data), message_(message) {}
  int64_t i64(const char* field) {
    need(8, field);
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i)
      v |= static_cast<uint64_t>(static_cast<unsigned char>(data_[pos_ + static_cast<size_t>(i)])) << (8 * i);
    pos_ += 8;
    return static_cast<int64_t>(v);
  }
  int64_t i64(const char* field, int64_t min, int64_t max) {
    const int64_t v = i64(field);
    if (v < min || v > max) fail(field, format("value {} outside [{}, {}]", v, min, max));
    return v;
  }
  std::string str(const char* field, size_t max) {
    need(4, field);
    uint32_t n = 0;
    for (int i = 0; i < 4; ++i)
      n |= static_cast<uint32_t>(static_cast<unsigned char>(data_[pos_ + static_cast<size_t>(i)])) << (8 * i);
    pos_ += 4;
    if (n > max) fail(field, format("{} bytes, limit {}", n, max));
    need(n, field);
    std::string s(data_.substr(pos_, n));
    pos_ += n;
    return s;
  }
  void done() {
    if (pos_ != data_.size()) fail("end", format("{} unexpected trailing bytes", data_.size() - pos_));
  }

 private:
  void need(size_t n, const char* field) {
    if (data_.size() - pos_ < n) fail(field, "truncated");
  }
  [[noreturn]] void fail(const char* field, const std::string& why) {
    throw CommError(format("coordinator protocol: {} message, field '{}': {}", message_, field, why));
  }
  std::string_view data_;
  size_t pos_ = 0;
  const char* message_;
};

bool valid_role(const std::string& role);

// "worker 3 on host a7"
std::string describe_process(const std::string& role, int rank, const std::string& host);

// A lost process, in Lost and HeartbeatAck bodies.
void encode_lost(BodyWriter& w, const LostPeer& p);
LostPeer decode_lost(BodyReader& r);

// ---- waking a polling loop ----------------------------------------------

// The eventfd that wakes a loop blocked in zmq_poll.
int make_eventfd();
void drain_eventfd(int fd);
void signal_eventfd(int fd);

}  // namespace loom::comm::coordinator_protocol
