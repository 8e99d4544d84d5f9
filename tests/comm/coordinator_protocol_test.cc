// The coordinator's framing (LMCO), pinned: the 16-byte header and one body of
// every message type, each built as the client or the coordinator builds it,
// must be exactly these bytes, so a change to the codec cannot move the layout.
#include "loom/comm/coordinator_protocol.h"

#include <gtest/gtest.h>

#include <string>
#include <string_view>

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
}

TEST(CoordinatorFraming, BodyBytesArePinned) {
  EXPECT_EQ(hex(BodyWriter().i64(4242).take()), "9210000000000000");  // hello
  EXPECT_EQ(hex(BodyWriter().i64(1000).i64(10000).take()), "e8030000000000001027000000000000");  // welcome
  EXPECT_EQ(hex(BodyWriter().str("server").str("a7").i64(-1).str("tcp://a7:5").i64(120000).take()),  // register
            "06000000736572766572020000006137ffffffffffffffff0a0000007463703a2f2f61373a35c0d4010000000000");
  BodyWriter roster;  // registered: the asker's role and rank, then the whole job
  roster.str("server").i64(0).i64(1).i64(1).i64(2).i64(2);
  roster.str("worker").i64(0).str("a7").i64(0).i64(0).str("tcp://a7:4");
  roster.str("server").i64(0).str("b2").i64(1).i64(0).str("tcp://b2:5");
  EXPECT_EQ(hex(roster.take()),
            "060000007365727665720000000000000000010000000000000001000000000000000200000000000000020000000000000006"
            "000000776f726b65720000000000000000020000006137000000000000000000000000000000000a0000007463703a2f2f6137"
            "3a34060000007365727665720000000000000000020000006232010000000000000000000000000000000a0000007463703a2f"
            "2f62323a35");
  EXPECT_EQ(hex(BodyWriter().str("start").str("worker").i64(60000).take()),  // barrier
            "05000000737461727406000000776f726b657260ea000000000000");
  EXPECT_EQ(hex(BodyWriter().str("ps/type").str("dist_sync").take()),  // set
            "0700000070732f7479706509000000646973745f73796e63");
  EXPECT_EQ(hex(BodyWriter().str("ps/type").i64(30000).take()), "0700000070732f747970653075000000000000");  // get
  EXPECT_EQ(hex(BodyWriter().str("dist_sync").take()), "09000000646973745f73796e63");  // value
  EXPECT_EQ(hex(BodyWriter().i64(0).str("crashed").take()), "00000000000000000700000063726173686564");  // leave
  BodyWriter lost;
  encode_lost(lost, kLost);
  EXPECT_EQ(hex(lost.take()), kLostBytes);
  BodyWriter ack;  // heartbeat reply: the lost processes so far
  ack.i64(1);
  encode_lost(ack, kLost);
  EXPECT_EQ(hex(ack.take()), "0100000000000000" + std::string(kLostBytes));
  EXPECT_EQ(hex(BodyWriter().i64(kTimedOut).str("timed out").take()),  // error
            "02000000000000000900000074696d6564206f7574");
}

}  // namespace
}  // namespace loom::comm::coordinator_protocol
