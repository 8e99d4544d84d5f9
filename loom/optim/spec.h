// The optimizer of a training run as data: which update rule, its
// hyper-parameters and the learning-rate schedule. One struct and one factory
// for every user: a job file's [optimizer] and [schedule] fill it (io/config.h),
// the Trainer makes its local Optimizer and LRScheduler from it, and parameter
// servers receive it as is (encode_spec / decode_spec) and make the same rule
// and schedule from it, so the update is the same code and bits everywhere.
//
//   // given: optim::NamedTensors params
//   optim::OptimizerSpec spec{.rule = optim::Rule::Adam, .lr = 1e-3, .amsgrad = true,
//                             .schedule = {.kind = optim::ScheduleKind::Cosine, .total_steps = 1000}};
//   optim::Optimizer opt = optim::make_optimizer(params, spec);   // params: model.named_parameters()
//   optim::LRScheduler sched(opt, optim::make_schedule(spec));
//   std::vector<std::byte> bytes = optim::encode_spec(spec);   // decode_spec(bytes) == spec
//
// Fields a rule does not use are ignored by it (momentum for Adam, betas for
// SGD), as torch.optim's constructors would not take them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace loom::optim {

class Schedule;
class UpdateRule;

enum class Rule : uint8_t { Sgd = 0, Adam = 1, AdamW = 2 };
enum class ScheduleKind : uint8_t { Constant = 0, Step = 1, Cosine = 2 };

std::string_view name(Rule rule);                // "sgd" | "adam" | "adamw"
std::string_view name(ScheduleKind kind);        // "constant" | "step" | "cosine"
std::optional<Rule> parse_rule(std::string_view text);
std::optional<ScheduleKind> parse_schedule_kind(std::string_view text);
const std::vector<std::string>& rule_names();    // every name(Rule), for messages and hints
const std::vector<std::string>& schedule_names();

// The lr as a function of the update count (formulas in schedule.h). A job
// file says step_size in epochs and cosine runs to the end of training; the
// Trainer fills in steps_per_epoch and total_steps once it knows the data, and
// that filled spec is what servers receive. A direct user (a KVStore) counts
// in updates: steps_per_epoch = 1.
struct ScheduleSpec {
  ScheduleKind kind = ScheduleKind::Constant;
  int64_t step_size = 1;       // Step: epochs between decays (step_size * steps_per_epoch updates)
  double gamma = 0.1;          // Step: lr factor per decay
  double min_lr = 0.0;         // Cosine: the lr at total_steps
  int64_t warmup_steps = 0;    // linear warm-up from 0 before the schedule (updates)
  int64_t steps_per_epoch = 1;
  int64_t total_steps = 1;     // Cosine anneals over total_steps - warmup_steps updates (at least 1)
  bool operator==(const ScheduleSpec&) const = default;
};

struct OptimizerSpec {
  Rule rule = Rule::Sgd;
  double lr = 1e-3;            // the schedule's base lr
  double momentum = 0.0;       // sgd
  double dampening = 0.0;      // sgd
  bool nesterov = false;       // sgd (needs momentum > 0, dampening 0); ignored by adam, adamw
  double weight_decay = 0.0;   // sgd, adam: L2 added to the gradient; adamw: decoupled
  double beta1 = 0.9;          // adam, adamw
  double beta2 = 0.999;
  double eps = 1e-8;
  bool amsgrad = false;        // adam, adamw
  // Scales a merged gradient before the rule sees it (MXNet's rescale_grad):
  // parameter servers apply it; a local Optimizer only takes 1, since the
  // Trainer scales its loss instead.
  double rescale_grad = 1.0;
  ScheduleSpec schedule;
  bool operator==(const OptimizerSpec&) const = default;
};

// ValueError naming the first field out of range: every value finite; lr,
// momentum, weight_decay, eps, gamma, min_lr, warmup_steps >= 0; betas in
// [0, 1); step_size, steps_per_epoch, total_steps >= 1; sgd's nesterov with
// momentum > 0 and no dampening.
void check_spec(const OptimizerSpec& spec);

// The factory: the rule with the spec's hyper-parameters, and the schedule
// with the spec's lr as its base (both check_spec first). A local Optimizer
// over both: make_optimizer (optimizer.h).
std::unique_ptr<UpdateRule> make_update_rule(const OptimizerSpec& spec);
std::shared_ptr<const Schedule> make_schedule(const OptimizerSpec& spec);

// The one encoding of a spec (what a server receives), little-endian, version 1,
// written and read by the frame codec (core/frame_codec.h):
//   offset size  field
//        0    4  magic "LOPT"
//        4    2  version (1)
//        6    2  length (kSpecBytes)
//        8    1  rule (Rule)
//        9    1  schedule kind (ScheduleKind)
//       10    1  flags: 1 nesterov, 2 amsgrad
//       11    1  reserved (0)
//       12   64  lr, momentum, dampening, weight_decay, beta1, beta2, eps, rescale_grad (f64 each)
//       76   48  step_size (i64), gamma (f64), min_lr (f64), warmup_steps, steps_per_epoch, total_steps (i64)
inline constexpr size_t kSpecBytes = 124;
std::vector<std::byte> encode_spec(const OptimizerSpec& spec);
// ValueError naming what is wrong: size, magic, version, unknown rule, kind or
// flags, reserved bytes, and every check_spec condition. A spec that decodes
// encodes back to the same bytes.
OptimizerSpec decode_spec(std::span<const std::byte> bytes);

}  // namespace loom::optim
