#include "loom/parallel/pipeline/simulate.h"

#include <algorithm>
#include <map>
#include <set>
#include <tuple>

#include "loom/core/error.h"
#include "loom/parallel/pipeline/plan_check.h"

namespace loom::parallel::pipeline {

double bubble_of(double makespan, const std::vector<double>& busy, BubbleNormalisation normalisation) {
  double busy_sum = 0;
  for (double b : busy) busy_sum += b;
  const double idle_sum = makespan * static_cast<double>(busy.size()) - busy_sum;
  const double denominator =
      normalisation == BubbleNormalisation::IdleOverTotal ? makespan * static_cast<double>(busy.size()) : busy_sum;
  return denominator > 0 ? idle_sum / denominator : 0;
}

double Simulation::bubble(BubbleNormalisation normalisation) const { return bubble_of(makespan, busy, normalisation); }

BubbleFormula bubble_formula(const ScheduleOptions& o) {
  check_schedule_options(o);
  const double p = o.stages, m = o.microbatches, v = o.virtual_stages;
  switch (o.kind) {
    case io::PipelineSchedule::GPipe: return {(p - 1) / (m + p - 1), BubbleNormalisation::IdleOverTotal};
    case io::PipelineSchedule::OneFOneB: return {(p - 1) / m, BubbleNormalisation::IdleOverCompute};
    case io::PipelineSchedule::Interleaved: return {(p - 1) / (v * m), BubbleNormalisation::IdleOverCompute};
    case io::PipelineSchedule::ZbH1:
      return {(p - 1 + std::max(0.0, p - m)) / (3 * m), BubbleNormalisation::IdleOverCompute};
  }
  LOOM_ASSERT(false);
}

int peak_live_activations(const std::vector<Action>& actions) {
  std::set<std::pair<int, int>> recomputed;  // (chunk, micro-batch): its F kept only the input
  for (const Action& a : actions) {
    if (a.op == Op::Recompute) recomputed.insert({a.chunk, a.microbatch});
  }
  int live = 0, peak = 0;
  for (const Action& a : actions) {
    const bool recomputes = recomputed.count({a.chunk, a.microbatch}) > 0;
    if ((a.op == Op::Forward && !recomputes) || a.op == Op::Recompute) peak = std::max(peak, ++live);
    if (a.op == Op::Backward || a.op == Op::BackwardWeight) --live;
  }
  return peak;
}

Simulation simulate(const Plan& plan, const Durations& d) {
  check_plan(plan);
  const int p = plan.options.stages;
  Simulation sim;
  sim.busy.assign(p, 0);
  sim.idle.assign(p, 0);
  std::vector<double> clock(p, 0);
  std::vector<size_t> next(p, 0);
  // Per channel (sender, receiver, gradient?): when each message arrives; how many were taken.
  std::map<std::tuple<int, int, bool>, std::vector<double>> arrivals;
  std::map<std::tuple<int, int, bool>, size_t> taken;
  auto duration = [&](Op op) {
    switch (op) {
      case Op::Forward: return d.forward;
      case Op::Recompute: return d.forward;
      case Op::Backward: return d.backward_input + d.backward_weight;
      case Op::BackwardInput: return d.backward_input;
      case Op::BackwardWeight: return d.backward_weight;
      default: return 0.0;
    }
  };
  for (bool moved = true; moved;) {
    moved = false;
    for (int r = 0; r < p; ++r) {
      for (; next[r] < plan.ranks[r].size(); ++next[r], moved = true) {
        const Action& a = plan.ranks[r][next[r]];
        const bool gradient = a.op == Op::SendGradient || a.op == Op::RecvGradient;
        if (is_send(a.op)) {
          arrivals[{r, a.peer, gradient}].push_back(clock[r]);
        } else if (is_recv(a.op)) {
          const auto channel = std::make_tuple(a.peer, r, gradient);
          const std::vector<double>& times = arrivals[channel];
          if (taken[channel] >= times.size()) break;
          clock[r] = std::max(clock[r], times[taken[channel]++]);
        } else {
          clock[r] += duration(a.op);
          sim.busy[r] += duration(a.op);
        }
      }
    }
  }
  for (int r = 0; r < p; ++r) LOOM_ASSERT(next[r] == plan.ranks[r].size());  // check_plan proved it
  sim.makespan = *std::max_element(clock.begin(), clock.end());
  for (int r = 0; r < p; ++r) {
    sim.idle[r] = sim.makespan - sim.busy[r];
    sim.peak_live.push_back(peak_live_activations(plan.ranks[r]));
  }
  return sim;
}

}  // namespace loom::parallel::pipeline
