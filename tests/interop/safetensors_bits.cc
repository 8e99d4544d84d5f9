// Loom's side of the safetensors interop checks (tests/interop/*.py): writes
// a file, or reads one, and describes tensors as JSON with their exact bytes,
// so that Python can compare bit patterns rather than values.
//
//   loom_safetensors_bits write out.safetensors expected.json   # every dtype Loom writes
//   loom_safetensors_bits write out.safetensors expected.json --without BF16   # all but that dtype
//   loom_safetensors_bits dump in.safetensors > loom_read.json   # what Loom read
//
// (safetensors.numpy.load_file has no BF16, numpy having no such type: the
// file for it is written --without BF16.)
//
// The JSON is {"metadata": {...}, "tensors": [{"name", "dtype", "shape",
// "hex"}, ...]}, tensors in header order, "hex" the row-major elements as
// little-endian bytes (bool: one byte, 0 or 1). expected.json is made from
// the tensors in memory, not by reading the file back, so a writer bug
// cannot hide in both.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <fstream>
#include <iostream>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "loom/io/safetensors.h"
#include "loom/ops/view.h"

namespace {

using loom::core::DType;
using loom::core::Shape;
using loom::core::Tensor;

// A tensor whose elements have exactly these bit patterns.
template <class Bits>
Tensor from_bits(DType dtype, const Shape& shape, const std::vector<Bits>& bits) {
  Tensor t = Tensor::empty(shape, dtype);
  if (t.nbytes() != bits.size() * sizeof(Bits)) throw std::logic_error("from_bits: shape and bit count differ");
  if (!bits.empty()) std::memcpy(t.data_ptr(), bits.data(), t.nbytes());
  return t;
}

// Every dtype of loom/io/safetensors.cc, with the values a lossy path would
// change: signed zero, infinities, NaNs with and without payload, the
// smallest and largest subnormals, the extremes of each integer type.
loom::io::NamedTensors interop_tensors() {
  loom::io::NamedTensors t;
  t.emplace_back("f32", from_bits<uint32_t>(DType::F32, {3, 4},
                                             {0x00000000, 0x80000000, 0x7f800000, 0xff800000, 0x7fc00000, 0xffc00001,
                                              0x7f800001, 0x00000001, 0x007fffff, 0x7f7fffff, 0x3fc00000, 0xc0490fdb}));
  t.emplace_back("f64", from_bits<uint64_t>(DType::F64, {2, 3, 2},
                                             {0x0000000000000000, 0x8000000000000000, 0x7ff0000000000000,
                                              0xfff0000000000000, 0x7ff8000000000000, 0x7ff8000000000abc,
                                              0x7ff0000000000001, 0x0000000000000001, 0x000fffffffffffff,
                                              0x7fefffffffffffff, 0x3ff8000000000000, 0xc00921fb54442d18}));
  t.emplace_back("f16", from_bits<uint16_t>(DType::F16, {12}, {0x0000, 0x8000, 0x7c00, 0xfc00, 0x7e00, 0xfe01, 0x7c01,
                                                              0x0001, 0x03ff, 0x7bff, 0x3e00, 0xc248}));
  t.emplace_back("bf16", from_bits<uint16_t>(DType::BF16, {4, 3}, {0x0000, 0x8000, 0x7f80, 0xff80, 0x7fc0, 0xffc1,
                                                                   0x7f81, 0x0001, 0x007f, 0x7f7f, 0x3fc0, 0xc049}));
  t.emplace_back("i32", Tensor::from_vector<int32_t>({std::numeric_limits<int32_t>::min(), -1, 0, 1,
                                                      std::numeric_limits<int32_t>::max(), 123456789},
                                                     {2, 3}));
  t.emplace_back("i64", Tensor::from_vector<int64_t>({std::numeric_limits<int64_t>::min(), -1, 0,
                                                      (int64_t{1} << 53) + 1, std::numeric_limits<int64_t>::max(),
                                                      -(int64_t{1} << 40) - 3},
                                                     {3, 2}));
  t.emplace_back("u8", from_bits<uint8_t>(DType::U8, {2, 4}, {0, 1, 127, 128, 200, 254, 255, 42}));
  t.emplace_back("bool", from_bits<uint8_t>(DType::Bool, {5}, {1, 0, 0, 1, 1}));
  // Layouts: a view written in row-major order, a 0-d tensor, an empty one.
  t.emplace_back("f32_transposed", loom::ops::transpose(t[0].second, 0, 1));
  t.emplace_back("f64_scalar", from_bits<uint64_t>(DType::F64, {}, {0x8000000000000000}));
  t.emplace_back("i64_empty", Tensor::empty({0, 3}, DType::I64));
  return t;
}

const loom::io::Metadata kInteropMetadata = {{"format", "pt"},
                                             {"step", "1200"},
                                             {"quotes", "a \"b\" \\ c\n"},
                                             {"unicode", "\xce\xbb = 0.1 \xe2\x9c\x93"},
                                             {"empty", ""}};

std::string to_hex(const Tensor& t) {
  Tensor dense = loom::ops::contiguous(t);
  const auto* p = static_cast<const uint8_t*>(dense.data_ptr());
  std::string out;
  out.reserve(dense.nbytes() * 2);
  char byte[3];
  for (size_t i = 0; i < dense.nbytes(); ++i) {
    std::snprintf(byte, sizeof(byte), "%02x", p[i]);
    out += byte;
  }
  return out;
}

nlohmann::json describe(const loom::io::NamedTensors& tensors, const loom::io::Metadata& metadata) {
  nlohmann::json doc = {{"metadata", metadata}, {"tensors", nlohmann::json::array()}};
  for (const auto& [name, t] : tensors) {
    doc["tensors"].push_back({{"name", name},
                              {"dtype", std::string(loom::io::safetensors_dtype_name(t.dtype()))},
                              {"shape", t.shape()},
                              {"hex", to_hex(t)}});
  }
  return doc;
}

int usage() {
  std::cerr << "usage: loom_safetensors_bits write FILE EXPECTED_JSON [--without DTYPE] | dump FILE\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  try {
    const bool without = args.size() == 5 && args[3] == "--without";
    if ((args.size() == 3 || without) && args[0] == "write") {
      loom::io::NamedTensors tensors;
      for (auto& [name, t] : interop_tensors()) {
        if (!without || loom::io::safetensors_dtype_name(t.dtype()) != args[4]) tensors.emplace_back(name, t);
      }
      loom::io::write_safetensors(args[1], tensors, kInteropMetadata);
      std::ofstream out(args[2]);
      out << describe(tensors, kInteropMetadata).dump(1) << "\n";
      if (!out.flush()) throw std::runtime_error("cannot write " + args[2]);
      return 0;
    }
    if (args.size() == 2 && args[0] == "dump") {
      loom::io::SafetensorsFile f = loom::io::read_safetensors(args[1]);
      std::cout << describe(f.tensors, f.metadata).dump(1) << "\n";
      return 0;
    }
  } catch (const std::exception& e) {
    std::cerr << "loom_safetensors_bits: " << e.what() << "\n";
    return 1;
  }
  return usage();
}
