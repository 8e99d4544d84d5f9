// The frame codec every Loom framing is built from: little-endian fields in
// order, bounds and ranges checked, the prefix {magic, version[, length]},
// the CRC-32C, and errors that name the protocol, the message and the field.
#include "loom/core/frame_codec.h"

#include <gtest/gtest.h>

#include <array>
#include <bit>
#include <limits>
#include <string>
#include <vector>

namespace loom::core {
namespace {

// Runs `read` and expects a CommError whose message contains `needle`.
template <class F>
void expect_error(F read, const std::string& needle) {
  try {
    read();
    ADD_FAILURE() << "no error; expected one with \"" << needle << "\"";
  } catch (const CommError& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

constexpr FrameFormat kWithLength{.protocol = "test protocol", .message = "header", .magic = {'T', 'E', 'S', 'T'},
                                  .version = 3, .nbytes = 16, .length_field = true};
constexpr FrameFormat kWithoutLength{.protocol = "test protocol", .message = "record", .magic = {'T', 'R', 'E', 'C'},
                                     .version = 2, .nbytes = 10};

TEST(FrameCodec, FieldsAreLittleEndianInOrder) {
  const std::string b =
      FrameWriter().u16(0x0102).u32(0x03040506).u64(0x0708090a0b0c0d0e).i32(-2).i64(-3).str("hi").take();
  ASSERT_EQ(b.size(), 2u + 4 + 8 + 4 + 8 + 4 + 2);
  EXPECT_EQ(b.substr(0, 6), std::string("\x02\x01\x06\x05\x04\x03", 6));
  EXPECT_EQ(static_cast<unsigned char>(b[6]), 0x0e);
  EXPECT_EQ(b.substr(26), std::string("\x02\0\0\0hi", 6));
  FrameReader r(b, "test protocol", "body");
  EXPECT_EQ(r.u16("a"), 0x0102);
  EXPECT_EQ(r.u32("b"), 0x03040506u);
  EXPECT_EQ(r.u64("c"), 0x0708090a0b0c0d0eu);
  EXPECT_EQ(r.i32("d"), -2);
  EXPECT_EQ(r.i64("e", -3, 0), -3);
  EXPECT_EQ(r.str("f", 2), "hi");
  EXPECT_NO_THROW(r.done());
}

// u8 and f64 (the optimizer spec's enums, flags and hyper-parameters): one
// byte, and the IEEE-754 bits as a u64, so every double comes back bit for bit.
TEST(FrameCodec, BytesAndDoublesKeepEveryBit) {
  const double values[] = {0.1 + 1e-17, -0.0, std::numeric_limits<double>::denorm_min(),
                           std::numeric_limits<double>::infinity()};
  FrameWriter w;
  w.u8(0xAB);
  for (double v : values) w.f64(v);
  const std::string b = w.take();
  ASSERT_EQ(b.size(), 1u + 8 * std::size(values));
  EXPECT_EQ(static_cast<unsigned char>(b[0]), 0xAB);
  EXPECT_EQ(b.substr(1, 8), std::string("\x9b\x99\x99\x99\x99\x99\xb9\x3f", 8));  // 0.1 + 1e-17, little-endian
  FrameReader r(b, "test protocol", "record");
  EXPECT_EQ(r.u8("flags"), 0xAB);
  for (double v : values) EXPECT_EQ(std::bit_cast<uint64_t>(r.f64("value")), std::bit_cast<uint64_t>(v));
  expect_error([&] { r.f64("lr"); }, "test protocol: record, field 'lr': truncated: 0 bytes left, need 8");
}

TEST(FrameCodec, ErrorsNameProtocolMessageAndField) {
  const std::string b = FrameWriter().i64(7).str("abcdef").take();
  expect_error([&] { FrameReader(b, "test protocol", "get request").i64("count", 0, 5); },
               "test protocol: get request, field 'count': value 7 outside [0, 5]");
  expect_error(
      [&] {
        FrameReader r(b, "p", "m");
        r.i64("n");
        r.str("key", 5);
      },
      "p: m, field 'key': 6 bytes, limit 5");
  expect_error([&] { FrameReader(std::string_view(b).substr(0, 5), "p", "m").u64("x"); },
               "field 'x': truncated: 5 bytes left, need 8");
  expect_error(
      [&] {
        FrameReader r(std::string_view(b).substr(0, 14), "p", "m");
        r.i64("n");
        r.str("key", 100);  // says 6 bytes, 2 are there
      },
      "field 'key': truncated");
  expect_error([&] { FrameReader(b, "p", "m").done(); }, "field 'end': 18 unexpected trailing bytes");
  expect_error([&] { FrameReader(std::string("\0\1", 2), "p", "m").zeros(2, "reserved"); }, "field 'reserved'");
}

TEST(FrameCodec, AFixedWriterRefusesToWritePastItsEnd) {
  std::array<std::byte, 6> out{};
  FrameWriter w(out);
  w.u32(1).u16(2);
  EXPECT_EQ(w.size(), 6u);
  EXPECT_THROW(w.u16(3), InternalError);
}

TEST(FrameCodec, TheChecksumIsCrc32cOfTheBytesBefore) {
  const std::string b = FrameWriter().bytes("123456789").checksum().take();
  EXPECT_EQ(b.substr(9), std::string("\x83\x92\x06\xe3", 4));  // crc32c("123456789") = 0xE3069283
  FrameReader ok(b, "p", "m");
  ok.bytes(9, "data");
  EXPECT_NO_THROW(ok.checksum());
  std::string bad = b;
  bad[3] = 'x';
  FrameReader r(bad, "p", "m");
  r.bytes(9, "data");
  expect_error([&] { r.checksum(); }, "field 'checksum': checksum mismatch");
}

TEST(FrameCodec, I64ListsFillTheFrame) {
  const std::vector<int64_t> v = {0, -1, int64_t{1} << 40};
  const std::string b = FrameWriter().i64_list(v).take();
  EXPECT_EQ(b.size(), 24u);
  EXPECT_EQ(FrameReader(b, "p", "m").i64_list("ids"), v);
  EXPECT_TRUE(FrameReader(std::string_view(), "p", "m").i64_list("ids").empty());
  expect_error([&] { FrameReader(b + "x", "p", "m").i64_list("ids"); }, "field 'ids': 25 bytes are not a list of i64");
}

TEST(FrameCodec, ThePrefixIsCheckedMagicVersionLengthSize) {
  std::array<std::byte, 16> h{};
  FrameWriter(h).prefix(kWithLength).u32(42).checksum();
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(h.data()), 8), std::string("TEST\x03\0\x10\0", 8));
  FrameReader r = open_frame(h, kWithLength);
  EXPECT_EQ(r.u32("answer"), 42u);
  EXPECT_NO_THROW(r.checksum());

  auto edited = [&](size_t at, std::byte v) {
    std::vector<std::byte> b(h.begin(), h.end());
    b[at] = v;
    return b;
  };
  expect_error([&] { open_frame(std::span(h).first(7), kWithLength); },
               "test protocol: header, field 'magic': truncated");
  expect_error([&] { open_frame(edited(0, std::byte{0}), kWithLength); },
               "bad magic \"\\x00EST\", expected \"TEST\"");
  expect_error([&] { open_frame(edited(4, std::byte{9}), kWithLength); },
               "field 'version': unsupported header version 9");
  expect_error([&] { open_frame(edited(6, std::byte{17}), kWithLength); }, "header length field is 17");
  expect_error([&] { open_frame(std::span(h).first(12), kWithLength); }, "a header of 12 bytes, expected 16");

  std::array<std::byte, 10> rec{};
  FrameWriter(rec).prefix(kWithoutLength).u32(7);
  EXPECT_EQ(open_frame(rec, kWithoutLength).u32("seven"), 7u);  // no length field: the field follows the version
  expect_error([&] { open_frame(std::span(rec).first(9), kWithoutLength); }, "a record of 9 bytes, expected 10");
}

}  // namespace
}  // namespace loom::core
