// libFuzzer target for the job-file loader: TOML parsing, key checks, and the
// model builder for [[model.layers]] (whose shape inference runs real ops).
//
//   scripts/fuzz job_file 600
//
// The property: any text either gives a JobConfig or throws a loom::Error
// (ConfigError for the file, ShapeError/ValueError for layers that don't fit).
#include <cstdint>
#include <string>

#include "loom/core/error.h"
#include "loom/io/config.h"
#include "loom/train/zoo.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    loom::io::JobConfig job = loom::io::parse_job(text, "fuzz.toml", {});
    // Build small layer-list models too (a zoo model by name is fixed code); keep them
    // cheap by refusing huge layers up front.
    if (!job.model.layers.empty() && job.model.layers.size() <= 16) {
      for (const auto& l : job.model.layers) {
        for (const auto& [k, v] : l.args) {
          if (const auto* i = std::get_if<int64_t>(&v); i && (*i > 64 || *i < -64)) return 0;
        }
      }
      loom::train::build_model(job.model, {1, 8, 8}, 2);
    }
  } catch (const loom::Error&) {
  }
  return 0;
}
