#include "loom/io/pipeline_schedule.h"

#include <array>
#include <ostream>

namespace loom::io {
namespace {

constexpr std::array<std::string_view, 4> kNames = {"gpipe", "1f1b", "interleaved", "zb-h1"};

}  // namespace

std::string_view name(PipelineSchedule schedule) {
  const auto i = static_cast<size_t>(schedule);
  return i < kNames.size() ? kNames[i] : "?";
}

std::optional<PipelineSchedule> parse_pipeline_schedule(std::string_view text) {
  for (size_t i = 0; i < kNames.size(); ++i) {
    if (kNames[i] == text) return static_cast<PipelineSchedule>(i);
  }
  return std::nullopt;
}

const std::vector<std::string>& pipeline_schedule_names() {
  static const std::vector<std::string> names(kNames.begin(), kNames.end());
  return names;
}

std::ostream& operator<<(std::ostream& os, PipelineSchedule schedule) { return os << name(schedule); }

}  // namespace loom::io
