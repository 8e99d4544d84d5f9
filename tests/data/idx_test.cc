#include "loom/data/idx.h"

#include <zlib.h>

#include <gtest/gtest.h>

#include "loom/core/error.h"
#include "temp_dir.h"

namespace loom::data {
namespace {

using core::DType;
using core::Tensor;
using testing::read_bytes;
using testing::TempDir;
using testing::write_bytes;

// Gzips `bytes` into `path` with zlib, independently of write_idx.
void write_gz(const std::string& path, const std::string& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  if (!bytes.empty()) {
    ASSERT_EQ(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())), static_cast<int>(bytes.size()));
  }
  ASSERT_EQ(gzclose(f), Z_OK);
}

std::string header(unsigned code, std::vector<uint32_t> dims) {
  std::string h{'\0', '\0', static_cast<char>(code), static_cast<char>(dims.size())};
  for (uint32_t d : dims) {
    for (int s = 24; s >= 0; s -= 8) h.push_back(static_cast<char>(d >> s));
  }
  return h;
}

// Expects an IoError whose message contains every one of `parts`.
template <class F>
void expect_io_error(F&& f, std::vector<std::string> parts) {
  try {
    f();
    FAIL() << "expected IoError";
  } catch (const IoError& e) {
    for (const auto& p : parts) EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what() << " lacks " << p;
  }
}

TEST(Idx, ReadsHandWrittenU8File) {
  TempDir dir;
  std::string bytes = header(0x08, {2, 3}) + std::string{1, 2, 3, 4, 5, 6};
  write_bytes(dir.file("a-idx2-ubyte"), bytes);
  Tensor t = read_idx(dir.file("a-idx2-ubyte"));
  EXPECT_EQ(t.dtype(), DType::U8);
  EXPECT_EQ(t.shape(), (core::Shape{2, 3}));
  EXPECT_EQ(t.to_vector<int>(), (std::vector<int>{1, 2, 3, 4, 5, 6}));
}

TEST(Idx, ReadsAnEmptyTensor) {
  // Found by fuzz/idx_fuzz.cc: zero elements used to reach memcpy with a null source.
  TempDir dir;
  write_bytes(dir.file("empty"), header(0x08, {0, 0}));
  Tensor t = read_idx(dir.file("empty"));
  EXPECT_EQ(t.shape(), (core::Shape{0, 0}));
  EXPECT_EQ(t.numel(), 0);
}

TEST(Idx, HugeDimsAroundAZeroAreRefused) {
  // Found by fuzz/idx_fuzz.cc: zero elements, but the other dims' product overflows the strides.
  TempDir dir;
  write_bytes(dir.file("huge"), header(0x08, {0, 0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu}));
  expect_io_error([&] { read_idx(dir.file("huge")); }, {"overflows"});
}

TEST(Idx, DecodesBigEndianTypes) {
  TempDir dir;
  // i16 -2 and 258; i8 -1; f32 1.5 (0x3fc00000); f64 -2.0 (0xc000000000000000).
  write_bytes(dir.file("s"), header(0x0B, {2}) + std::string{'\xff', '\xfe', '\x01', '\x02'});
  EXPECT_EQ(read_idx(dir.file("s")).to_vector<int>(), (std::vector<int>{-2, 258}));
  write_bytes(dir.file("b"), header(0x09, {1}) + std::string{'\xff'});
  EXPECT_EQ(read_idx(dir.file("b")).to_vector<int>(), (std::vector<int>{-1}));
  write_bytes(dir.file("f"), header(0x0D, {1}) + std::string{'\x3f', '\xc0', '\0', '\0'});
  Tensor f = read_idx(dir.file("f"));
  EXPECT_EQ(f.dtype(), DType::F32);
  EXPECT_EQ(f.item<float>(), 1.5f);
  write_bytes(dir.file("d"), header(0x0E, {1}) + std::string{'\xc0', 0, 0, 0, 0, 0, 0, 0});
  EXPECT_EQ(read_idx(dir.file("d")).item<double>(), -2.0);
}

TEST(Idx, RoundTripsEveryWritableDtypePlainAndGzipped) {
  TempDir dir;
  std::vector<Tensor> tensors = {
      Tensor::from_vector<uint8_t>({0, 7, 255, 128, 1, 2}, {3, 2}),
      Tensor::from_vector<int32_t>({-5, 0, 1 << 30, -(1 << 30)}, {2, 1, 2}),
      Tensor::from_vector<float>({0.25f, -1e30f, 3.5f}, {3}),
      Tensor::from_vector<double>({1e-300, -0.5, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0}, {2, 2, 2}),
  };
  for (const char* suffix : {"", ".gz"}) {
    for (size_t i = 0; i < tensors.size(); ++i) {
      const std::string path = dir.file(format("t{}{}", i, suffix));
      write_idx(path, tensors[i]);
      Tensor back = read_idx(path);
      EXPECT_EQ(back.dtype(), tensors[i].dtype()) << path;
      EXPECT_EQ(back.shape(), tensors[i].shape()) << path;
      EXPECT_EQ(back.to_vector<double>(), tensors[i].to_vector<double>()) << path;
    }
  }
  // The .gz file really is gzipped (magic 1f 8b), the plain one is not.
  EXPECT_EQ(read_bytes(dir.file("t0.gz")).substr(0, 2), std::string("\x1f\x8b"));
  EXPECT_EQ(read_bytes(dir.file("t0")).substr(0, 4), std::string("\0\0\x08\x02", 4));
}

TEST(Idx, ReadsGzipWrittenByZlibDirectly) {
  TempDir dir;
  std::string bytes = header(0x08, {4}) + std::string{9, 8, 7, 6};
  write_gz(dir.file("x.gz"), bytes);
  EXPECT_EQ(read_idx(dir.file("x.gz")).to_vector<int>(), (std::vector<int>{9, 8, 7, 6}));
}

TEST(Idx, MissingFileNamesPath) {
  TempDir dir;
  expect_io_error([&] { read_idx(dir.file("nope")); }, {dir.file("nope"), "cannot open"});
}

TEST(Idx, TruncatedDataSaysExpectedAndActualBytes) {
  TempDir dir;
  std::string bytes = header(0x08, {10, 10}) + std::string(60, 'x');  // 100 data bytes declared, 60 present
  write_bytes(dir.file("t"), bytes);
  expect_io_error([&] { read_idx(dir.file("t")); }, {dir.file("t"), "truncated", "112", "72"});
  write_gz(dir.file("t.gz"), bytes);
  expect_io_error([&] { read_idx(dir.file("t.gz")); }, {dir.file("t.gz"), "truncated", "112", "72"});
}

TEST(Idx, TruncatedHeader) {
  TempDir dir;
  write_bytes(dir.file("h1"), std::string("\0\0", 2));
  expect_io_error([&] { read_idx(dir.file("h1")); }, {dir.file("h1"), "truncated"});
  write_bytes(dir.file("h2"), header(0x08, {5, 5}).substr(0, 9));
  expect_io_error([&] { read_idx(dir.file("h2")); }, {dir.file("h2"), "truncated", "12"});
  write_bytes(dir.file("empty"), "");
  expect_io_error([&] { read_idx(dir.file("empty")); }, {dir.file("empty"), "truncated"});
}

TEST(Idx, CutGzipStreamIsTruncation) {
  TempDir dir;
  std::string bytes = header(0x08, {4000});
  for (int i = 0; i < 4000; ++i) bytes.push_back(static_cast<char>(i * 7919 % 251));  // poorly compressible
  write_gz(dir.file("full.gz"), bytes);
  std::string gz = read_bytes(dir.file("full.gz"));
  write_bytes(dir.file("cut.gz"), gz.substr(0, gz.size() / 2));
  expect_io_error([&] { read_idx(dir.file("cut.gz")); }, {dir.file("cut.gz"), "truncated"});
}

TEST(Idx, CorruptGzipStream) {
  TempDir dir;
  std::string bytes = header(0x08, {4000}) + std::string(4000, 'a');
  write_gz(dir.file("ok.gz"), bytes);
  std::string gz = read_bytes(dir.file("ok.gz"));
  for (size_t i = 12; i < gz.size() - 8; ++i) gz[i] = static_cast<char>(gz[i] ^ 0x5a);
  write_bytes(dir.file("bad.gz"), gz);
  EXPECT_THROW(read_idx(dir.file("bad.gz")), IoError);
}

TEST(Idx, BadMagic) {
  TempDir dir;
  write_bytes(dir.file("m"), std::string("\x01\0\x08\x01\0\0\0\x01x", 9));
  expect_io_error([&] { read_idx(dir.file("m")); }, {dir.file("m"), "not an IDX file", "0x01000801"});
}

TEST(Idx, BadTypeCode) {
  TempDir dir;
  write_bytes(dir.file("c"), header(0x0A, {1}) + "x");
  expect_io_error([&] { read_idx(dir.file("c")); }, {dir.file("c"), "element type code 0x0a"});
}

TEST(Idx, BadDimCount) {
  TempDir dir;
  write_bytes(dir.file("z"), header(0x08, {}));
  expect_io_error([&] { read_idx(dir.file("z")); }, {dir.file("z"), "0 dims"});
  write_bytes(dir.file("nine"), header(0x08, {1, 1, 1, 1, 1, 1, 1, 1, 1}) + "x");
  expect_io_error([&] { read_idx(dir.file("nine")); }, {dir.file("nine"), "9 dims"});
}

TEST(Idx, DimsProductOverflow) {
  TempDir dir;
  const uint32_t big = 0xFFFFFFFFu;
  write_bytes(dir.file("o"), header(0x08, {big, big, big}));
  expect_io_error([&] { read_idx(dir.file("o")); }, {dir.file("o"), "overflow"});
  // Fits in elements but not in bytes of f64.
  write_bytes(dir.file("o8"), header(0x0E, {big, big}));
  expect_io_error([&] { read_idx(dir.file("o8")); }, {dir.file("o8"), "overflow"});
}

TEST(Idx, HugeClaimOnSmallFileIsTruncationNotAllocation) {
  TempDir dir;
  write_bytes(dir.file("huge"), header(0x0E, {1u << 20, 1u << 20}) + std::string(16, '\0'));
  expect_io_error([&] { read_idx(dir.file("huge")); }, {dir.file("huge"), "truncated", "8796093022208"});
}

TEST(Idx, TrailingGarbage) {
  TempDir dir;
  write_bytes(dir.file("g"), header(0x08, {2}) + "abc");
  expect_io_error([&] { read_idx(dir.file("g")); }, {dir.file("g"), "trailing"});
  write_gz(dir.file("g.gz"), header(0x08, {2}) + "abc");
  expect_io_error([&] { read_idx(dir.file("g.gz")); }, {dir.file("g.gz"), "trailing"});
}

TEST(Idx, ZeroSizedDimIsFine) {
  TempDir dir;
  write_bytes(dir.file("e"), header(0x0D, {0, 3}));
  Tensor t = read_idx(dir.file("e"));
  EXPECT_EQ(t.shape(), (core::Shape{0, 3}));
}

TEST(Idx, EveryTruncationIsAnIoError) {
  TempDir dir;
  const std::string bytes = header(0x0C, {3, 2}) + std::string(24, '\x11');
  write_gz(dir.file("full.gz"), bytes);
  const std::string gz = read_bytes(dir.file("full.gz"));
  for (const auto& [name, data] : {std::pair{std::string("cut"), bytes}, std::pair{std::string("cut.gz"), gz}}) {
    for (size_t len = 0; len < data.size(); ++len) {
      write_bytes(dir.file(name), data.substr(0, len));
      EXPECT_THROW(read_idx(dir.file(name)), IoError) << name << " cut to " << len << " bytes";
    }
  }
}

// Random byte flips: read_idx returns or throws IoError, never anything else.
TEST(Idx, CorruptedBytesNeverCrash) {
  TempDir dir;
  const std::string bytes = header(0x0D, {4, 5}) + std::string(80, '\x3f');
  uint64_t state = 12345;
  auto next = [&] { return state = state * 6364136223846793005ull + 1442695040888963407ull; };
  for (int trial = 0; trial < 300; ++trial) {
    std::string b = bytes;
    const int flips = 1 + static_cast<int>(next() >> 61);
    for (int f = 0; f < flips; ++f) b[(next() >> 33) % b.size()] = static_cast<char>(next() >> 56);
    write_bytes(dir.file("fuzz"), b);
    try {
      read_idx(dir.file("fuzz"));
    } catch (const IoError&) {
    }
  }
}

TEST(Idx, WriteRejectsUnsupported) {
  TempDir dir;
  EXPECT_THROW(write_idx(dir.file("x"), Tensor::from_vector<int64_t>({1}, {1})), TypeError);
  EXPECT_THROW(write_idx(dir.file("x"), Tensor::scalar<float>(1.0f)), ShapeError);
  EXPECT_THROW(write_idx(dir.file("no/such/dir/x"), Tensor::from_vector<float>({1}, {1})), IoError);
}

}  // namespace
}  // namespace loom::data
