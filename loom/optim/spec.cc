#include "loom/optim/spec.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>

#include "loom/core/error.h"
#include "loom/core/le_bytes.h"
#include "loom/optim/schedule.h"
#include "loom/optim/update_rule.h"

namespace loom::optim {
namespace {

constexpr std::array<std::string_view, 3> kRules = {"sgd", "adam", "adamw"};
constexpr std::array<std::string_view, 3> kKinds = {"constant", "step", "cosine"};

constexpr uint16_t kSpecVersion = 1;
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

void put_f64(std::byte* p, double v) { core::put_le<uint64_t>(p, std::bit_cast<uint64_t>(v)); }
double get_f64(const std::byte* p) { return std::bit_cast<double>(core::get_le<uint64_t>(p)); }

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
  std::vector<std::byte> out(kSpecBytes, std::byte{0});
  std::byte* p = out.data();
  std::memcpy(p, "LOPT", 4);
  core::put_le<uint16_t>(p + 4, kSpecVersion);
  core::put_le<uint16_t>(p + 6, static_cast<uint16_t>(kSpecBytes));
  p[8] = static_cast<std::byte>(s.rule);
  p[9] = static_cast<std::byte>(s.schedule.kind);
  p[10] = static_cast<std::byte>((s.nesterov ? kNesterov : 0) | (s.amsgrad ? kAmsgrad : 0));
  const double f[] = {s.lr, s.momentum, s.dampening, s.weight_decay, s.beta1, s.beta2, s.eps, s.rescale_grad};
  for (size_t i = 0; i < std::size(f); ++i) put_f64(p + 12 + 8 * i, f[i]);
  const ScheduleSpec& c = s.schedule;
  core::put_le<int64_t>(p + 76, c.step_size);
  put_f64(p + 84, c.gamma);
  put_f64(p + 92, c.min_lr);
  core::put_le<int64_t>(p + 100, c.warmup_steps);
  core::put_le<int64_t>(p + 108, c.steps_per_epoch);
  core::put_le<int64_t>(p + 116, c.total_steps);
  return out;
}

OptimizerSpec decode_spec(std::span<const std::byte> bytes) {
  LOOM_CHECK(bytes.size() == kSpecBytes, "optimizer spec: {} bytes, expected {}", bytes.size(), kSpecBytes);
  const std::byte* p = bytes.data();
  LOOM_CHECK(std::memcmp(p, "LOPT", 4) == 0, "optimizer spec: bad magic (not an optimizer spec)");
  const auto version = core::get_le<uint16_t>(p + 4);
  LOOM_CHECK(version == kSpecVersion, "optimizer spec: version {}, this build reads {}", version, kSpecVersion);
  const auto length = core::get_le<uint16_t>(p + 6);
  LOOM_CHECK(length == kSpecBytes, "optimizer spec: length field {}, expected {}", length, kSpecBytes);
  const auto rule = static_cast<uint8_t>(p[8]), kind = static_cast<uint8_t>(p[9]), flags = static_cast<uint8_t>(p[10]);
  LOOM_CHECK(rule < kRules.size(), "optimizer spec: unknown rule {}", static_cast<int>(rule));
  LOOM_CHECK(kind < kKinds.size(), "optimizer spec: unknown schedule {}", static_cast<int>(kind));
  LOOM_CHECK((flags & ~(kNesterov | kAmsgrad)) == 0, "optimizer spec: unknown flags {}", static_cast<int>(flags));
  LOOM_CHECK(p[11] == std::byte{0}, "optimizer spec: reserved byte is {}", static_cast<int>(p[11]));
  OptimizerSpec s;
  s.rule = static_cast<Rule>(rule);
  s.nesterov = (flags & kNesterov) != 0;
  s.amsgrad = (flags & kAmsgrad) != 0;
  double* f[] = {&s.lr, &s.momentum, &s.dampening, &s.weight_decay, &s.beta1, &s.beta2, &s.eps, &s.rescale_grad};
  for (size_t i = 0; i < std::size(f); ++i) *f[i] = get_f64(p + 12 + 8 * i);
  ScheduleSpec& c = s.schedule;
  c.kind = static_cast<ScheduleKind>(kind);
  c.step_size = core::get_le<int64_t>(p + 76);
  c.gamma = get_f64(p + 84);
  c.min_lr = get_f64(p + 92);
  c.warmup_steps = core::get_le<int64_t>(p + 100);
  c.steps_per_epoch = core::get_le<int64_t>(p + 108);
  c.total_steps = core::get_le<int64_t>(p + 116);
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
