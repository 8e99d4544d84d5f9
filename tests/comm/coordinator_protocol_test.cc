// The coordinator's framing (LMCO), pinned: the 16-byte header and one body of
// every message type must be exactly these bytes (the same as when the client
// and the coordinator wrote them field by field), so a change to the codec
// cannot move the layout; every body decodes back, and malformed ones are
// refused naming the message and the field.
#include "loom/comm/rendezvous/coordinator_protocol.h"

#include <gtest/gtest.h>

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "loom/core/frame_codec.h"

namespace loom::comm::coordinator_protocol {
namespace {

std::string hex(std::string_view b) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string s;
  for (char c : b) {
    const auto x = static_cast<unsigned char>(c);
    s += kDigits[x >> 4];
    s += kDigits[x & 0xF];
  }
  return s;
}

const LostPeer kLost{.role = "worker", .rank = 3, .host = "a7", .reason = "no heartbeat"};
constexpr std::string_view kLostBytes =
    "06000000776f726b657203000000000000000200000061370c0000006e6f20686561727462656174";

TEST(CoordinatorFraming, HeaderBytesArePinned) {
  const std::string h = encode_header(Type::Register, 0x0102030405060708);
  EXPECT_EQ(hex(h), "4c4d434f010002000807060504030201");
  const Header back = decode_header(h);
  EXPECT_EQ(back.type, Type::Register);
  EXPECT_EQ(back.request, 0x0102030405060708u);
  // The types added later keep every earlier number.
  EXPECT_EQ(hex(encode_header(Type::Propose, 1)), "4c4d434f010008000100000000000000");
  EXPECT_EQ(hex(encode_header(Type::TryGet, 1)), "4c4d434f010009000100000000000000");
  EXPECT_EQ(hex(encode_header(Type::MaybeValue, 1)), "4c4d434f010027000100000000000000");
  for (Type t : {Type::Propose, Type::TryGet, Type::MaybeValue}) EXPECT_EQ(decode_header(encode_header(t, 2)).type, t);
}

TEST(CoordinatorFraming, BodyBytesArePinned) {
  using namespace std::chrono_literals;
  EXPECT_EQ(hex(encode(HelloBody{.pid = 4242})), "9210000000000000");
  EXPECT_EQ(hex(encode(WelcomeBody{.heartbeat_interval = 1000ms, .heartbeat_timeout = 10000ms})),
            "e8030000000000001027000000000000");
  const RegisterBody reg{.role = "server", .host = "a7", .rank = -1, .endpoint = "tcp://a7:5", .timeout = 120000ms};
  EXPECT_EQ(hex(encode(reg)),
            "06000000736572766572020000006137ffffffffffffffff0a0000007463703a2f2f61373a35c0d4010000000000");
  Membership job{.role = "server", .rank = 0, .num_workers = 1, .num_servers = 1, .num_hosts = 2};
  job.processes.push_back({.role = "worker", .rank = 0, .host = "a7", .host_index = 0, .local_rank = 0,
                           .endpoint = "tcp://a7:4"});
  job.processes.push_back({.role = "server", .rank = 0, .host = "b2", .host_index = 1, .local_rank = 0,
                           .endpoint = "tcp://b2:5"});
  EXPECT_EQ(hex(encode_registered(job)),
            "060000007365727665720000000000000000010000000000000001000000000000000200000000000000020000000000000006"
            "000000776f726b65720000000000000000020000006137000000000000000000000000000000000a0000007463703a2f2f6137"
            "3a34060000007365727665720000000000000000020000006232010000000000000000000000000000000a0000007463703a2f"
            "2f62323a35");
  EXPECT_EQ(hex(encode(BarrierBody{.name = "start", .scope = "worker", .timeout = 60000ms})),
            "05000000737461727406000000776f726b657260ea000000000000");
  EXPECT_EQ(hex(encode(SetBody{.key = "ps/type", .value = "dist_sync"})),
            "0700000070732f7479706509000000646973745f73796e63");
  EXPECT_EQ(hex(encode(GetBody{.key = "ps/type", .timeout = 30000ms})), "0700000070732f747970653075000000000000");
  EXPECT_EQ(hex(encode(ValueBody{.value = "dist_sync"})), "09000000646973745f73796e63");
  EXPECT_EQ(hex(encode(ProposeBody{.key = "stop_at", .value = "120"})), "0700000073746f705f617403000000313230");
  EXPECT_EQ(hex(encode(TryGetBody{.key = "stop_at"})), "0700000073746f705f6174");
  EXPECT_EQ(hex(encode(MaybeValueBody{.value = "120"})), "010000000000000003000000313230");
  EXPECT_EQ(hex(encode(MaybeValueBody{.value = std::nullopt})), "000000000000000000000000");
  EXPECT_EQ(hex(encode(LeaveBody{.clean = false, .reason = "crashed"})), "00000000000000000700000063726173686564");
  EXPECT_EQ(hex(encode(kLost)), kLostBytes);
  EXPECT_EQ(hex(encode_heartbeat_ack({kLost})), "0100000000000000" + std::string(kLostBytes));
  EXPECT_EQ(hex(encode(ErrorBody{.code = kTimedOut, .message = "timed out"})),
            "02000000000000000900000074696d6564206f7574");
}

// Every body decodes back to what was encoded.
TEST(CoordinatorFraming, BodiesRoundTrip) {
  using namespace std::chrono_literals;
  EXPECT_EQ(decode_hello(encode(HelloBody{.pid = 77})).pid, 77);
  const WelcomeBody w = decode_welcome(encode(WelcomeBody{.heartbeat_interval = 5ms, .heartbeat_timeout = 50ms}));
  EXPECT_EQ(w.heartbeat_interval, 5ms);
  EXPECT_EQ(w.heartbeat_timeout, 50ms);
  const RegisterBody reg = decode_register(encode(RegisterBody{.role = "worker", .host = "h", .rank = 2,
                                                               .endpoint = "e", .timeout = 9ms}));
  EXPECT_EQ(reg.role, "worker");
  EXPECT_EQ(reg.rank, 2);
  EXPECT_EQ(reg.endpoint, "e");
  EXPECT_EQ(reg.timeout, 9ms);
  const BarrierBody b = decode_barrier(encode(BarrierBody{.name = "n", .scope = "server", .timeout = 3ms}));
  EXPECT_EQ(b.name, "n");
  EXPECT_EQ(b.scope, "server");
  EXPECT_EQ(decode_set(encode(SetBody{.key = "k", .value = std::string(1000, 'v')})).value, std::string(1000, 'v'));
  EXPECT_EQ(decode_get(encode(GetBody{.key = "k", .timeout = 1ms})).key, "k");
  EXPECT_EQ(decode_value(encode(ValueBody{.value = ""})).value, "");
  const ProposeBody proposal = decode_propose(encode(ProposeBody{.key = "k", .value = std::string(1000, 'v')}));
  EXPECT_EQ(proposal.key, "k");
  EXPECT_EQ(proposal.value, std::string(1000, 'v'));
  EXPECT_EQ(decode_try_get(encode(TryGetBody{.key = "k"})).key, "k");
  EXPECT_EQ(decode_maybe_value(encode(MaybeValueBody{.value = "v"})).value, std::optional<std::string>("v"));
  EXPECT_EQ(decode_maybe_value(encode(MaybeValueBody{.value = ""})).value, std::optional<std::string>(""));
  EXPECT_EQ(decode_maybe_value(encode(MaybeValueBody{.value = std::nullopt})).value, std::nullopt);
  EXPECT_FALSE(decode_leave(encode(LeaveBody{.clean = false, .reason = "r"})).clean);
  EXPECT_EQ(decode_error(encode(ErrorBody{.code = kRefused, .message = "no"})).message, "no");
  EXPECT_EQ(decode_lost(encode(kLost)).describe(), kLost.describe());
  EXPECT_EQ(decode_heartbeat_ack(encode_heartbeat_ack({kLost, kLost})).size(), 2u);
  Membership job{.role = "worker", .rank = 1, .num_workers = 2, .num_servers = 0, .num_hosts = 1};
  job.processes.push_back(
      {.role = "worker", .rank = 0, .host = "a", .host_index = 0, .local_rank = 0, .endpoint = "x"});
  job.processes.push_back(
      {.role = "worker", .rank = 1, .host = "a", .host_index = 0, .local_rank = 1, .endpoint = "y"});
  const Membership m = decode_registered(encode_registered(job));
  EXPECT_EQ(m.world_size, 2);
  EXPECT_EQ(m.endpoints("worker"), (std::vector<std::string>{"x", "y"}));
  EXPECT_NO_THROW(decode_empty("", Type::Heartbeat));
}

// Malformed bodies are CommErrors naming the message and the field.
TEST(CoordinatorFraming, MalformedBodiesNameMessageAndField) {
  using namespace std::chrono_literals;
  auto message_of = [](auto decode) -> std::string {
    try {
      decode();
    } catch (const CommError& e) {
      return e.what();
    }
    return "(accepted)";
  };
  EXPECT_EQ(message_of([] { decode_get(encode(SetBody{.key = "k", .value = "v"})); }),
            "coordinator protocol: get message, field 'timeout_ms': truncated: 5 bytes left, need 8");
  EXPECT_EQ(message_of([] { decode_leave(core::FrameWriter().i64(2).str("").take()); }),
            "coordinator protocol: leave message, field 'clean': value 2 outside [0, 1]");
  EXPECT_EQ(message_of([] { decode_empty("x", Type::Heartbeat); }),
            "coordinator protocol: heartbeat message, field 'end': 1 unexpected trailing bytes");
  EXPECT_NE(message_of([] { decode_lost(encode(LostPeer{.role = "coordinator"})); }).find("field 'role'"),
            std::string::npos);
  Membership job{.role = "worker", .rank = 0, .num_workers = 1, .num_servers = 0, .num_hosts = 1};
  job.processes.push_back({.role = "server", .rank = 0, .host = "a", .host_index = 0, .local_rank = 0});
  EXPECT_NE(message_of([&] { decode_registered(encode_registered(job)); }).find("out of order"), std::string::npos);
  EXPECT_EQ(message_of([] { decode_try_get(""); }),
            "coordinator protocol: try_get message, field 'key': truncated: 0 bytes left, need 4");
  EXPECT_EQ(message_of([] { decode_try_get(encode(GetBody{.key = "k", .timeout = 1ms})); }),
            "coordinator protocol: try_get message, field 'end': 8 unexpected trailing bytes");
  EXPECT_EQ(message_of([] { decode_maybe_value(core::FrameWriter().i64(2).str("").take()); }),
            "coordinator protocol: maybe_value message, field 'found': value 2 outside [0, 1]");
  EXPECT_EQ(message_of([] { decode_maybe_value(core::FrameWriter().i64(0).str("v").take()); }),
            "coordinator protocol: maybe_value message, field 'value': a value for a key that is not set");
  EXPECT_EQ(message_of([] { decode_maybe_value(core::FrameWriter().i64(1).take()); }),
            "coordinator protocol: maybe_value message, field 'value': truncated: 0 bytes left, need 4");
  const std::string mb = std::string(kMaxValueBytes + 1, 'x');
  EXPECT_EQ(message_of([&] { decode_maybe_value(encode(MaybeValueBody{.value = mb})); }),
            "coordinator protocol: maybe_value message, field 'value': 1048577 bytes, limit 1048576");
  // Oversized, truncated, or with bytes left over.
  EXPECT_EQ(message_of([&] { decode_propose(encode(ProposeBody{.key = "k", .value = mb})); }),
            "coordinator protocol: propose message, field 'value': 1048577 bytes, limit 1048576");
  EXPECT_EQ(message_of([] { decode_propose(encode(ProposeBody{.key = std::string(kMaxNameBytes + 1, 'k')})); }),
            "coordinator protocol: propose message, field 'key': 4097 bytes, limit 4096");
  EXPECT_EQ(message_of([] { decode_propose(encode(TryGetBody{.key = "k"})); }),
            "coordinator protocol: propose message, field 'value': truncated: 0 bytes left, need 4");
  std::string cut = encode(ProposeBody{.key = "k", .value = "120"});
  cut.pop_back();
  EXPECT_EQ(message_of([&] { decode_propose(cut); }),
            "coordinator protocol: propose message, field 'value': truncated: 2 bytes left, need 3");
  EXPECT_EQ(message_of([] { decode_propose(encode(ProposeBody{.key = "k", .value = "v"}) + "x"); }),
            "coordinator protocol: propose message, field 'end': 1 unexpected trailing bytes");
  const std::string type99 = std::string("LMCO\1\0\x63\0", 8) + std::string(8, '\0');
  EXPECT_NE(message_of([&] { decode_header(type99); }).find("field 'type': unknown message type 99"), std::string::npos);
}

}  // namespace
}  // namespace loom::comm::coordinator_protocol
