// The pipeline schedules, their names in job files (`schedule = "1f1b"`) and
// in messages. Everything else compares the enum, never the text; the
// schedules themselves are compiled in parallel/pipeline/schedule.h.
//
//   io::PipelineSchedule s = io::parse_pipeline_schedule("zb-h1").value();  // nullopt for an unknown name
//   std::string_view text = io::name(s);                                    // "zb-h1"
//   bool split = io::splits_backward(s);                                    // B = input grad + weight grad
#pragma once

#include <cstdint>
#include <iosfwd>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace loom::io {

enum class PipelineSchedule : uint8_t {
  GPipe,        // "gpipe": every forward, then every backward
  OneFOneB,     // "1f1b": PipeDream-Flush, at most p micro-batches in flight
  Interleaved,  // "interleaved": Megatron-LM's 1F1B over v model chunks per rank
  ZbH1,         // "zb-h1": 1F1B with backward split, weight gradients deferred into the bubbles
};

std::string_view name(PipelineSchedule schedule);
std::optional<PipelineSchedule> parse_pipeline_schedule(std::string_view text);
// Every name(PipelineSchedule), in enum order: for messages and "did you mean" hints.
const std::vector<std::string>& pipeline_schedule_names();
// Writes name(schedule), so that format("{}", schedule) reads as the job file does.
std::ostream& operator<<(std::ostream& os, PipelineSchedule schedule);

// The schedules that run backward as two actions: input gradient, then weight gradient.
inline bool splits_backward(PipelineSchedule s) { return s == PipelineSchedule::ZbH1; }

}  // namespace loom::io
