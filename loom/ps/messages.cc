#include "loom/ps/messages.h"

#include <cstring>

#include "loom/core/error.h"
#include "loom/core/le_bytes.h"
#include "loom/ps/placement.h"
#include "loom/ps/protocol.h"

namespace loom::ps {
namespace {

using core::get_le;
using core::put_le;

constexpr size_t kConfigBytes = 28;
constexpr uint16_t kConfigVersion = 2;

}  // namespace

std::string encode_config(const ServerConfig& c) {
  std::string out(kConfigBytes, '\0');
  auto* p = reinterpret_cast<std::byte*>(out.data());
  std::memcpy(p, "LMPC", 4);
  put_le<uint16_t>(p + 4, kConfigVersion);
  put_le<uint16_t>(p + 6, 0);
  put_le<uint32_t>(p + 8, static_cast<uint32_t>(c.replicas));
  put_le<uint64_t>(p + 12, static_cast<uint64_t>(c.split_bound));
  put_le<uint64_t>(p + 20, static_cast<uint64_t>(c.slice_elements));
  return out;
}

ServerConfig decode_config(std::string_view bytes) {
  LOOM_CHECK_T(CommError, bytes.size() == kConfigBytes, "ps config: {} bytes, expected {}", bytes.size(), kConfigBytes);
  const auto* p = reinterpret_cast<const std::byte*>(bytes.data());
  LOOM_CHECK_T(CommError, std::memcmp(p, "LMPC", 4) == 0, "ps config: bad magic (not a parameter-server config)");
  const auto version = get_le<uint16_t>(p + 4);
  LOOM_CHECK_T(CommError, version == kConfigVersion, "ps config: version {} (this build speaks {})", version,
               kConfigVersion);
  LOOM_CHECK_T(CommError, get_le<uint16_t>(p + 6) == 0, "ps config: reserved bytes are not zero");
  const ServerConfig c{.replicas = static_cast<int32_t>(get_le<uint32_t>(p + 8)),
                       .split_bound = static_cast<int64_t>(get_le<uint64_t>(p + 12)),
                       .slice_elements = static_cast<int64_t>(get_le<uint64_t>(p + 20))};
  LOOM_CHECK_T(CommError, c.replicas >= 0 && c.replicas < (1 << 16), "ps config: {} replicas", c.replicas);
  LOOM_CHECK_T(CommError, c.split_bound >= 1 && c.split_bound <= (int64_t{1} << 40), "ps config: split_bound {}",
               c.split_bound);
  LOOM_CHECK_T(CommError, c.slice_elements >= 1 && c.slice_elements <= (int64_t{1} << 40),
               "ps config: slice_elements {}", c.slice_elements);
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
