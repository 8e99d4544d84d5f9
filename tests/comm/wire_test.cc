// The wire header: round trips, and every truncation and corruption is a
// CommError that says what is wrong.
#include "loom/comm/wire/wire.h"

#include <gtest/gtest.h>

#include "loom/core/crc32c.h"

#include <cstring>
#include <string>
#include <vector>

namespace loom::comm::wire {
namespace {

std::vector<std::byte> to_vector(const HeaderBytes& b) { return {b.begin(), b.end()}; }

// Decoding `bytes` fails with a CommError whose message contains `needle`.
void expect_refused(const std::vector<std::byte>& bytes, const std::string& needle,
                    DecodeLimits limits = {.world_size = 8}) {
  try {
    decode_header(bytes, limits);
    ADD_FAILURE() << "accepted a header that should fail with \"" << needle << "\"";
  } catch (const CommError& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

void put_u16(std::vector<std::byte>& b, size_t off, uint16_t v) {
  b[off] = std::byte(v & 0xFF);
  b[off + 1] = std::byte(v >> 8);
}

// Rewrites the checksum after an edit, so a check behind it is reached.
void reseal(std::vector<std::byte>& b) {
  const uint32_t c = core::crc32c(b.data(), 32);
  for (int i = 0; i < 4; ++i) b[32 + static_cast<size_t>(i)] = std::byte((c >> (8 * i)) & 0xFF);
}

TEST(WireHeader, RoundTrip) {
  const std::vector<Header> cases = {
      {},
      {.sender = 7, .tag = 42, .payload_nbytes = 1},
      {.sender = 0, .tag = ~uint64_t{0}, .payload_nbytes = kDefaultMaxPayloadBytes},
      {.sender = 3, .tag = uint64_t{1} << 63, .payload_nbytes = (uint64_t{1} << 20) + 3},
  };
  for (const Header& h : cases) {
    const HeaderBytes bytes = encode_header(h);
    EXPECT_EQ(decode_header(bytes, {.world_size = 8}), h);
  }
}

TEST(WireHeader, LayoutIsLittleEndianAndFixed) {
  const HeaderBytes b = encode_header({.sender = 0x01020304, .tag = 0x1122334455667788ull, .payload_nbytes = 0x99});
  EXPECT_EQ(std::memcmp(b.data(), "LOOM", 4), 0);
  EXPECT_EQ(b[4], std::byte{1});  // version 1
  EXPECT_EQ(b[5], std::byte{0});
  EXPECT_EQ(b[6], std::byte{40});  // header length
  EXPECT_EQ(b[8], std::byte{1});   // kind Data
  EXPECT_EQ(b[12], std::byte{0x04});
  EXPECT_EQ(b[15], std::byte{0x01});
  EXPECT_EQ(b[16], std::byte{0x88});
  EXPECT_EQ(b[23], std::byte{0x11});
  EXPECT_EQ(b[24], std::byte{0x99});
  for (size_t i = 36; i < 40; ++i) EXPECT_EQ(b[i], std::byte{0});
}

// The layout, pinned: a known header is exactly these bytes and they decode
// back to it (so a change to the codec cannot move a field; peers of another
// build depend on it).
TEST(WireHeader, KnownEncodingIsPinned) {
  const Header h{.sender = 0x01020304, .tag = 0x1122334455667788ull, .payload_nbytes = 0x99AABBCC};
  const std::string pinned = "4c4f4f4d0100280001000000040302018877665544332211ccbbaa9900000000e8ee9e4000000000";
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string got;
  for (std::byte x : encode_header(h)) {
    got += kDigits[static_cast<unsigned>(x) >> 4];
    got += kDigits[static_cast<unsigned>(x) & 0xF];
  }
  EXPECT_EQ(got, pinned);
  std::vector<std::byte> bytes;
  for (size_t i = 0; i < pinned.size(); i += 2) bytes.push_back(std::byte(std::stoi(pinned.substr(i, 2), nullptr, 16)));
  EXPECT_EQ(decode_header(bytes, {.world_size = 0x01020305}), h);
}

TEST(WireHeader, EveryTruncationIsRefused) {
  const auto full = to_vector(encode_header({.sender = 1, .tag = 2, .payload_nbytes = 3}));
  for (size_t n = 0; n < full.size(); ++n) {
    std::vector<std::byte> cut(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(n));
    EXPECT_THROW(decode_header(cut, {.world_size = 8}), CommError) << n << " bytes";
  }
  expect_refused({}, "truncated");
  expect_refused(std::vector<std::byte>(full.begin(), full.begin() + 39), "39 bytes");
}

TEST(WireHeader, TrailingBytesAreRefused) {
  auto long_frame = to_vector(encode_header({.sender = 1}));
  long_frame.push_back(std::byte{0});
  expect_refused(long_frame, "41 bytes");
}

TEST(WireHeader, EverySingleBitFlipIsRefused) {
  const auto good = to_vector(encode_header({.sender = 5, .tag = 1234567, .payload_nbytes = 999}));
  for (size_t i = 0; i < good.size(); ++i) {
    for (int bit = 0; bit < 8; ++bit) {
      auto bad = good;
      bad[i] ^= std::byte(1 << bit);
      EXPECT_THROW(decode_header(bad, {.world_size = 8}), CommError) << "byte " << i << " bit " << bit;
    }
  }
}

TEST(WireHeader, SaysWhatIsWrong) {
  const auto good = to_vector(encode_header({.sender = 2, .tag = 9, .payload_nbytes = 100}));

  auto magic = good;
  magic[0] = std::byte{'X'};
  expect_refused(magic, "bad magic \"XOOM\"");

  auto binary_magic = good;
  binary_magic[1] = std::byte{0x00};
  expect_refused(binary_magic, "\\x00");

  auto version = good;
  put_u16(version, 4, 2);
  expect_refused(version, "unsupported header version 2");

  auto length = good;
  put_u16(length, 6, 48);
  expect_refused(length, "header length field is 48");

  auto checksum = good;
  checksum[20] ^= std::byte{1};
  expect_refused(checksum, "checksum mismatch");

  auto kind = good;
  put_u16(kind, 8, 7);
  reseal(kind);
  expect_refused(kind, "unknown message kind 7");

  auto flags = good;
  put_u16(flags, 10, 1);
  reseal(flags);
  expect_refused(flags, "unknown flags 1");

  auto reserved = good;
  reserved[37] = std::byte{1};
  expect_refused(reserved, "field 'reserved'");
}

TEST(WireHeader, SenderRankIsCheckedAgainstTheWorldSize) {
  const auto from7 = to_vector(encode_header({.sender = 7}));
  EXPECT_NO_THROW(decode_header(from7, {.world_size = 8}));
  expect_refused(from7, "sender rank 7 out of range for world size 7", {.world_size = 7});
  expect_refused(from7, "world size 0", {.world_size = 0});
  expect_refused(to_vector(encode_header({.sender = 0xFFFFFFFFu})), "sender rank 4294967295");
}

TEST(WireHeader, PayloadLengthIsCheckedAgainstTheLimit) {
  const auto big = to_vector(encode_header({.payload_nbytes = 1001}));
  expect_refused(big, "payload length 1001 exceeds the limit of 1000", {.world_size = 1, .max_payload_nbytes = 1000});
  expect_refused(to_vector(encode_header({.payload_nbytes = ~uint64_t{0}})), "exceeds the limit");
  EXPECT_NO_THROW(decode_header(big, {.world_size = 1, .max_payload_nbytes = 1001}));
}

TEST(WireHeader, EncodeRefusesWhatDecodeWould) {
  EXPECT_THROW(encode_header({.kind = static_cast<MessageKind>(9)}), CommError);
  EXPECT_THROW(encode_header({.flags = 1}), CommError);
}

TEST(WireHeader, CorpusOfRandomBytesNeverCrashes) {
  // A cheap in-test fuzz pass (fuzz/wire_header_fuzz.cc does the real one):
  // random lengths and bytes, plus valid headers with one random byte changed.
  uint64_t x = 12345;
  auto next = [&] {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<uint32_t>(x >> 33);
  };
  const auto good = to_vector(encode_header({.sender = 1, .tag = 5, .payload_nbytes = 77}));
  for (int i = 0; i < 20000; ++i) {
    std::vector<std::byte> b;
    if (i % 2 == 0) {
      b.resize(next() % 64);
      for (auto& v : b) v = std::byte(next() & 0xFF);
    } else {
      b = good;
      b[next() % b.size()] = std::byte(next() & 0xFF);
    }
    try {
      const Header h = decode_header(b, {.world_size = 4, .max_payload_nbytes = 1 << 20});
      EXPECT_LT(h.sender, 4u);
      EXPECT_LE(h.payload_nbytes, uint64_t{1} << 20);
    } catch (const CommError&) {
    }
  }
}

}  // namespace
}  // namespace loom::comm::wire
