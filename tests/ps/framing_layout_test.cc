// The bytes of the parameter servers' framings, pinned: the LMPS header, the
// LMPC placement config, a ShardState's counters frame and a Replicate's
// counters frame; and the payload decoders' errors. Each known value must encode to exactly these bytes and
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

// Replicate's counters were two i64 in memory order; on this (little-endian)
// host those are these bytes, as the codec writes them now.
TEST(FramingLayout, ReplicateCountersArePinned) {
  const std::string pinned = "01000000000000000807060504030201";
  EXPECT_EQ(hex(encode_replicate_counters({.worker = 1, .version = 0x0102030405060708})), pinned);
  const ReplicateCounters c = decode_replicate_counters(unhex(pinned));
  EXPECT_EQ(c.worker, 1);
  EXPECT_EQ(c.version, 0x0102030405060708);
  EXPECT_EQ(hex(encode_replicate_counters({.worker = -1, .version = 0})), "ffffffffffffffff0000000000000000");
}

std::string error_of(auto decode) {
  try {
    decode();
  } catch (const CommError& e) {
    return e.what();
  }
  return "(accepted)";
}

TEST(FramingLayout, PayloadDecodersNameWhatIsWrong) {
  const std::vector<int64_t> dims = {6, 3};
  const auto dims_bytes = std::as_bytes(std::span(dims));
  const Header key{.num_rows = 6, .row_numel = 3, .total_rows = 6};
  EXPECT_EQ(decode_dims(dims_bytes, key), dims);
  EXPECT_EQ(error_of([&] { decode_dims(dims_bytes.first(12), key); }),
            "ps protocol: dims, field 'dims': 12 bytes are not a list of i64");
  EXPECT_EQ(error_of([&] { decode_dims(dims_bytes, {.num_rows = 6, .row_numel = 4, .total_rows = 6}); }),
            "ps protocol: dims, field 'dims': shape [6, 3] does not match the header's 6 rows of 4");
  const std::vector<int64_t> nine(9, 1);
  EXPECT_NE(error_of([&] { decode_dims(std::as_bytes(std::span(nine)), key); }).find("9 dims (at most 8)"),
            std::string::npos);
  // Dims whose product would overflow i64 are refused before it does, even
  // where a later 0 makes the rows empty (ps_frames_fuzz found the overflow).
  const std::vector<int64_t> huge = {6, int64_t{1} << 40, int64_t{1} << 40, int64_t{1} << 40};
  EXPECT_NE(error_of([&] { decode_dims(std::as_bytes(std::span(huge)), key); }).find("more than 2^32 elements"),
            std::string::npos);
  const std::vector<int64_t> huge_then_zero = {6, int64_t{1} << 40, int64_t{1} << 40, 0};
  EXPECT_NE(error_of([&] { decode_dims(std::as_bytes(std::span(huge_then_zero)), {.total_rows = 6}); })
                .find("more than 2^32 elements"),
            std::string::npos);
  const std::vector<int64_t> empty_rows = {6, 0, int64_t{1} << 40};
  EXPECT_EQ(decode_dims(std::as_bytes(std::span(empty_rows)), {.total_rows = 6}), empty_rows);
  EXPECT_EQ(decode_i64_frame(dims_bytes, "row ids"), dims);
  EXPECT_EQ(error_of([&] { decode_i64_frame(dims_bytes.first(3), "row ids"); }),
            "ps protocol: row ids, field 'values': 3 bytes are not a list of i64");
  EXPECT_NE(error_of([&] { decode_replicate_counters(dims_bytes.first(8)); }).find("field 'version': truncated"),
            std::string::npos);
  const std::vector<int64_t> bad_worker = {-2, 0};
  EXPECT_NE(error_of([&] { decode_replicate_counters(std::as_bytes(std::span(bad_worker))); })
                .find("replicate counters, field 'worker': value -2"),
            std::string::npos);
  EXPECT_EQ(error_of([] { decode_config("LMPC"); }),
            "ps protocol: config, field 'magic': truncated: 4 bytes, a config starts with 6");
}

}  // namespace
}  // namespace loom::ps
