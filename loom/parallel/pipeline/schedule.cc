#include "loom/parallel/pipeline/schedule.h"

#include <algorithm>

#include "loom/core/error.h"
#include "loom/parallel/pipeline/plan_check.h"

namespace loom::parallel::pipeline {

std::string_view name(Op op) {
  switch (op) {
    case Op::Forward: return "F";
    case Op::Backward: return "B";
    case Op::BackwardInput: return "Bi";
    case Op::BackwardWeight: return "W";
    case Op::Recompute: return "R";
    case Op::SendActivation: return "send act";
    case Op::RecvActivation: return "recv act";
    case Op::SendGradient: return "send grad";
    case Op::RecvGradient: return "recv grad";
  }
  return "?";
}

std::string to_string(const Action& a) {
  std::string s = format("{} mb {} chunk {}", name(a.op), a.microbatch, a.chunk);
  if (is_send(a.op)) s += format(" to {}", a.peer);
  if (is_recv(a.op)) s += format(" from {}", a.peer);
  return s;
}

void check_schedule_options(const ScheduleOptions& o) {
  using io::PipelineSchedule;
  LOOM_CHECK_T(ConfigError, o.stages >= 1, "pipeline: stages must be >= 1, got {}", o.stages);
  LOOM_CHECK_T(ConfigError, o.microbatches >= 1, "pipeline: microbatches must be >= 1, got {}", o.microbatches);
  LOOM_CHECK_T(ConfigError, o.virtual_stages >= 1, "pipeline: virtual_stages must be >= 1, got {}",
               o.virtual_stages);
  if (o.kind == PipelineSchedule::Interleaved) {
    LOOM_CHECK_T(ConfigError, o.virtual_stages >= 2,
                 "pipeline: schedule \"interleaved\" needs virtual_stages >= 2 (with 1 it is \"1f1b\"), got {}",
                 o.virtual_stages);
    LOOM_CHECK_T(ConfigError, o.microbatches % o.stages == 0,
                 "pipeline: schedule \"interleaved\" needs microbatches a multiple of stages (micro-batches pass "
                 "the chunks in groups of p), got microbatches = {} with stages = {}",
                 o.microbatches, o.stages);
  } else {
    LOOM_CHECK_T(ConfigError, o.virtual_stages == 1,
                 "pipeline: schedule \"{}\" runs one model chunk per rank (virtual_stages = 1), got virtual_stages "
                 "= {}; use \"interleaved\" for more",
                 o.kind, o.virtual_stages);
  }
  const size_t chunks = static_cast<size_t>(o.stages) * static_cast<size_t>(o.virtual_stages);
  LOOM_CHECK_T(ConfigError, o.recompute.empty() || o.recompute.size() == chunks,
               "pipeline: recompute needs one flag per chunk (stages * virtual_stages = {}) or none, got {}", chunks,
               o.recompute.size());
}

namespace {

using Order = std::vector<Action>;  // compute actions only

Action compute(Op op, int mb, int chunk) { return {.op = op, .microbatch = mb, .chunk = chunk, .peer = -1}; }

Order gpipe(int r, int m) {
  Order o;
  for (int i = 0; i < m; ++i) o.push_back(compute(Op::Forward, i, r));
  for (int i = 0; i < m; ++i) o.push_back(compute(Op::Backward, i, r));
  return o;
}

// PipeDream-Flush: rank r runs ahead by the p - r - 1 forwards that fill the
// pipeline below it, then alternates, so at most p - r micro-batches are live.
Order one_f_one_b(int r, int p, int m) {
  const int warmup = std::min(p - r - 1, m);
  Order o;
  for (int i = 0; i < warmup; ++i) o.push_back(compute(Op::Forward, i, r));
  for (int i = 0; i < m - warmup; ++i) {
    o.push_back(compute(Op::Forward, i + warmup, r));
    o.push_back(compute(Op::Backward, i, r));
  }
  for (int i = m - warmup; i < m; ++i) o.push_back(compute(Op::Backward, i, r));
  return o;
}

// ZB-H1 (Qi et al. 2023): 1F1B's order with B cut into Bi and W. Bi is all
// the previous stage waits for, so it runs where 1F1B ran B; rank r keeps r
// weight gradients back (live: 1F1B's p - r plus r = p) and runs them when
// its backwards run out, in the cool-down that 1F1B leaves idle. With equal
// F, Bi and W times the idle time per rank is (p - 1) F instead of 1F1B's
// (p - 1)(F + B) for m >= p.
Order zb_h1(int r, int p, int m) {
  const int warmup = std::min(p - r - 1, m);
  Order o;
  int backwards = 0, weights = 0;
  auto backward = [&](int i) {
    o.push_back(compute(Op::BackwardInput, i, r));
    ++backwards;
    if (backwards - weights > r) o.push_back(compute(Op::BackwardWeight, weights++, r));
  };
  for (int i = 0; i < warmup; ++i) o.push_back(compute(Op::Forward, i, r));
  for (int i = 0; i < m - warmup; ++i) {
    o.push_back(compute(Op::Forward, i + warmup, r));
    backward(i);
  }
  for (int i = m - warmup; i < m; ++i) backward(i);
  while (weights < m) o.push_back(compute(Op::BackwardWeight, weights++, r));
  return o;
}

// Megatron-LM's interleaved 1F1B. The rank's m * v forward steps k take
// micro-batches in groups of p through its chunks: step k is micro-batch
// (k / pv) p + k mod p on local chunk (k mod pv) / p; backward steps walk the
// chunks the other way. Warm-up is 2 (p - r - 1) + (v - 1) p steps.
Order interleaved(int r, int p, int m, int v) {
  const int total = m * v;
  const int group = p * v;
  auto mb = [&](int k) { return (k / group) * p + k % p; };
  auto local_chunk = [&](int k) { return (k % group) / p; };
  auto forward = [&](int k) { return compute(Op::Forward, mb(k), local_chunk(k) * p + r); };
  auto backward = [&](int k) { return compute(Op::Backward, mb(k), (v - 1 - local_chunk(k)) * p + r); };
  const int warmup = std::min((p - r - 1) * 2 + (v - 1) * p, total);
  Order o;
  for (int k = 0; k < warmup; ++k) o.push_back(forward(k));
  for (int k = 0; k < total - warmup; ++k) {
    o.push_back(forward(k + warmup));
    o.push_back(backward(k));
  }
  for (int k = total - warmup; k < total; ++k) o.push_back(backward(k));
  return o;
}

// Adds the sends and receives around rank r's compute actions: a receive
// right before the action that needs the neighbour's payload, a send right
// after the action that made one, when the neighbouring chunk is on another rank.
std::vector<Action> with_transfers(const Plan& plan, int r, const Order& order) {
  const int last = plan.num_chunks() - 1;
  std::vector<Action> out;
  for (const Action& a : order) {
    const int c = a.chunk, i = a.microbatch;
    const bool grad_in = (a.op == Op::Backward || a.op == Op::BackwardInput) && c < last && plan.rank_of(c + 1) != r;
    const bool grad_out = (a.op == Op::Backward || a.op == Op::BackwardInput) && c > 0 && plan.rank_of(c - 1) != r;
    if (a.op == Op::Forward && c > 0 && plan.rank_of(c - 1) != r) {
      out.push_back({.op = Op::RecvActivation, .microbatch = i, .chunk = c, .peer = plan.rank_of(c - 1)});
    }
    const bool backward = a.op == Op::Backward || a.op == Op::BackwardInput;
    if (backward && plan.recomputes(c)) out.push_back(compute(Op::Recompute, i, c));
    if (grad_in) out.push_back({.op = Op::RecvGradient, .microbatch = i, .chunk = c, .peer = plan.rank_of(c + 1)});
    out.push_back(a);
    if (a.op == Op::Forward && c < last && plan.rank_of(c + 1) != r) {
      out.push_back({.op = Op::SendActivation, .microbatch = i, .chunk = c, .peer = plan.rank_of(c + 1)});
    }
    if (grad_out) out.push_back({.op = Op::SendGradient, .microbatch = i, .chunk = c, .peer = plan.rank_of(c - 1)});
  }
  return out;
}

}  // namespace

Plan compile_schedule(const ScheduleOptions& o) {
  check_schedule_options(o);
  Plan plan{.options = o, .ranks = {}};
  const int p = o.stages, m = o.microbatches;
  for (int r = 0; r < p; ++r) {
    Order order;
    switch (o.kind) {
      case io::PipelineSchedule::GPipe: order = gpipe(r, m); break;
      case io::PipelineSchedule::OneFOneB: order = one_f_one_b(r, p, m); break;
      case io::PipelineSchedule::Interleaved: order = interleaved(r, p, m, o.virtual_stages); break;
      case io::PipelineSchedule::ZbH1: order = zb_h1(r, p, m); break;
    }
    plan.ranks.push_back(with_transfers(plan, r, order));
  }
  check_plan(plan);
  return plan;
}

std::string describe(const Plan& plan) {
  std::string out;
  for (size_t r = 0; r < plan.ranks.size(); ++r) {
    out += format("rank {}:", r);
    for (size_t k = 0; k < plan.ranks[r].size(); ++k) out += (k ? ", " : " ") + to_string(plan.ranks[r][k]);
    out += "\n";
  }
  return out;
}

}  // namespace loom::parallel::pipeline
