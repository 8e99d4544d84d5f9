#include "loom/comm/wire.h"

#include "loom/core/crc32c.h"
#include "loom/core/le_bytes.h"

#include <cstring>
#include <string>

namespace loom::comm::wire {
namespace {

// Field offsets, see the layout in wire.h.
constexpr size_t kOffMagic = 0;
constexpr size_t kOffVersion = 4;
constexpr size_t kOffHeaderLen = 6;
constexpr size_t kOffKind = 8;
constexpr size_t kOffFlags = 10;
constexpr size_t kOffSender = 12;
constexpr size_t kOffTag = 16;
constexpr size_t kOffPayloadLen = 24;
constexpr size_t kOffChecksum = 32;
constexpr size_t kOffReserved = 36;
static_assert(kOffReserved + 4 == kHeaderBytes);

using core::get_le;
using core::put_le;

bool known_kind(uint16_t kind) { return kind == static_cast<uint16_t>(MessageKind::Data); }

// A short printable rendering of four untrusted bytes, for error messages.
std::string printable(const std::byte* p, size_t n) {
  std::string s;
  for (size_t i = 0; i < n; ++i) {
    const auto c = static_cast<unsigned char>(p[i]);
    if (c >= 0x20 && c < 0x7F) {
      s += static_cast<char>(c);
    } else {
      static constexpr char kHex[] = "0123456789abcdef";
      s += "\\x";
      s += kHex[c >> 4];
      s += kHex[c & 0xF];
    }
  }
  return s;
}



}  // namespace

std::string_view message_kind_name(MessageKind kind) {
  switch (kind) {
    case MessageKind::Data:
      return "data";
  }
  return "unknown";
}

bool operator==(const Header& a, const Header& b) {
  return a.kind == b.kind && a.flags == b.flags && a.sender == b.sender && a.tag == b.tag &&
         a.payload_nbytes == b.payload_nbytes;
}

uint32_t crc32c(std::span<const std::byte> data) { return core::crc32c(data.data(), data.size()); }

HeaderBytes encode_header(const Header& h) {
  LOOM_CHECK_T(CommError, known_kind(static_cast<uint16_t>(h.kind)), "wire: cannot encode unknown message kind {}",
               static_cast<uint16_t>(h.kind));
  LOOM_CHECK_T(CommError, h.flags == 0, "wire: cannot encode flags {}: version {} defines none", h.flags, kVersion);
  HeaderBytes out{};
  std::memcpy(out.data() + kOffMagic, kMagic.data(), kMagic.size());
  put_le<uint16_t>(out.data() + kOffVersion, kVersion);
  put_le<uint16_t>(out.data() + kOffHeaderLen, static_cast<uint16_t>(kHeaderBytes));
  put_le<uint16_t>(out.data() + kOffKind, static_cast<uint16_t>(h.kind));
  put_le<uint16_t>(out.data() + kOffFlags, h.flags);
  put_le<uint32_t>(out.data() + kOffSender, h.sender);
  put_le<uint64_t>(out.data() + kOffTag, h.tag);
  put_le<uint64_t>(out.data() + kOffPayloadLen, h.payload_nbytes);
  put_le<uint32_t>(out.data() + kOffChecksum, crc32c(std::span(out).first(kOffChecksum)));
  put_le<uint32_t>(out.data() + kOffReserved, 0);
  return out;
}

Header decode_header(std::span<const std::byte> bytes, const DecodeLimits& limits) {
  // Fixed fields first, each checked before anything after it is trusted.
  LOOM_CHECK_T(CommError, bytes.size() >= kOffHeaderLen + 2,
               "wire: header truncated: {} bytes, need at least {} to read its length", bytes.size(),
               kOffHeaderLen + 2);
  const std::byte* p = bytes.data();
  LOOM_CHECK_T(CommError, std::memcmp(p + kOffMagic, kMagic.data(), kMagic.size()) == 0,
               "wire: bad magic \"{}\", expected \"LOOM\" (not a Loom peer, or a corrupted stream)",
               printable(p + kOffMagic, kMagic.size()));
  const auto version = get_le<uint16_t>(p + kOffVersion);
  LOOM_CHECK_T(CommError, version == kVersion,
               "wire: unsupported header version {}, this build speaks version {} (mixed Loom versions in one job?)",
               version, kVersion);
  const auto header_len = get_le<uint16_t>(p + kOffHeaderLen);
  LOOM_CHECK_T(CommError, header_len == kHeaderBytes,
               "wire: header length field is {}, version {} headers are {} bytes", header_len, kVersion, kHeaderBytes);
  LOOM_CHECK_T(CommError, bytes.size() == kHeaderBytes, "wire: header frame is {} bytes, expected {}", bytes.size(),
               kHeaderBytes);
  const auto checksum = get_le<uint32_t>(p + kOffChecksum);
  const uint32_t expected = crc32c(bytes.first(kOffChecksum));
  LOOM_CHECK_T(CommError, checksum == expected, "wire: header checksum mismatch (stored {}, computed {})", checksum,
               expected);
  LOOM_CHECK_T(CommError, get_le<uint32_t>(p + kOffReserved) == 0, "wire: reserved header field is {}, expected 0",
               get_le<uint32_t>(p + kOffReserved));

  Header h;
  const auto kind = get_le<uint16_t>(p + kOffKind);
  LOOM_CHECK_T(CommError, known_kind(kind), "wire: unknown message kind {}", kind);
  h.kind = static_cast<MessageKind>(kind);
  h.flags = get_le<uint16_t>(p + kOffFlags);
  LOOM_CHECK_T(CommError, h.flags == 0, "wire: unknown flags {} (version {} defines none)", h.flags, kVersion);
  h.sender = get_le<uint32_t>(p + kOffSender);
  LOOM_CHECK_T(CommError, limits.world_size > 0 && h.sender < static_cast<uint32_t>(limits.world_size),
               "wire: sender rank {} out of range for world size {}", h.sender, limits.world_size);
  h.tag = get_le<uint64_t>(p + kOffTag);
  h.payload_nbytes = get_le<uint64_t>(p + kOffPayloadLen);
  LOOM_CHECK_T(CommError, h.payload_nbytes <= limits.max_payload_nbytes,
               "wire: payload length {} exceeds the limit of {} bytes", h.payload_nbytes, limits.max_payload_nbytes);
  return h;
}

}  // namespace loom::comm::wire
