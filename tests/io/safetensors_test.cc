// safetensors round trips, the file layout, and a check by readers that are
// not Loom's (a small Python reader in this folder; PyTorch's safetensors from
// the interop reference environment). tests/interop checks bit patterns too.
#include "loom/io/safetensors.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "loom/ops/creation.h"
#include "loom/ops/view.h"
#include "tests/io/temp_dir.h"

namespace loom::io {
namespace {

using core::DType;
using core::Shape;
using core::Tensor;
using testing::TempDir;

constexpr DType kAllDTypes[] = {DType::F32, DType::F64, DType::F16, DType::BF16,
                                DType::I32, DType::I64, DType::U8,  DType::Bool};

// Distinct, exactly representable values for element i of each dtype
// (int64 beyond 2^53 and negative ints included, to catch lossy paths).
template <class T>
T value_for(int64_t i) {
  if constexpr (std::is_same_v<T, bool>) {
    return i % 3 == 0;
  } else if constexpr (std::is_same_v<T, uint8_t>) {
    return static_cast<uint8_t>(i * 37 % 256);
  } else if constexpr (std::is_same_v<T, int64_t>) {
    return (int64_t{1} << 60) + i * 12345 - 7;
  } else if constexpr (std::is_same_v<T, int32_t>) {
    return static_cast<int32_t>(i * 100003 - 250000);
  } else {
    return T(static_cast<float>(i) * 0.25f - 3.0f);
  }
}

Tensor make_tensor(DType dtype, const Shape& shape) {
  Tensor t = Tensor::empty(shape, dtype);
  core::visit_dtype(dtype, [&]<class T>() {
    T* p = static_cast<T*>(t.data_ptr());
    for (int64_t i = 0; i < t.numel(); ++i) p[i] = value_for<T>(i);
  });
  return t;
}

// Same dtype, shape and elements (compared bit for bit, row-major).
void expect_same(const Tensor& expected, const Tensor& actual, const std::string& what) {
  SCOPED_TRACE(what);
  ASSERT_TRUE(actual.defined());
  EXPECT_EQ(actual.dtype(), expected.dtype());
  EXPECT_EQ(actual.shape(), expected.shape());
  EXPECT_TRUE(actual.is_contiguous());
  Tensor dense = ops::contiguous(expected);
  ASSERT_EQ(actual.nbytes(), dense.nbytes());
  if (dense.nbytes() > 0) {
    EXPECT_EQ(std::memcmp(actual.data_ptr(), dense.data_ptr(), dense.nbytes()), 0);
  }
}

TEST(Safetensors, RoundTripsEveryDType) {
  TempDir dir;
  NamedTensors tensors;
  for (DType dt : kAllDTypes) tensors.emplace_back(std::string(safetensors_dtype_name(dt)), make_tensor(dt, {3, 5}));
  write_safetensors(dir / "all.safetensors", tensors);
  SafetensorsFile f = read_safetensors(dir / "all.safetensors");
  ASSERT_EQ(f.tensors.size(), tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    EXPECT_EQ(f.tensors[i].first, tensors[i].first);
    expect_same(tensors[i].second, f.tensors[i].second, tensors[i].first);
  }
  EXPECT_TRUE(f.metadata.empty());
  EXPECT_FLOAT_EQ(f.at("BF16").at<float>({2, 4}), 0.5f);  // element 14: 14 * 0.25 - 3
  EXPECT_EQ(f.at("I64").at<int64_t>({0, 1}), (int64_t{1} << 60) + 12345 - 7);
}

TEST(Safetensors, RoundTripsNonContiguousTensors) {
  TempDir dir;
  Tensor base = make_tensor(DType::F32, {4, 6});
  Tensor transposed = ops::transpose(base, 0, 1);                     // strides {1, 6}
  Tensor stepped = ops::slice(ops::slice(base, 1, 1, 6, 2), 0, 1, 4);  // offset, step 2
  Tensor expanded = ops::expand(make_tensor(DType::I64, {1, 3}), {4, 3});  // stride 0
  Tensor half_t = ops::transpose(make_tensor(DType::F16, {2, 3}), 0, 1);
  ASSERT_FALSE(transposed.is_contiguous());
  ASSERT_FALSE(stepped.is_contiguous());
  NamedTensors tensors = {{"transposed", transposed}, {"stepped", stepped}, {"expanded", expanded}, {"half", half_t}};
  write_safetensors(dir / "views.safetensors", tensors);
  SafetensorsFile f = read_safetensors(dir / "views.safetensors");
  for (const auto& [name, t] : tensors) expect_same(t, f.at(name), name);
  EXPECT_EQ(f.at("transposed").to_vector<float>(), transposed.to_vector<float>());
  EXPECT_EQ(f.at("stepped").shape(), (Shape{3, 3}));
}

TEST(Safetensors, RoundTripsScalarsEmptyTensorsAndNoTensors) {
  TempDir dir;
  NamedTensors tensors = {{"scalar", Tensor::scalar<double>(2.5)},
                          {"empty", Tensor::empty({0, 3}, DType::F32)},
                          {"empty_bool", Tensor::empty({5, 0}, DType::Bool)},
                          {"after", make_tensor(DType::U8, {7})}};
  write_safetensors(dir / "edge.safetensors", tensors);
  SafetensorsFile f = read_safetensors(dir / "edge.safetensors");
  for (const auto& [name, t] : tensors) expect_same(t, f.at(name), name);
  EXPECT_DOUBLE_EQ(f.at("scalar").item<double>(), 2.5);

  write_safetensors(dir / "none.safetensors", {}, {{"only", "metadata"}});
  SafetensorsFile none = read_safetensors(dir / "none.safetensors");
  EXPECT_TRUE(none.tensors.empty());
  EXPECT_EQ(none.metadata.at("only"), "metadata");
}

TEST(Safetensors, RoundTripsMetadataAndKeepsTensorOrder) {
  TempDir dir;
  Metadata metadata = {{"step", "1200"},
                       {"format", "pt"},
                       {"quotes \" and \\ and \n", "json {\"nested\": [1, 2]}"},
                       {"unicode", "\xce\xbb = 0.1 \xe2\x9c\x93"},
                       {"empty", ""}};
  NamedTensors tensors = {{"z.last", make_tensor(DType::F32, {2})},
                          {"a.first", make_tensor(DType::F32, {3})},
                          {"m.middle", make_tensor(DType::F32, {1})}};
  write_safetensors(dir / "meta.safetensors", tensors, metadata);
  SafetensorsFile f = read_safetensors(dir / "meta.safetensors");
  EXPECT_EQ(f.metadata, metadata);
  ASSERT_EQ(f.tensors.size(), 3u);
  EXPECT_EQ(f.tensors[0].first, "z.last");
  EXPECT_EQ(f.tensors[1].first, "a.first");
  EXPECT_EQ(f.tensors[2].first, "m.middle");
  EXPECT_EQ(f.find("missing"), nullptr);
  EXPECT_THROW(f.at("missing"), IoError);
}

TEST(Safetensors, HeaderIsPaddedAndDescribesTheData) {
  TempDir dir;
  NamedTensors tensors = {{"w", make_tensor(DType::F32, {5, 6})}, {"b", make_tensor(DType::BF16, {6})}};
  write_safetensors(dir / "h.safetensors", tensors, {{"k", "v"}});
  std::string bytes = testing::read_file(dir / "h.safetensors");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(bytes[i]);
  EXPECT_EQ(n % 8, 0u);
  EXPECT_EQ(bytes.size(), 8 + n + 120 + 12);
  auto header = nlohmann::json::parse(bytes.substr(8, n));
  EXPECT_EQ(header["w"]["dtype"], "F32");
  EXPECT_EQ(header["w"]["shape"], nlohmann::json({5, 6}));
  EXPECT_EQ(header["w"]["data_offsets"], nlohmann::json({0, 120}));
  EXPECT_EQ(header["b"]["data_offsets"], nlohmann::json({120, 132}));
  EXPECT_EQ(header["__metadata__"]["k"], "v");

  SafetensorsHeader h = read_safetensors_header(dir / "h.safetensors");
  ASSERT_EQ(h.tensors.size(), 2u);
  EXPECT_EQ(h.tensors[0].name, "w");
  EXPECT_EQ(h.tensors[0].dtype, DType::F32);
  EXPECT_EQ(h.tensors[0].shape, (Shape{5, 6}));
  EXPECT_EQ(h.tensors[1].data_begin, 120u);
  EXPECT_EQ(h.tensors[1].nbytes(), 12u);
  EXPECT_EQ(h.metadata.at("k"), "v");
  EXPECT_EQ(h.header_nbytes, n);
  EXPECT_EQ(h.data_nbytes, 132u);
}

TEST(Safetensors, ReadsFromMemoryLikeFromAFile) {
  TempDir dir;
  NamedTensors tensors = {{"x", make_tensor(DType::I32, {2, 2})}};
  write_safetensors(dir / "m.safetensors", tensors, {{"a", "b"}});
  std::string bytes = testing::read_file(dir / "m.safetensors");
  std::span<const uint8_t> span(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  SafetensorsFile f = read_safetensors_from_memory(span, "m");
  expect_same(tensors[0].second, f.at("x"), "x");
  EXPECT_EQ(read_safetensors_header_from_memory(span, "m").metadata.at("a"), "b");
}

TEST(Safetensors, WriterRefusesBadArgumentsAndLeavesNoFile) {
  TempDir dir;
  Tensor t = make_tensor(DType::F32, {2});
  EXPECT_THROW(write_safetensors(dir / "x.safetensors", {{"a", t}, {"a", t}}), ValueError);
  EXPECT_THROW(write_safetensors(dir / "x.safetensors", {{"__metadata__", t}}), ValueError);
  EXPECT_THROW(write_safetensors(dir / "x.safetensors", {{"a", t}, {"u", Tensor()}}), ValueError);
  EXPECT_THROW(write_safetensors(dir / "x.safetensors", {{"bad \xff utf8", t}}), ValueError);
  EXPECT_THROW(write_safetensors(dir / "x.safetensors", {}, {{"k", "bad \xc3"}}), ValueError);
  EXPECT_TRUE(dir.entries().empty());
  try {
    write_safetensors(dir / "x.safetensors", {{"a", t}, {"a", t}});
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("x.safetensors"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("'a'"), std::string::npos) << e.what();
  }
}

TEST(Safetensors, DTypeNames) {
  for (DType dt : kAllDTypes) EXPECT_EQ(dtype_from_safetensors_name(safetensors_dtype_name(dt)), dt);
  EXPECT_FALSE(dtype_from_safetensors_name("I16").has_value());
  EXPECT_FALSE(dtype_from_safetensors_name("f32").has_value());
}

// ---- readers that are not Loom's ----

// Runs a command, returns its stdout and exit status.
std::pair<std::string, int> run_command(const std::string& cmd) {
  std::string out;
  FILE* pipe = ::popen(cmd.c_str(), "r");
  if (pipe == nullptr) return {"", -1};
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), pipe)) > 0) out.append(buf, n);
  return {out, ::pclose(pipe)};
}

// A file that exercises every dtype, a view and metadata.
NamedTensors reference_tensors() {
  NamedTensors tensors;
  for (DType dt : kAllDTypes) {
    tensors.emplace_back("t_" + std::string(safetensors_dtype_name(dt)), make_tensor(dt, {2, 3, 2}));
  }
  tensors.emplace_back("transposed", ops::transpose(make_tensor(DType::F32, {3, 4}), 0, 1));
  tensors.emplace_back("scalar", Tensor::scalar<float>(1.5f));
  return tensors;
}

// Compares the JSON that read_safetensors.py prints with what was written.
void expect_matches_json(const NamedTensors& tensors, const Metadata& metadata, const std::string& text) {
  auto doc = nlohmann::json::parse(text);
  EXPECT_EQ(doc["metadata"].get<Metadata>(), metadata);
  ASSERT_EQ(doc["tensors"].size(), tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& [name, t] = tensors[i];
    const auto& got = doc["tensors"][i];
    SCOPED_TRACE(name);
    EXPECT_EQ(got["name"], name);
    EXPECT_EQ(got["dtype"], std::string(safetensors_dtype_name(t.dtype())));
    EXPECT_EQ(got["shape"].get<Shape>(), t.shape());
    const auto& values = got["values"];
    ASSERT_EQ(static_cast<int64_t>(values.size()), t.numel());
    if (t.dtype() == DType::Bool) {
      auto expected = t.to_vector<bool>();
      for (size_t k = 0; k < expected.size(); ++k) EXPECT_EQ(values[k].get<bool>(), expected[k]) << k;
    } else if (core::is_integral(t.dtype())) {
      auto expected = t.to_vector<int64_t>();
      for (size_t k = 0; k < expected.size(); ++k) EXPECT_EQ(values[k].get<int64_t>(), expected[k]) << k;
    } else {
      auto expected = t.to_vector<double>();
      for (size_t k = 0; k < expected.size(); ++k) EXPECT_EQ(values[k].get<double>(), expected[k]) << k;
    }
  }
}

const char* kPython = "/usr/bin/python3";
const std::string kReader = std::string(LOOM_TEST_DATA_DIR) + "/io/read_safetensors.py";

TEST(Safetensors, IndependentPythonReaderAgrees) {
  if (run_command(std::string(kPython) + " -c 'import json, struct' 2>/dev/null").second != 0) {
    GTEST_SKIP() << kPython << " is not available";
  }
  TempDir dir;
  NamedTensors tensors = reference_tensors();
  Metadata metadata = {{"step", "7"}, {"note", "\xce\xbb"}};
  write_safetensors(dir / "py.safetensors", tensors, metadata);
  auto [out, status] = run_command(std::string(kPython) + " " + kReader + " " + (dir / "py.safetensors").string());
  ASSERT_EQ(status, 0) << out;
  expect_matches_json(tensors, metadata, out);
}

// The interop reference environment (scripts/reference-env interop: PyPI's
// safetensors on Debian's torch), else /usr/bin/python3 if it has both; empty
// when neither can import them.
std::string python_with_torch_and_safetensors() {
  const std::string check = " -c 'import torch; from safetensors.torch import load_file' 2>/dev/null";
  auto [venv, status] = run_command("bash " + std::string(LOOM_TEST_DATA_DIR) + "/../scripts/reference-env --path interop");
  while (!venv.empty() && venv.back() == '\n') venv.pop_back();
  std::vector<std::string> candidates = {kPython};
  if (status == 0 && !venv.empty()) candidates.insert(candidates.begin(), venv + "/bin/python");
  for (const std::string& python : candidates) {
    if (run_command(python + check).second == 0) return python;
  }
  return "";
}

TEST(Safetensors, PyTorchLoadsOurFiles) {
  const std::string python = python_with_torch_and_safetensors();
  if (python.empty()) {
    const char* why = "torch and safetensors are importable neither by the interop environment nor by /usr/bin/python3;"
                      " run scripts/reference-env interop";
    const char* require = std::getenv("LOOM_REQUIRE_INTEROP");
    if (require != nullptr && std::string(require) == "1") FAIL() << why << " (LOOM_REQUIRE_INTEROP=1)";
    GTEST_SKIP() << why;
  }
  TempDir dir;
  NamedTensors tensors = reference_tensors();
  Metadata metadata = {{"format", "pt"}, {"step", "7"}};
  write_safetensors(dir / "pt.safetensors", tensors, metadata);
  auto [out, status] = run_command(python + " " + kReader + " --torch " + (dir / "pt.safetensors").string());
  ASSERT_EQ(status, 0) << out;
  expect_matches_json(tensors, metadata, out);
}

}  // namespace
}  // namespace loom::io
