// The header that travels in front of every payload between processes.
//
//   // given: uint32_t n
//   using namespace comm;
//   wire::Header h{.kind = wire::MessageKind::Data, .sender = 3, .tag = 42, .payload_nbytes = n};
//   wire::HeaderBytes bytes = wire::encode_header(h);             // 40 bytes, little-endian
//   wire::Header back = wire::decode_header(bytes, {.world_size = 8});  // throws CommError if bad
//
// Layout, version 1 (all integers little-endian, no padding):
//
//   offset size  field
//        0    4  magic "LOOM"
//        4    2  version (1)
//        6    2  header length in bytes (40)
//        8    2  message kind (MessageKind)
//       10    2  flags (none defined in version 1: must be 0)
//       12    4  sender rank
//       16    8  tag
//       24    8  payload length in bytes (the payload is the next frame)
//       32    4  CRC-32C of bytes [0, 32)
//       36    4  reserved (must be 0)
//
// The bytes come from the network, so decode_header trusts nothing: it checks
// the magic, version, header length, size and checksum before it trusts a
// field, then the kind, flags, sender rank (against the world size) and payload
// length (against a limit), and throws CommError naming the field and what is
// wrong. The prefix, the fields and the checksum are written and read by
// core/frame_codec.h, the codec of every Loom framing.
// A future version that adds fields grows the header length; this version
// refuses any other length rather than guess.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "loom/core/error.h"

namespace loom::comm::wire {

inline constexpr std::array<char, 4> kMagic = {'L', 'O', 'O', 'M'};
inline constexpr uint16_t kVersion = 1;
inline constexpr size_t kHeaderBytes = 40;
// The default limit on a payload a receiver accepts (decode_header refuses longer).
inline constexpr uint64_t kDefaultMaxPayloadBytes = uint64_t{16} << 30;  // 16 GiB

enum class MessageKind : uint16_t {
  Data = 1,  // a point-to-point message: payload of `payload_nbytes` for (sender, tag)
};
std::string_view message_kind_name(MessageKind kind);

struct Header {
  MessageKind kind = MessageKind::Data;
  uint16_t flags = 0;
  uint32_t sender = 0;  // rank of the sending process
  uint64_t tag = 0;
  uint64_t payload_nbytes = 0;
};

bool operator==(const Header& a, const Header& b);

using HeaderBytes = std::array<std::byte, kHeaderBytes>;

// What the receiver knows: the world size bounds the sender rank.
struct DecodeLimits {
  int world_size = 1;
  uint64_t max_payload_nbytes = kDefaultMaxPayloadBytes;
};

// Encodes `h` (version kVersion, checksum filled in). Throws CommError for a
// header that could not be decoded again (unknown kind, flags set).
HeaderBytes encode_header(const Header& h);

// Decodes and validates `bytes` (exactly one header; the transport receives
// it as its own frame). Throws CommError on anything wrong.
Header decode_header(std::span<const std::byte> bytes, const DecodeLimits& limits);

}  // namespace loom::comm::wire
