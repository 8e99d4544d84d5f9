// libFuzzer target for the CSV reader (loom/data/csv.h).
//
//   scripts/fuzz csv 600
//
// Input: one byte that picks the options (header or not, label column none /
// by index / by name "label", delimiter, i64 or f32 targets), then the file.
// The property: read_csv either returns a dataset whose inputs are
// [rows, features] and whose targets (if any) are [rows] of the asked dtype,
// or throws IoError (the file) or ValueError (options that do not fit it).
// Anything else (another exception, a crash, a sanitizer report) is a bug.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>
#include <variant>

#include "loom/core/error.h"
#include "loom/data/csv.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t pick = data[0];
  loom::data::CsvOptions o;
  o.has_header = (pick & 1) != 0;
  switch ((pick >> 1) & 3) {
    case 0: break;  // no label column
    case 1: o.label_column = int64_t{0}; break;
    case 2: o.label_column = int64_t{-1}; break;
    default: o.label_column = std::string("label"); break;
  }
  constexpr char kDelimiters[4] = {',', '\t', ';', ' '};
  o.delimiter = kDelimiters[(pick >> 3) & 3];
  o.target_dtype = (pick & 32) != 0 ? loom::core::DType::F32 : loom::core::DType::I64;

  // read_csv reads files; give it one in memory-backed /dev/shm when present.
  static const std::string path = (access("/dev/shm", W_OK) == 0 ? std::string("/dev/shm") : std::string("/tmp")) +
                                  "/loom_csv_fuzz_" + std::to_string(getpid());
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return 0;
  std::fwrite(data + 1, 1, size - 1, f);
  std::fclose(f);
  try {
    const loom::data::TensorDataset ds = loom::data::read_csv(path, o);
    const loom::core::Tensor& x = ds.inputs();
    const loom::core::Tensor& y = ds.targets();
    const bool labelled = !std::holds_alternative<std::monostate>(o.label_column);
    bool ok = x.dim() == 2 && x.size(0) >= 1 && x.size(1) >= 1 && x.dtype() == loom::core::DType::F32;
    ok = ok && y.defined() == labelled;
    if (ok && labelled) ok = y.dim() == 1 && y.size(0) == x.size(0) && y.dtype() == o.target_dtype;
    if (!ok) throw loom::InternalError("csv_fuzz: dataset shapes or dtypes disagree with the options");
  } catch (const loom::IoError&) {
  } catch (const loom::ValueError& e) {
    // Only the options' own checks (a label name without a header, no such column, an index out of range).
    if (dynamic_cast<const loom::ShapeError*>(&e) || dynamic_cast<const loom::IndexError*>(&e) ||
        dynamic_cast<const loom::TypeError*>(&e)) {
      throw;
    }
  }
  return 0;
}
