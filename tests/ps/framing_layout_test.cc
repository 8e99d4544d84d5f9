// The bytes of the parameter servers' framings, pinned: the LMPS header, the
// LMPC placement config, a ShardState's counters frame and a Replicate's
// counters frame. Each known value must encode to exactly these bytes and
// decode back from them, so a change to the codec cannot move the layout
// (peers of another build, and the fuzz corpora, depend on it).
#include <gtest/gtest.h>

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "loom/core/error.h"
#include "loom/ps/messages.h"
#include "loom/ps/protocol.h"

namespace loom::ps {
namespace {

std::string hex(std::span<const std::byte> b) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string s;
  for (std::byte x : b) {
    s += kDigits[static_cast<unsigned>(x) >> 4];
    s += kDigits[static_cast<unsigned>(x) & 0xF];
  }
  return s;
}

std::vector<std::byte> unhex(std::string_view s) {
  std::vector<std::byte> out;
  auto digit = [](char c) { return c <= '9' ? c - '0' : c - 'a' + 10; };
  for (size_t i = 0; i + 1 < s.size(); i += 2) out.push_back(std::byte((digit(s[i]) << 4) | digit(s[i + 1])));
  return out;
}

TEST(FramingLayout, PsHeaderBytesArePinned) {
  const Header h{.op = Op::Push, .flags = flag::kSparse, .status = Status::Error, .dtype = core::DType::F64,
                 .sender = server_sender(2), .num_frames = 3, .request_id = 0x0102030405060708, .key = 7,
                 .version = 12, .seq = 4, .row_begin = 10, .num_rows = 20, .row_numel = 16, .total_rows = 40};
  const std::string pinned =
      "4c4d5053010060000200020001000100fdffffff030000000807060504030201"
      "07000000000000000c0000000000000004000000000000000a00000000000000"
      "140000000000000010000000000000002800000000000000fe5076f200000000";
  EXPECT_EQ(hex(encode_header(h)), pinned);
  const Header back = decode_header(unhex(pinned));
  EXPECT_EQ(hex(encode_header(back)), pinned);
  EXPECT_EQ(back.sender, -3);
  EXPECT_EQ(back.total_rows, 40);
}

TEST(FramingLayout, PsConfigBytesArePinned) {
  const std::string pinned = "4c4d5043020000000100000000001000000000000000010000000000";
  const std::string bytes = encode_config({.replicas = 1, .split_bound = 1 << 20, .slice_elements = 1 << 16});
  EXPECT_EQ(hex(std::as_bytes(std::span(bytes))), pinned);
  const auto raw = unhex(pinned);
  const ServerConfig c = decode_config({reinterpret_cast<const char*>(raw.data()), raw.size()});
  EXPECT_EQ(c.replicas, 1);
  EXPECT_EQ(c.split_bound, 1 << 20);
  EXPECT_EQ(c.slice_elements, 1 << 16);
}

TEST(FramingLayout, ShardStateCountersArePinned) {
  const ShardState s{.weights = std::vector<std::byte>(8, std::byte{1}), .updates = 5, .round = 2, .versions = {3, 4}};
  const EncodedShardState e = encode_shard_state(s);
  ASSERT_EQ(e.frames.size(), 2u);
  const std::string pinned = "0500000000000000020000000000000003000000000000000400000000000000";
  EXPECT_EQ(hex(e.frames[1]), pinned);
  const auto counters = unhex(pinned);
  const std::vector<std::span<const std::byte>> frames = {s.weights, counters};
  EXPECT_EQ(decode_shard_state(frames), s);
}

}  // namespace
}  // namespace loom::ps
