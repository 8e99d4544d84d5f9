// The one codec of Loom's binary framings: the transport's LOOM header
// (comm/wire/wire.h), the coordinator's LMCO messages
// (comm/rendezvous/coordinator_protocol.h), the parameter servers' LMPS header
// and LMPC config (ps/protocol.h, ps/messages.h) and the optimizer spec's LOPT
// record (optim/spec.h). It lives in core, below every layer that frames
// bytes, so each of them can use it. Fields are little-endian and written and
// read in order; every read is bounds-checked; a header opens with the common
// prefix {magic, version[, header length]} and may carry a CRC-32C of the
// bytes in front of it. Each protocol keeps its own magic, fields and layout.
//
//   // given: std::span<const std::byte> frame
//   constexpr FrameFormat kFormat{.protocol = "example", .message = "header", .magic = {'E', 'X', 'M', 'P'},
//                                 .version = 1, .nbytes = 20, .length_field = true};
//   std::array<std::byte, 20> out{};
//   FrameWriter(out).prefix(kFormat).u32(7).checksum().zeros(4);  // 8 + 4 + 4 + 4 bytes
//   FrameReader r = open_frame(frame, kFormat);   // size, magic, version, length: CommError if wrong
//   const uint32_t seven = r.u32("seven");
//   r.checksum();                                 // the CRC-32C of the bytes before it
//   r.zeros(4, "reserved");
//   r.done();                                     // nothing left over
//   std::string body = FrameWriter().i64(-1).str("key").take();   // a body of any length
//   FrameReader b(body, "example", "get request");
//   const int64_t v = b.i64("value", -1, 10);     // "example: get request, field 'value': ..."
//   const std::string key = b.str("key", 64);
//
// The bytes come from the network: a reader trusts nothing, and every error
// is a CommError "<protocol>: <message>, field '<field>': <why>".
#pragma once

#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "loom/core/error.h"
#include "loom/core/le_bytes.h"

namespace loom::core {

// What a framing's fixed header (or record) looks like, for the prefix.
struct FrameFormat {
  std::string_view protocol;  // names the framing in errors: "wire", "coordinator protocol", "ps protocol"
  std::string_view message;   // what the frame is: "header", "config"
  std::array<char, 4> magic{};
  uint16_t version = 1;
  size_t nbytes = 0;          // its size: anything else is refused
  bool length_field = false;  // a u16 of nbytes follows the version (a later version may grow the header)
};

// Writes fields in order, little-endian. Either into a buffer of its own
// (FrameWriter(), then take()) or into a fixed span, where writing past its
// end is a bug (InternalError).
class FrameWriter {
 public:
  FrameWriter() = default;
  explicit FrameWriter(std::span<std::byte> fixed) : fixed_(fixed), is_fixed_(true) {}

  FrameWriter& u8(uint8_t v) { return le(v); }
  FrameWriter& u16(uint16_t v) { return le(v); }
  FrameWriter& u32(uint32_t v) { return le(v); }
  FrameWriter& u64(uint64_t v) { return le(v); }
  FrameWriter& i32(int32_t v) { return le(static_cast<uint32_t>(v)); }
  FrameWriter& i64(int64_t v) { return le(static_cast<uint64_t>(v)); }
  FrameWriter& f64(double v) { return le(std::bit_cast<uint64_t>(v)); }  // the IEEE-754 bits
  FrameWriter& bytes(std::span<const std::byte> b);
  FrameWriter& bytes(std::string_view s) { return bytes(std::as_bytes(std::span(s))); }
  FrameWriter& str(std::string_view s);  // u32 length, then the bytes
  FrameWriter& i64_list(std::span<const int64_t> values);  // each an i64, no length in front
  FrameWriter& prefix(const FrameFormat& f);  // magic, version and, with f.length_field, the u16 size
  FrameWriter& zeros(size_t n);
  FrameWriter& checksum();  // u32 CRC-32C of every byte written before it

  size_t size() const { return pos_; }
  std::string take();  // its own buffer (not for a fixed span)

 private:
  template <class T>
  FrameWriter& le(T v) {
    core::put_le<T>(grow(sizeof(T)), v);
    return *this;
  }
  std::byte* grow(size_t n);
  std::span<const std::byte> written() const;

  std::string own_;
  std::span<std::byte> fixed_;
  bool is_fixed_ = false;
  size_t pos_ = 0;
};

// Reads fields in order. Anything out of bounds or out of range is a
// CommError naming the protocol, the message and the field.
class FrameReader {
 public:
  FrameReader(std::span<const std::byte> data, std::string_view protocol, std::string_view message)
      : data_(data), protocol_(protocol), message_(message) {}
  FrameReader(std::string_view data, std::string_view protocol, std::string_view message)
      : FrameReader(std::as_bytes(std::span(data)), protocol, message) {}

  uint8_t u8(const char* field) { return le<uint8_t>(field); }
  uint16_t u16(const char* field) { return le<uint16_t>(field); }
  uint32_t u32(const char* field) { return le<uint32_t>(field); }
  uint64_t u64(const char* field) { return le<uint64_t>(field); }
  int32_t i32(const char* field) { return static_cast<int32_t>(le<uint32_t>(field)); }
  int64_t i64(const char* field) { return static_cast<int64_t>(le<uint64_t>(field)); }
  int64_t i64(const char* field, int64_t min, int64_t max);  // and within [min, max]
  double f64(const char* field) { return std::bit_cast<double>(le<uint64_t>(field)); }
  std::span<const std::byte> bytes(size_t n, const char* field);
  std::string str(const char* field, size_t max_nbytes);  // u32 length (at most max_nbytes), then the bytes
  std::vector<int64_t> i64_list(const char* field);       // every byte left, as i64 (a whole number of them)
  void zeros(size_t n, const char* field);                // reserved bytes: must be 0
  void checksum();                                        // u32 CRC-32C of every byte before it
  void done() const;                                      // no bytes left

  size_t remaining() const { return data_.size() - pos_; }
  [[noreturn]] void fail(std::string_view field, std::string_view why) const;

 private:
  template <class T>
  T le(const char* field) {
    need(sizeof(T), field);
    const T v = core::get_le<T>(data_.data() + pos_);
    pos_ += sizeof(T);
    return v;
  }
  void need(size_t n, const char* field) const;

  std::span<const std::byte> data_;
  size_t pos_ = 0;
  std::string_view protocol_;
  std::string_view message_;
};

// Checks that `bytes` is one frame of `f` (its magic, its version, its length
// field, its size, in that order) and returns a reader after the prefix.
FrameReader open_frame(std::span<const std::byte> bytes, const FrameFormat& f);
FrameReader open_frame(std::string_view bytes, const FrameFormat& f);

}  // namespace loom::core
