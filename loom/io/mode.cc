#include "loom/io/mode.h"

#include <array>
#include <ostream>

namespace loom::io {
namespace {

constexpr std::array<std::string_view, 6> kNames = {"local", "allreduce", "dist_sync", "dist_async", "dist_ssp",
                                                    "pipeline"};

}  // namespace

std::string_view name(Mode mode) {
  const auto i = static_cast<size_t>(mode);
  return i < kNames.size() ? kNames[i] : "?";
}

std::optional<Mode> parse_mode(std::string_view text) {
  for (size_t i = 0; i < kNames.size(); ++i) {
    if (kNames[i] == text) return static_cast<Mode>(i);
  }
  return std::nullopt;
}

const std::vector<std::string>& mode_names() {
  static const std::vector<std::string> names(kNames.begin(), kNames.end());
  return names;
}

std::ostream& operator<<(std::ostream& os, Mode mode) { return os << name(mode); }

}  // namespace loom::io
