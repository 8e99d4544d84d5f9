// libFuzzer target for every decoder of the coordinator's messages
// (loom/comm/rendezvous/coordinator_protocol.h): the 16-byte header and the body of each
// message type, both directions (hello, register, barrier, set, get, leave,
// heartbeat; welcome, registered, done, value, heartbeat reply, lost, error).
//
//   scripts/fuzz coordinator_message 600
//
// Input: [16-byte header] [body]. The header's type picks the body's decoder;
// when the header is refused, the first byte picks it, so every decoder sees
// arbitrary bodies. The property: each decoder either throws CommError or
// returns a message that encodes back to exactly its bytes; nothing else.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "loom/comm/rendezvous/coordinator_protocol.h"
#include "loom/core/error.h"

namespace cp = loom::comm::coordinator_protocol;

namespace {

constexpr cp::Type kTypes[] = {cp::Type::Hello,      cp::Type::Register, cp::Type::Barrier, cp::Type::Set,
                               cp::Type::Get,        cp::Type::Heartbeat, cp::Type::Leave,  cp::Type::Welcome,
                               cp::Type::Registered, cp::Type::Done,     cp::Type::Value,   cp::Type::HeartbeatAck,
                               cp::Type::Lost,       cp::Type::Error,    cp::Type::Propose, cp::Type::TryGet,
                               cp::Type::MaybeValue};

void expect_same(const std::string& again, std::string_view body) {
  if (again != body) throw loom::InternalError("coordinator_message_fuzz: a body does not encode back to its bytes");
}

void check_body(cp::Type type, std::string_view body) {
  switch (type) {
    case cp::Type::Hello: return expect_same(cp::encode(cp::decode_hello(body)), body);
    case cp::Type::Register: return expect_same(cp::encode(cp::decode_register(body)), body);
    case cp::Type::Barrier: return expect_same(cp::encode(cp::decode_barrier(body)), body);
    case cp::Type::Set: return expect_same(cp::encode(cp::decode_set(body)), body);
    case cp::Type::Get: return expect_same(cp::encode(cp::decode_get(body)), body);
    case cp::Type::Leave: return expect_same(cp::encode(cp::decode_leave(body)), body);
    case cp::Type::Welcome: return expect_same(cp::encode(cp::decode_welcome(body)), body);
    case cp::Type::Value: return expect_same(cp::encode(cp::decode_value(body)), body);
    case cp::Type::Lost: return expect_same(cp::encode(cp::decode_lost(body)), body);
    case cp::Type::Error: return expect_same(cp::encode(cp::decode_error(body)), body);
    case cp::Type::Propose: return expect_same(cp::encode(cp::decode_propose(body)), body);
    case cp::Type::TryGet: return expect_same(cp::encode(cp::decode_try_get(body)), body);
    case cp::Type::MaybeValue: return expect_same(cp::encode(cp::decode_maybe_value(body)), body);
    case cp::Type::HeartbeatAck: return expect_same(cp::encode_heartbeat_ack(cp::decode_heartbeat_ack(body)), body);
    case cp::Type::Registered: {
      const loom::comm::Membership m = cp::decode_registered(body);
      const int listed = static_cast<int>(m.processes.size());
      if (m.rank < 0 || m.rank >= m.world_size || listed != m.num_workers + m.num_servers) {
        throw loom::InternalError("coordinator_message_fuzz: a membership outside its limits");
      }
      return expect_same(cp::encode_registered(m), body);
    }
    case cp::Type::Heartbeat:
    case cp::Type::Done:
      cp::decode_empty(body, type);
      if (!body.empty()) throw loom::InternalError("coordinator_message_fuzz: an empty body with bytes");
      return;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view all(reinterpret_cast<const char*>(data), size);
  const std::string_view header = all.substr(0, std::min<size_t>(size, cp::kHeaderBytes));
  const std::string_view body = size > cp::kHeaderBytes ? all.substr(cp::kHeaderBytes) : std::string_view();
  cp::Type type = kTypes[size > 0 ? data[0] % std::size(kTypes) : 0];
  try {
    const cp::Header h = cp::decode_header(header);
    if (cp::encode_header(h.type, h.request) != header) {
      throw loom::InternalError("coordinator_message_fuzz: a header does not encode back to its bytes");
    }
    type = h.type;
  } catch (const loom::CommError&) {
  }
  try {
    check_body(type, body);
  } catch (const loom::CommError&) {
  }
  return 0;
}
