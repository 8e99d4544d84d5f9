// libFuzzer target for the coordinator's message decoders
// (loom/comm/coordinator_protocol.h): the 16-byte header and the bodies the
// client reads from the coordinator (error, lost, heartbeat reply with its
// list of lost processes, welcome, value).
//
//   scripts/fuzz coordinator_message 600
//
// Input: [16-byte header] [body]. The property: every decoder either throws
// CommError or returns fields within their limits; nothing else.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "loom/comm/coordinator_protocol.h"
#include "loom/core/error.h"

namespace cp = loom::comm::coordinator_protocol;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view all(reinterpret_cast<const char*>(data), size);
  const std::string_view header = all.substr(0, std::min<size_t>(size, cp::kHeaderBytes));
  const std::string_view body = size > cp::kHeaderBytes ? all.substr(cp::kHeaderBytes) : std::string_view();
  cp::Header h{};
  int which = size > 0 ? data[0] % 4 : 0;  // the body decoder, by the header's type when it has one
  try {
    h = cp::decode_header(header);
    which = h.type == cp::Type::Lost ? 0 : h.type == cp::Type::HeartbeatAck ? 1 : h.type == cp::Type::Error ? 2 : 3;
    if (cp::encode_header(h.type, h.request) != header) {
      throw loom::InternalError("coordinator_message_fuzz: a header does not encode back to its bytes");
    }
  } catch (const loom::CommError&) {
  }
  try {
    cp::BodyReader r(body, "fuzz");
    switch (which) {
      case 0: {  // Lost
        const loom::comm::LostPeer p = cp::decode_lost(r);
        if (p.role.size() > cp::kMaxNameBytes || p.rank < -1) throw loom::InternalError("lost peer out of limits");
        break;
      }
      case 1: {  // HeartbeatAck
        const int64_t n = r.i64("count", 0, cp::kMaxProcesses);
        for (int64_t i = 0; i < n; ++i) cp::decode_lost(r);
        break;
      }
      case 2: {  // Error
        r.i64("code");
        r.str("message", cp::kMaxNameBytes);
        break;
      }
      default: {  // Welcome, then Value
        r.i64("heartbeat_interval_ms", 1, 3600000);
        r.i64("heartbeat_timeout_ms", 1, 36000000);
        r.str("value", cp::kMaxValueBytes);
        break;
      }
    }
    r.done();
  } catch (const loom::CommError&) {
  }
  return 0;
}
