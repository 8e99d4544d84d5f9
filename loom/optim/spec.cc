#include "loom/optim/spec.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <utility>

#include "loom/core/error.h"
#include "loom/core/frame_codec.h"
#include "loom/optim/schedule.h"
#include "loom/optim/update_rule.h"

namespace loom::optim {
namespace {

constexpr std::array<std::string_view, 3> kRules = {"sgd", "adam", "adamw"};
constexpr std::array<std::string_view, 3> kKinds = {"constant", "step", "cosine"};

// The LOPT record's prefix: magic, version 1, and its length (spec.h has the layout).
constexpr core::FrameFormat kSpecFormat{.protocol = "optimizer spec", .message = "record",
                                        .magic = {'L', 'O', 'P', 'T'}, .version = 1, .nbytes = kSpecBytes,
                                        .length_field = true};
constexpr uint8_t kNesterov = 1, kAmsgrad = 2;

template <class Enum, size_t N>
std::optional<Enum> parse(const std::array<std::string_view, N>& names, std::string_view text) {
  for (size_t i = 0; i < N; ++i) {
    if (names[i] == text) return static_cast<Enum>(i);
  }
  return std::nullopt;
}

template <size_t N>
std::vector<std::string> as_strings(const std::array<std::string_view, N>& names) {
  return std::vector<std::string>(names.begin(), names.end());
}

// The record's fields after the prefix, in order; the framing's own checks
// (size, magic, version, length, enums, flags, reserved byte) but not
// check_spec's ranges.
OptimizerSpec read_spec(std::span<const std::byte> bytes) {
  core::FrameReader r = core::open_frame(bytes, kSpecFormat);
  const uint8_t rule = r.u8("rule");
  if (rule >= kRules.size()) r.fail("rule", format("unknown rule {}", static_cast<int>(rule)));
  const uint8_t kind = r.u8("schedule kind");
  if (kind >= kKinds.size()) r.fail("schedule kind", format("unknown schedule {}", static_cast<int>(kind)));
  const uint8_t flags = r.u8("flags");
  if ((flags & ~(kNesterov | kAmsgrad)) != 0) r.fail("flags", format("unknown flags {}", static_cast<int>(flags)));
  r.zeros(1, "reserved");
  OptimizerSpec s{.rule = static_cast<Rule>(rule), .nesterov = (flags & kNesterov) != 0,
                  .amsgrad = (flags & kAmsgrad) != 0};
  const std::pair<const char*, double*> hyper[] = {
      {"lr", &s.lr},       {"momentum", &s.momentum}, {"dampening", &s.dampening}, {"weight_decay", &s.weight_decay},
      {"beta1", &s.beta1}, {"beta2", &s.beta2},       {"eps", &s.eps},             {"rescale_grad", &s.rescale_grad}};
  for (const auto& [field, v] : hyper) *v = r.f64(field);
  ScheduleSpec& c = s.schedule;
  c.kind = static_cast<ScheduleKind>(kind);
  c.step_size = r.i64("step_size");
  c.gamma = r.f64("gamma");
  c.min_lr = r.f64("min_lr");
  c.warmup_steps = r.i64("warmup_steps");
  c.steps_per_epoch = r.i64("steps_per_epoch");
  c.total_steps = r.i64("total_steps");
  r.done();
  return s;
}

}  // namespace

std::string_view name(Rule rule) {
  const auto i = static_cast<size_t>(rule);
  return i < kRules.size() ? kRules[i] : "?";
}
std::string_view name(ScheduleKind kind) {
  const auto i = static_cast<size_t>(kind);
  return i < kKinds.size() ? kKinds[i] : "?";
}
std::optional<Rule> parse_rule(std::string_view text) { return parse<Rule>(kRules, text); }
std::optional<ScheduleKind> parse_schedule_kind(std::string_view text) { return parse<ScheduleKind>(kKinds, text); }
const std::vector<std::string>& rule_names() {
  static const std::vector<std::string> names = as_strings(kRules);
  return names;
}
const std::vector<std::string>& schedule_names() {
  static const std::vector<std::string> names = as_strings(kKinds);
  return names;
}

void check_spec(const OptimizerSpec& s) {
  LOOM_CHECK(static_cast<size_t>(s.rule) < kRules.size(), "optimizer: unknown rule {}", static_cast<int>(s.rule));
  const auto& c = s.schedule;
  LOOM_CHECK(static_cast<size_t>(c.kind) < kKinds.size(), "optimizer: unknown schedule {}", static_cast<int>(c.kind));
  const std::pair<const char*, double> finite[] = {
      {"lr", s.lr}, {"momentum", s.momentum}, {"dampening", s.dampening}, {"weight_decay", s.weight_decay},
      {"beta1", s.beta1}, {"beta2", s.beta2}, {"eps", s.eps}, {"rescale_grad", s.rescale_grad},
      {"gamma", c.gamma}, {"min_lr", c.min_lr}};
  for (const auto& [field, v] : finite) LOOM_CHECK(std::isfinite(v), "optimizer: {} must be finite, got {}", field, v);
  LOOM_CHECK(s.lr >= 0, "optimizer: lr must be >= 0, got {}", s.lr);
  LOOM_CHECK(s.momentum >= 0, "optimizer: momentum must be >= 0, got {}", s.momentum);
  LOOM_CHECK(s.weight_decay >= 0, "optimizer: weight_decay must be >= 0, got {}", s.weight_decay);
  LOOM_CHECK(s.beta1 >= 0 && s.beta1 < 1, "optimizer: beta1 must be in [0, 1), got {}", s.beta1);
  LOOM_CHECK(s.beta2 >= 0 && s.beta2 < 1, "optimizer: beta2 must be in [0, 1), got {}", s.beta2);
  LOOM_CHECK(s.eps >= 0, "optimizer: eps must be >= 0, got {}", s.eps);
  LOOM_CHECK(s.rule != Rule::Sgd || !s.nesterov || (s.momentum > 0 && s.dampening == 0),
             "optimizer: nesterov needs momentum > 0 and dampening == 0, got momentum {} and dampening {}", s.momentum,
             s.dampening);
  LOOM_CHECK(c.gamma >= 0, "optimizer: schedule gamma must be >= 0, got {}", c.gamma);
  LOOM_CHECK(c.min_lr >= 0, "optimizer: schedule min_lr must be >= 0, got {}", c.min_lr);
  LOOM_CHECK(c.warmup_steps >= 0, "optimizer: schedule warmup_steps must be >= 0, got {}", c.warmup_steps);
  LOOM_CHECK(c.steps_per_epoch >= 1, "optimizer: schedule steps_per_epoch must be >= 1, got {}", c.steps_per_epoch);
  LOOM_CHECK(c.total_steps >= 1, "optimizer: schedule total_steps must be >= 1, got {}", c.total_steps);
  LOOM_CHECK(c.step_size >= 1 && c.step_size <= std::numeric_limits<int64_t>::max() / c.steps_per_epoch,
             "optimizer: schedule step_size must be >= 1 and step_size * steps_per_epoch fit in 64 bits, got {} x {}",
             c.step_size, c.steps_per_epoch);
}

std::unique_ptr<UpdateRule> make_update_rule(const OptimizerSpec& s) {
  check_spec(s);
  switch (s.rule) {
    case Rule::Adam:
      return std::make_unique<Adam>(AdamOptions{.lr = s.lr, .betas = {s.beta1, s.beta2}, .eps = s.eps,
                                                .weight_decay = s.weight_decay, .amsgrad = s.amsgrad});
    case Rule::AdamW:
      return std::make_unique<AdamW>(AdamWOptions{.lr = s.lr, .betas = {s.beta1, s.beta2}, .eps = s.eps,
                                                  .weight_decay = s.weight_decay, .amsgrad = s.amsgrad});
    case Rule::Sgd:
      break;
  }
  return std::make_unique<Sgd>(SgdOptions{.lr = s.lr, .momentum = s.momentum, .dampening = s.dampening,
                                          .weight_decay = s.weight_decay, .nesterov = s.nesterov});
}

std::shared_ptr<const Schedule> make_schedule(const OptimizerSpec& s) {
  check_spec(s);
  const ScheduleSpec& c = s.schedule;
  std::shared_ptr<const Schedule> sched;
  switch (c.kind) {
    case ScheduleKind::Step:
      sched = step_lr({.base_lr = s.lr, .step_size = c.step_size * c.steps_per_epoch, .gamma = c.gamma});
      break;
    case ScheduleKind::Cosine:
      sched = cosine_annealing(
          {.base_lr = s.lr, .t_max = std::max<int64_t>(1, c.total_steps - c.warmup_steps), .eta_min = c.min_lr});
      break;
    case ScheduleKind::Constant:
      sched = step_lr({.base_lr = s.lr, .step_size = std::numeric_limits<int64_t>::max() / 2, .gamma = 1.0});
      break;
  }
  if (c.warmup_steps > 0) sched = linear_warmup(sched, {.warmup_steps = c.warmup_steps});
  return sched;
}

std::vector<std::byte> encode_spec(const OptimizerSpec& s) {
  std::vector<std::byte> out(kSpecBytes);
  const ScheduleSpec& c = s.schedule;
  core::FrameWriter w(out);
  w.prefix(kSpecFormat)
      .u8(static_cast<uint8_t>(s.rule))
      .u8(static_cast<uint8_t>(c.kind))
      .u8(static_cast<uint8_t>((s.nesterov ? kNesterov : 0) | (s.amsgrad ? kAmsgrad : 0)))
      .zeros(1);
  for (double v : {s.lr, s.momentum, s.dampening, s.weight_decay, s.beta1, s.beta2, s.eps, s.rescale_grad}) w.f64(v);
  w.i64(c.step_size).f64(c.gamma).f64(c.min_lr).i64(c.warmup_steps).i64(c.steps_per_epoch).i64(c.total_steps);
  LOOM_ASSERT(w.size() == kSpecBytes);
  return out;
}

// A spec is a value, whoever sent it: the framing's CommError and
// check_spec's message both become a ValueError "optimizer spec: ...".
OptimizerSpec decode_spec(std::span<const std::byte> bytes) {
  OptimizerSpec s;
  try {
    s = read_spec(bytes);
  } catch (const CommError& e) {
    throw ValueError(e.what());
  }
  try {
    check_spec(s);
  } catch (const ValueError& e) {
    std::string_view why = e.what();
    if (why.starts_with("optimizer: ")) why.remove_prefix(11);
    throw ValueError(format("optimizer spec: {}", why));
  }
  return s;
}

}  // namespace loom::optim
