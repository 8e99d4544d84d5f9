// What a pipeline plan costs, in simulated time: when each rank finishes,
// how long it sat idle, and how many micro-batches' activations it holds at
// most; and the bubble each schedule's formula predicts.
//
//   using namespace parallel::pipeline;
//   Plan plan = compile_schedule({.kind = io::PipelineSchedule::OneFOneB, .stages = 4, .microbatches = 8});
//   Simulation s = simulate(plan, {.forward = 1, .backward_input = 1, .backward_weight = 1});
//   BubbleFormula f = bubble_formula(plan.options);        // (p-1)/m = 0.375, idle over compute
//   double measured = s.bubble(f.normalisation);           // 0.375
//   int live = s.peak_live[0];                             // 4 (= p on rank 0)
//
// Simulated time: every compute action takes its duration (a full Backward
// takes backward_input + backward_weight), sends and receives take none, a
// receive waits for its message. A rank's idle time is the makespan (the
// last rank's finish) minus its busy time, so waiting at the start, in the
// middle and at the end all count.
//
// The bubble formulas normalise the idle time differently; both are here:
// - IdleOverTotal  = sum of idle / (p * makespan): GPipe's (p-1)/(m+p-1),
//   the share of the step's device time spent idle.
// - IdleOverCompute = sum of idle / sum of busy: 1F1B's (p-1)/m, interleaved's
//   (p-1)/(v m), ZB-H1's (p-1)/(3m): idle time per unit of useful work, so a
//   step takes (1 + bubble) times its ideal compute.
// They hold exactly in simulated time for per-chunk F = Bi = W (B = 2F); the
// GPipe, 1F1B and interleaved ones for any F and B. ZB-H1's (p-1)/(3m) needs
// m >= p; below it the first weight gradients cannot fill the start-up
// bubble and the bubble is (2p - m - 1)/(3m), which bubble_formula returns.
//
// A micro-batch's activations are live on a chunk from its F (its Recompute,
// when the chunk recomputes: until then it holds only its input) until the
// end of its backward: the B, or with a split backward the W (the weight
// gradient still needs the layer inputs). A Recompute takes a forward's time;
// the formulas are for plans without it. peak_live counts (chunk, micro-batch) pairs
// per rank: GPipe m, 1F1B min(p - r, m) on rank r, ZB-H1 min(p, m); an
// interleaved chunk holds 1/v of a stage's activations.
#pragma once

#include <vector>

#include "loom/parallel/pipeline/schedule.h"

namespace loom::parallel::pipeline {

struct Durations {  // per chunk, in any unit of time
  double forward = 1;
  double backward_input = 1;
  double backward_weight = 1;
};

enum class BubbleNormalisation : uint8_t { IdleOverTotal, IdleOverCompute };

struct Simulation {
  double makespan = 0;
  std::vector<double> busy, idle;  // per rank
  std::vector<int> peak_live;      // per rank: most (chunk, micro-batch) activations held at once
  double bubble(BubbleNormalisation normalisation) const;
};

struct BubbleFormula {
  double value = 0;
  BubbleNormalisation normalisation = BubbleNormalisation::IdleOverCompute;
};

// Checks the plan (check_plan), then runs it in simulated time.
Simulation simulate(const Plan& plan, const Durations& durations = {});
// The schedule's bubble for per-chunk F = Bi = W, as the papers state it (see above).
BubbleFormula bubble_formula(const ScheduleOptions& options);
// The bubble of a run from its makespan and each rank's busy time (measured or simulated).
double bubble_of(double makespan, const std::vector<double>& busy, BubbleNormalisation normalisation);
// Most activations rank `actions` holds at once, in (chunk, micro-batch) pairs.
int peak_live_activations(const std::vector<Action>& actions);

}  // namespace loom::parallel::pipeline
