// libFuzzer target for the optimizer spec decoder (loom/optim/spec.h), the
// bytes a parameter server receives with SetOptimizer.
//
//   scripts/fuzz optimizer_spec 600   # builds with clang + ASan/UBSan, runs 10 minutes
//
// The property: decode_spec either throws ValueError, or returns a spec that
// encodes back to exactly the input and from which the factory makes a rule
// and a schedule without complaint. Anything else (another exception, a
// crash, a sanitizer report) is a bug.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

#include "loom/core/error.h"
#include "loom/optim/schedule.h"
#include "loom/optim/spec.h"
#include "loom/optim/update_rule.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  loom::optim::OptimizerSpec spec;
  try {
    spec = loom::optim::decode_spec(bytes);
  } catch (const loom::ValueError&) {
    return 0;
  }
  const std::vector<std::byte> again = loom::optim::encode_spec(spec);
  if (again.size() != bytes.size() || std::memcmp(again.data(), bytes.data(), again.size()) != 0) {
    throw loom::InternalError("optimizer_spec_fuzz: decode then encode does not give the input back");
  }
  // A spec the decoder accepts is one the server can use.
  auto rule = loom::optim::make_update_rule(spec);
  auto schedule = loom::optim::make_schedule(spec);
  (void)schedule->lr_at(0);
  (void)schedule->lr_at(spec.schedule.total_steps);
  return 0;
}
