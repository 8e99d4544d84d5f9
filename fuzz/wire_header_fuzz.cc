// libFuzzer target for the wire header decoder (loom/comm/wire/wire.h).
//
//   scripts/fuzz wire_header 600      # builds with clang + ASan/UBSan, runs 10 minutes
//
// Input: one byte that picks the world size (1..256), then the header bytes.
// The property: decode_header either throws CommError, or returns a header
// whose sender and payload length are within the limits and which encodes
// back to exactly the input. Anything else (another exception, a crash, a
// sanitizer report) is a bug.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

#include "loom/comm/wire/wire.h"
#include "loom/core/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const int world_size = data[0] + 1;
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data + 1), size - 1);
  const loom::comm::wire::DecodeLimits limits{.world_size = world_size, .max_payload_nbytes = uint64_t{1} << 32};
  loom::comm::wire::Header h;
  try {
    h = loom::comm::wire::decode_header(bytes, limits);
  } catch (const loom::CommError&) {
    return 0;
  }
  if (h.sender >= static_cast<uint32_t>(world_size) || h.payload_nbytes > limits.max_payload_nbytes) {
    throw loom::InternalError("wire_header_fuzz: decoded header outside the limits");
  }
  const loom::comm::wire::HeaderBytes again = loom::comm::wire::encode_header(h);
  if (again.size() != bytes.size() || std::memcmp(again.data(), bytes.data(), again.size()) != 0) {
    throw loom::InternalError("wire_header_fuzz: decode then encode does not give the input back");
  }
  return 0;
}
