// libFuzzer target for the IDX reader (plain and gzipped input).
//
//   scripts/fuzz idx 600        # builds with clang + ASan/UBSan, runs 10 minutes
//
// The property: on any bytes read_idx either returns a tensor whose element
// count matches its shape or throws IoError. Anything else is a bug.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>

#include "loom/core/error.h"
#include "loom/data/idx.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // read_idx reads files (through zlib); give it one in memory-backed /dev/shm when present.
  static const std::string path = (access("/dev/shm", W_OK) == 0 ? std::string("/dev/shm") : std::string("/tmp")) +
                                  "/loom_idx_fuzz_" + std::to_string(getpid());
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return 0;
  std::fwrite(data, 1, size, f);
  std::fclose(f);
  try {
    loom::core::Tensor t = loom::data::read_idx(path);
    if (t.numel() != loom::core::numel(t.shape())) throw loom::InternalError("idx_fuzz: shape and size disagree");
  } catch (const loom::IoError&) {
  }
  return 0;
}
