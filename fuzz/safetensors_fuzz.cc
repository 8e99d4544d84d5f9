// libFuzzer target for the safetensors reader.
//
//   clang++ -std=c++20 -fsanitize=fuzzer,address,undefined -I. fuzz/safetensors_fuzz.cc <loom sources> ...
//   ./safetensors_fuzz fuzz/corpus/safetensors
//
// The property: on any bytes the reader either returns tensors that agree
// with the header, or throws IoError. Any other exception, a crash or a
// sanitizer report is a bug.
#include <cstddef>
#include <cstdint>
#include <span>

#include "loom/core/error.h"
#include "loom/io/safetensors.h"

namespace {

void check(bool ok) {
  if (!ok) throw loom::InternalError("safetensors_fuzz: reader and header disagree");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const uint8_t> bytes(data, size);
  loom::io::SafetensorsHeader header;
  try {
    header = loom::io::read_safetensors_header_from_memory(bytes, "fuzz-input");
  } catch (const loom::IoError&) {
    return 0;
  }
  try {
    loom::io::SafetensorsFile file = loom::io::read_safetensors_from_memory(bytes, "fuzz-input");
    check(file.tensors.size() == header.tensors.size() && file.metadata == header.metadata);
    for (size_t i = 0; i < file.tensors.size(); ++i) {
      const auto& [name, t] = file.tensors[i];
      const auto& info = header.tensors[i];
      check(name == info.name && t.dtype() == info.dtype && t.shape() == info.shape && t.nbytes() == info.nbytes());
    }
  } catch (const loom::IoError&) {
    // Only a BOOL tensor holding other bytes than 0 and 1 passes the header and fails the load.
  }
  return 0;
}
