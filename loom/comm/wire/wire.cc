#include "loom/comm/wire/wire.h"

#include "loom/core/frame_codec.h"

namespace loom::comm::wire {
namespace {

using core::FrameFormat;
using core::FrameReader;
using core::FrameWriter;

// The layout in wire.h, as the frame codec's prefix and fields.
constexpr FrameFormat kFormat{.protocol = "wire", .message = "header", .magic = kMagic, .version = kVersion,
                              .nbytes = kHeaderBytes, .length_field = true};

bool known_kind(uint16_t kind) { return kind == static_cast<uint16_t>(MessageKind::Data); }

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

HeaderBytes encode_header(const Header& h) {
  LOOM_CHECK_T(CommError, known_kind(static_cast<uint16_t>(h.kind)), "wire: cannot encode unknown message kind {}",
               static_cast<uint16_t>(h.kind));
  LOOM_CHECK_T(CommError, h.flags == 0, "wire: cannot encode flags {}: version {} defines none", h.flags, kVersion);
  HeaderBytes out{};
  FrameWriter(out)
      .prefix(kFormat)
      .u16(static_cast<uint16_t>(h.kind))
      .u16(h.flags)
      .u32(h.sender)
      .u64(h.tag)
      .u64(h.payload_nbytes)
      .checksum()
      .zeros(4);
  return out;
}

Header decode_header(std::span<const std::byte> bytes, const DecodeLimits& limits) {
  // The prefix and the checksum first: no field is trusted before both passed.
  FrameReader r = open_frame(bytes, kFormat);
  const uint16_t kind = r.u16("kind");
  Header h;
  h.flags = r.u16("flags");
  h.sender = r.u32("sender");
  h.tag = r.u64("tag");
  h.payload_nbytes = r.u64("payload length");
  r.checksum();
  r.zeros(4, "reserved");
  r.done();

  if (!known_kind(kind)) r.fail("kind", format("unknown message kind {}", kind));
  h.kind = static_cast<MessageKind>(kind);
  if (h.flags != 0) r.fail("flags", format("unknown flags {} (version {} defines none)", h.flags, kVersion));
  if (limits.world_size <= 0 || h.sender >= static_cast<uint32_t>(limits.world_size)) {
    r.fail("sender", format("sender rank {} out of range for world size {}", h.sender, limits.world_size));
  }
  if (h.payload_nbytes > limits.max_payload_nbytes) {
    r.fail("payload length", format("payload length {} exceeds the limit of {} bytes", h.payload_nbytes,
                                    limits.max_payload_nbytes));
  }
  return h;
}

}  // namespace loom::comm::wire
