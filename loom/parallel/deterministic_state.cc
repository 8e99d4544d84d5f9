#include "loom/parallel/deterministic_state.h"

#include <optional>

#include "loom/core/error.h"

namespace loom::parallel {

void DeterministicSteps::add_to(io::Metadata& meta) const {
  meta["loom.deterministic.step"] = std::to_string(step);
  meta["loom.deterministic.atoms"] = std::to_string(atoms);
}

void DeterministicSteps::restore(const io::SafetensorsFile& file, const std::string& source) {
  auto number = [&](const char* key) -> std::optional<int64_t> {
    auto it = file.metadata.find(key);
    if (it == file.metadata.end()) return std::nullopt;
    try {
      return std::stoll(it->second);
    } catch (const std::exception&) {
      throw IoError(format("{}: metadata {} = '{}' is not a number", source, key, it->second));
    }
  };
  const auto saved_atoms = number("loom.deterministic.atoms");
  LOOM_CHECK_T(ConfigError, !saved_atoms || *saved_atoms == atoms,
               "{}: the checkpoint was trained with {} atoms a batch (deterministic_atoms, or a pipeline's "
               "data_parallel x microbatches), this run has {}; other atoms give other bits: set them to {} to go on "
               "with the same ones", source, *saved_atoms, atoms, *saved_atoms);
  const auto saved_step = number("loom.deterministic.step");
  step = saved_step ? *saved_step : number("loom.step").value_or(0);
}

}  // namespace loom::parallel
