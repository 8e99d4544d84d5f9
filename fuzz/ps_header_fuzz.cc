// libFuzzer target for the parameter-server header decoder (loom/ps/protocol.h).
//
//   scripts/fuzz ps_header 600
//
// The property: decode_header either throws CommError, or returns a header
// whose sizes are within the protocol's limits and which encodes back to
// exactly the input. Anything else (another exception, a crash, a sanitizer
// report) is a bug.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

#include "loom/core/error.h"
#include "loom/ps/protocol.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  loom::ps::Header h;
  try {
    h = loom::ps::decode_header(bytes);
  } catch (const loom::CommError&) {
    return 0;
  }
  if (h.num_rows < 0 || h.row_begin < 0 || h.row_begin + h.num_rows > h.total_rows || h.num_frames > 16) {
    throw loom::InternalError("ps_header_fuzz: decoded header outside the limits");
  }
  (void)h.slice_nbytes();  // must not overflow (UBSan)
  const loom::ps::HeaderBytes back = loom::ps::encode_header(h);
  if (std::memcmp(back.data(), data, back.size()) != 0) {
    throw loom::InternalError("ps_header_fuzz: a decoded header does not encode back to its bytes");
  }
  return 0;
}
