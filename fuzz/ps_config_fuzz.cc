// libFuzzer target for the parameter servers' placement config codec
// (loom/ps/messages.h, published as "ps/config").
//
//   scripts/fuzz ps_config 600
//
// The property: decode_config either throws CommError, or returns a config
// within check_placement's limits that encodes back to exactly the input.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "loom/core/error.h"
#include "loom/ps/messages.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  loom::ps::ServerConfig c;
  try {
    c = loom::ps::decode_config(bytes);
  } catch (const loom::CommError&) {
    return 0;
  }
  if (c.replicas < 0 || c.split_bound < 1 || c.slice_elements < 1) throw loom::InternalError("ps_config_fuzz: config outside the limits");
  if (loom::ps::encode_config(c) != bytes) {
    throw loom::InternalError("ps_config_fuzz: a decoded config does not encode back to its bytes");
  }
  return 0;
}
