// The reader against files it must refuse: truncated, oversized, corrupted.
// Each must be an IoError that names the file, never a crash or another error.
#include <cstring>
#include <random>
#include <string>

#include <gtest/gtest.h>

#include "loom/io/safetensors.h"
#include "tests/io/temp_dir.h"

namespace loom::io {
namespace {

using core::DType;
using core::Tensor;
using testing::TempDir;

std::span<const uint8_t> as_bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

// A file from a header text and a data section, as a writer could produce it.
std::string make_file(const std::string& header, const std::string& data, uint64_t declared_length) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>(declared_length >> (8 * i));
  return out + header + data;
}
std::string make_file(const std::string& header, const std::string& data = std::string(64, '\x01')) {
  return make_file(header, data, header.size());
}

// Expects an IoError whose message names the file and contains `needle`.
void expect_refused(const std::string& bytes, const std::string& needle = "") {
  try {
    read_safetensors_from_memory(as_bytes(bytes), "bad.safetensors");
    ADD_FAILURE() << "accepted: " << bytes.substr(8, 200);
  } catch (const IoError& e) {
    std::string msg = e.what();
    EXPECT_EQ(msg.rfind("bad.safetensors: ", 0), 0u) << msg;
    EXPECT_NE(msg.find(needle), std::string::npos) << "message: " << msg << "\nexpected to contain: " << needle;
  }
}

// A small valid file with several dtypes and metadata.
std::string valid_file(const TempDir& dir) {
  Tensor f = Tensor::from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor b = Tensor::from_vector<bool>({true, false, true}, {3});
  Tensor h = Tensor::from_vector<core::Half>({1.0f, -2.0f}, {2});
  write_safetensors(dir / "valid.safetensors", {{"f", f}, {"b", b}, {"h", h}}, {{"step", "3"}});
  return testing::read_file(dir / "valid.safetensors");
}

TEST(SafetensorsCorrupt, EveryTruncationIsRefused) {
  TempDir dir;
  const std::string full = valid_file(dir);
  ASSERT_NO_THROW(read_safetensors_from_memory(as_bytes(full), "valid"));
  for (size_t len = 0; len < full.size(); ++len) {
    SCOPED_TRACE(len);
    const std::string part = full.substr(0, len);
    EXPECT_THROW(read_safetensors_from_memory(as_bytes(part), "cut"), IoError);
    testing::write_file(dir / "cut.safetensors", part);
    EXPECT_THROW(read_safetensors(dir / "cut.safetensors"), IoError);
    // The last tensor ends where the file does, so even the header is refused.
    EXPECT_THROW(read_safetensors_header(dir / "cut.safetensors"), IoError);
  }
}

TEST(SafetensorsCorrupt, FlippedBytesLoadOrThrowIoError) {
  TempDir dir;
  const std::string full = valid_file(dir);
  std::mt19937 rng(1234);
  int refused = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    std::string bytes = full;
    int flips = 1 + static_cast<int>(rng() % 3);
    for (int k = 0; k < flips; ++k) bytes[rng() % bytes.size()] = static_cast<char>(rng());
    try {
      read_safetensors_from_memory(as_bytes(bytes), "flipped");
    } catch (const IoError&) {
      ++refused;
    }
  }
  EXPECT_GT(refused, 0);
}

TEST(SafetensorsCorrupt, LengthPrefix) {
  expect_refused(std::string(5, '\0'), "too short");
  expect_refused(make_file("{}", "", uint64_t{1} << 63), "exceeds the limit");
  expect_refused(make_file("{}", "", ~uint64_t{0}), "exceeds the limit");
  expect_refused(make_file("{}", "", kMaxSafetensorsHeaderBytes + 1), "exceeds the limit");
  expect_refused(make_file("{}", "", 1), "not valid JSON");
  expect_refused(make_file("{}", "", 1000), "truncated");
}

TEST(SafetensorsCorrupt, NotJsonOrNotAnObject) {
  expect_refused(make_file("{"), "not valid JSON");
  expect_refused(make_file("not json at all"), "not valid JSON");
  expect_refused(make_file(std::string("{\"a\":\0}", 7)), "not valid JSON");
  expect_refused(make_file("{\"a\": 1} trailing"), "not valid JSON");
  expect_refused(make_file("[1, 2]"), "expected a JSON object");
  expect_refused(make_file("null"), "expected a JSON object");
  expect_refused(make_file("\"text\""), "expected a JSON object");
  expect_refused(make_file("{\"x\": \"\xff\"}"), "not valid JSON");
  expect_refused(make_file(std::string(200000, '[') + std::string(200000, ']')), "nests deeper");
  std::string deep_objects;
  for (int i = 0; i < 100000; ++i) deep_objects += "{\"a\":";
  expect_refused(make_file(deep_objects), "nests deeper");
  expect_refused(make_file(R"({"t": {"dtype": "F32", "shape": [[1]], "data_offsets": [0, 4]}})"), "nests deeper");
}

TEST(SafetensorsCorrupt, EntryFields) {
  expect_refused(make_file(R"({"t": [1, 2]})"), "tensor 't' has the entry [1,2], expected an object");
  expect_refused(make_file(R"({"t": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4], "extra": 1}})"),
                 "unknown field 'extra'");
  expect_refused(make_file(R"({"t": {"dtype": "F32", "shape": [1]}})"), "no field 'data_offsets'");
  expect_refused(make_file(R"({"t": {"shape": [1], "data_offsets": [0, 4]}})"), "no field 'dtype'");
  expect_refused(make_file(R"({"t": {"dtype": "F32", "data_offsets": [0, 4]}})"), "no field 'shape'");
  expect_refused(make_file(R"({"t": {"dtype": "F32", "dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})"),
                 "repeats the key \"dtype\"");
  expect_refused(make_file(R"({"t": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                               "t": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})"),
                 "repeats the key \"t\"");
}

TEST(SafetensorsCorrupt, DTypes) {
  expect_refused(make_file(R"({"t": {"dtype": "I16", "shape": [1], "data_offsets": [0, 2]}})"),
                 "dtype \"I16\", which Loom does not support");
  expect_refused(make_file(R"({"t": {"dtype": "f32", "shape": [1], "data_offsets": [0, 4]}})"), "does not support");
  expect_refused(make_file(R"({"t": {"dtype": 4, "shape": [1], "data_offsets": [0, 4]}})"), "expected a string");
}

TEST(SafetensorsCorrupt, Shapes) {
  expect_refused(make_file(R"({"t": {"dtype": "F32", "shape": 4, "data_offsets": [0, 4]}})"), "list of sizes");
  expect_refused(make_file(R"({"t": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}})"), "non-negative");
  expect_refused(make_file(R"({"t": {"dtype": "F32", "shape": [1.0], "data_offsets": [0, 4]}})"), "non-negative");
  expect_refused(make_file(R"({"t": {"dtype": "F32", "shape": ["1"], "data_offsets": [0, 4]}})"), "non-negative");
  expect_refused(make_file(R"({"t": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 0]}})"),
                 "too many elements");
  expect_refused(make_file(R"({"t": {"dtype": "F64", "shape": [18446744073709551615], "data_offsets": [0, 0]}})"),
                 "too many elements");
  expect_refused(make_file(R"({"t": {"dtype": "U8", "shape": [99999999999999999999], "data_offsets": [0, 0]}})"),
                 "non-negative");
  // A zero dim does not excuse the others: strides would still overflow.
  expect_refused(make_file(R"({"t": {"dtype": "U8", "shape": [0, 4294967296, 4294967296], "data_offsets": [0, 0]}})"),
                 "too many elements");
}

TEST(SafetensorsCorrupt, DataOffsets) {
  expect_refused(make_file(R"({"t": {"dtype": "F32", "shape": [1], "data_offsets": [0]}})"), "expected [begin, end]");
  expect_refused(make_file(R"({"t": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4, 8]}})"),
                 "expected [begin, end]");
  expect_refused(make_file(R"({"t": {"dtype": "F32", "shape": [1], "data_offsets": [-4, 0]}})"),
                 "expected [begin, end]");
  expect_refused(make_file(R"({"t": {"dtype": "F32", "shape": [1], "data_offsets": {"a": 1}}})"),
                 "expected [begin, end]");
  expect_refused(make_file(R"({"t": {"dtype": "F32", "shape": [1], "data_offsets": [8, 4]}})"),
                 "end before they begin");
  expect_refused(make_file(R"({"t": {"dtype": "F32", "shape": [1], "data_offsets": [64, 68]}})"),
                 "data_offsets [64, 68] past the end of the data section (64 bytes)");
  expect_refused(make_file(R"({"t": {"dtype": "F32", "shape": [1],
                                      "data_offsets": [18446744073709551612, 18446744073709551615]}})"),
                 "past the end");
  expect_refused(make_file(R"({"fc1.weight": {"dtype": "F32", "shape": [5, 6], "data_offsets": [0, 100]}})",
                           std::string(128, '\0')),
                 "tensor 'fc1.weight' data_offsets [0, 100] hold 100 bytes but F32 [5, 6] needs 120");
  expect_refused(make_file(R"({"t": {"dtype": "BF16", "shape": [0, 3], "data_offsets": [0, 2]}})"),
                 "hold 2 bytes but BF16 [0, 3] needs 0");
}

TEST(SafetensorsCorrupt, OverlappingRanges) {
  expect_refused(make_file(R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                               "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}})"),
                 "tensors 'a' [0, 16] and 'b' [8, 16] share bytes");
  expect_refused(make_file(R"({"b": {"dtype": "U8", "shape": [4], "data_offsets": [20, 24]},
                               "a": {"dtype": "U8", "shape": [8], "data_offsets": [16, 24]}})"),
                 "share bytes");
  // Adjacent, empty and gapped ranges are fine.
  std::string ok = make_file(R"({"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
                                 "e": {"dtype": "U8", "shape": [0], "data_offsets": [2, 2]},
                                 "b": {"dtype": "U8", "shape": [4], "data_offsets": [4, 8]},
                                 "c": {"dtype": "U8", "shape": [2], "data_offsets": [12, 14]}})");
  SafetensorsFile f = read_safetensors_from_memory(as_bytes(ok), "ok");
  EXPECT_EQ(f.tensors.size(), 4u);
}

TEST(SafetensorsCorrupt, Metadata) {
  expect_refused(make_file(R"({"__metadata__": {"step": 3}})"), "metadata 'step' is 3, expected a string");
  expect_refused(make_file(R"({"__metadata__": ["a"]})"), "expected an object of strings");
  expect_refused(make_file(R"({"__metadata__": {"a": "1", "a": "2"}})"), "repeats the key");
  SafetensorsFile f = read_safetensors_from_memory(as_bytes(make_file(R"({"__metadata__": null})")), "null");
  EXPECT_TRUE(f.metadata.empty());
}

TEST(SafetensorsCorrupt, BoolBytesOtherThanZeroOrOne) {
  expect_refused(make_file(R"({"b": {"dtype": "BOOL", "shape": [3], "data_offsets": [0, 3]}})",
                           std::string("\x01\x02\x00", 3)),
                 "BOOL tensor 'b' holds bytes other than 0 and 1");
}

TEST(SafetensorsCorrupt, LongNamesAreShortenedInMessages) {
  std::string name(5000, 'n');
  try {
    read_safetensors_from_memory(as_bytes(make_file("{\"" + name + "\": 1}")), "bad.safetensors");
    FAIL();
  } catch (const IoError& e) {
    EXPECT_LT(std::strlen(e.what()), 300u);
  }
}

TEST(SafetensorsCorrupt, FilesThatAreNotThere) {
  TempDir dir;
  try {
    read_safetensors(dir / "missing.safetensors");
    FAIL();
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("missing.safetensors: cannot open"), std::string::npos) << e.what();
  }
  EXPECT_THROW(read_safetensors(dir.path()), IoError);  // a directory
  EXPECT_THROW(read_safetensors_header(dir.path()), IoError);
}

}  // namespace
}  // namespace loom::io
