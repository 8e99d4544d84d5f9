#include "loom/ps/messages.h"

#include <cstring>

#include "loom/core/error.h"
#include "loom/core/frame_codec.h"
#include "loom/ps/placement.h"
#include "loom/ps/protocol.h"

namespace loom::ps {
namespace {

constexpr core::FrameFormat kConfigFormat{.protocol = "ps protocol", .message = "config", .magic = {'L', 'M', 'P', 'C'},
                                          .version = 2, .nbytes = 28};

}  // namespace

std::string encode_config(const ServerConfig& c) {
  std::string out(kConfigFormat.nbytes, '\0');
  core::FrameWriter(std::as_writable_bytes(std::span(out)))
      .prefix(kConfigFormat)
      .zeros(2)
      .i32(c.replicas)
      .i64(c.split_bound)
      .i64(c.slice_elements);
  return out;
}

ServerConfig decode_config(std::string_view bytes) {
  core::FrameReader r = core::open_frame(bytes, kConfigFormat);
  r.zeros(2, "reserved");
  ServerConfig c;
  c.replicas = r.i32("replicas");
  if (c.replicas < 0 || c.replicas >= (1 << 16)) r.fail("replicas", format("{} replicas", c.replicas));
  c.split_bound = r.i64("split_bound", 1, int64_t{1} << 40);
  c.slice_elements = r.i64("slice_elements", 1, int64_t{1} << 40);
  r.done();
  return c;
}

void stamp_request_id(std::span<std::byte> header, uint64_t id) {
  Header h = decode_header(header);  // ours: valid by construction
  h.request_id = id;
  const HeaderBytes b = encode_header(h);
  std::memcpy(header.data(), b.data(), b.size());
}

uint64_t reply_request_id(std::span<const comm::FramePtr> frames) {
  LOOM_CHECK_T(CommError, !frames.empty(), "ps protocol: an empty reply");
  const Header h = decode_header(frames[0]->bytes());
  if (h.status == Status::Error && h.request_id == 0) {
    const std::string_view why = frames.size() > 1 ? frames[1]->view() : std::string_view();
    throw CommError(format("the server could not read a request: {}", why));
  }
  return h.request_id;
}

comm::RequestIds request_ids() {
  return {.stamp = [](std::vector<std::byte>& header, uint64_t id) { stamp_request_id(header, id); },
          .read = [](std::span<const comm::FramePtr> reply) { return reply_request_id(reply); }};
}

}  // namespace loom::ps
