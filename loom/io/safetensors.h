// safetensors files: the checkpoint format of Loom, PyTorch and Hugging Face.
//
//   // given: Tensor w, Tensor b
//   io::write_safetensors("model.safetensors", {{"fc1.weight", w}, {"fc1.bias", b}}, {{"step", "100"}});
//   io::SafetensorsFile f = io::read_safetensors("model.safetensors");
//   core::Tensor w2 = f.at("fc1.weight");          // tensors keep the file's order
//   io::SafetensorsHeader h = io::read_safetensors_header("model.safetensors");  // no data read
//
// Layout: an 8-byte little-endian length N, N bytes of JSON
//   {"__metadata__": {"k": "v"}, "fc1.weight": {"dtype": "F32", "shape": [5, 6], "data_offsets": [0, 120]}, ...}
// padded with spaces, then the data section; offsets count from its start.
//
// Reading trusts nothing: every length, offset, shape and dtype is checked
// before it is used, and any problem is an IoError that names the file and
// says what is wrong. Writing is atomic (see atomic_file.h).
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "loom/core/tensor.h"

namespace loom::io {

using NamedTensors = std::vector<std::pair<std::string, core::Tensor>>;
using Metadata = std::map<std::string, std::string>;

// Headers longer than this are refused before anything is allocated for them.
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = uint64_t{100} << 20;

// "F32", "BF16", "BOOL", ... and back; nullopt for a name Loom has no dtype for.
std::string_view safetensors_dtype_name(core::DType dtype);
std::optional<core::DType> dtype_from_safetensors_name(std::string_view name);

// One tensor's entry in the header.
struct TensorInfo {
  std::string name;
  core::DType dtype = core::DType::F32;
  core::Shape shape;
  uint64_t data_begin = 0;  // byte offsets into the data section, [begin, end)
  uint64_t data_end = 0;
  uint64_t nbytes() const { return data_end - data_begin; }
};

struct SafetensorsHeader {
  std::vector<TensorInfo> tensors;  // in header order
  Metadata metadata;
  uint64_t header_nbytes = 0;  // N, the JSON text with its padding
  uint64_t data_nbytes = 0;    // size of the data section
};

struct SafetensorsFile {
  NamedTensors tensors;  // in header order; each owns its memory
  Metadata metadata;

  // nullptr / IoError when the file has no tensor of that name.
  const core::Tensor* find(std::string_view name) const;
  const core::Tensor& at(std::string_view name) const;
};

// Writes CPU tensors of any layout (their elements go out in row-major
// order) and dtype. Names must be unique and not "__metadata__". Throws
// ValueError for such arguments and IoError when the file cannot be written;
// either way the target keeps its previous content.
void write_safetensors(const std::filesystem::path& path, const NamedTensors& tensors,
                       const Metadata& metadata = {});

SafetensorsFile read_safetensors(const std::filesystem::path& path);
SafetensorsHeader read_safetensors_header(const std::filesystem::path& path);

// The same, from bytes in memory; `name` stands for the file in messages.
SafetensorsFile read_safetensors_from_memory(std::span<const uint8_t> bytes, std::string_view name);
SafetensorsHeader read_safetensors_header_from_memory(std::span<const uint8_t> bytes, std::string_view name);

}  // namespace loom::io
