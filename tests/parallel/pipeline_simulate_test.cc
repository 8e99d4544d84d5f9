// simulate() and bubble_formula() (parallel/pipeline/simulate.h): every schedule's bubble in simulated time
// equals its formula, and live activations stay within each schedule's bound.
#include "loom/parallel/pipeline/simulate.h"

#include <gtest/gtest.h>

#include <algorithm>

namespace loom::parallel::pipeline {
namespace {

using io::PipelineSchedule;

constexpr int kStages[] = {2, 4};
constexpr int kMicrobatches[] = {1, 2, 4, 8, 16};

TEST(PipelineSimulate, OneStageHasNoBubble) {
  const Simulation s = simulate(compile_schedule({.kind = PipelineSchedule::GPipe, .stages = 1, .microbatches = 3}),
                                {.forward = 2, .backward_input = 1, .backward_weight = 1});
  EXPECT_DOUBLE_EQ(s.makespan, 12);
  EXPECT_EQ(s.busy, std::vector<double>{12});
  EXPECT_EQ(s.idle, std::vector<double>{0});
  EXPECT_EQ(s.peak_live, std::vector<int>{3});
}

TEST(PipelineSimulate, BubbleNormalisations) {
  // Two ranks, makespan 10, busy 8 and 6: idle 2 + 4 = 6 of 20 in all, 6 per 14 of compute.
  EXPECT_DOUBLE_EQ(bubble_of(10, {8, 6}, BubbleNormalisation::IdleOverTotal), 6.0 / 20);
  EXPECT_DOUBLE_EQ(bubble_of(10, {8, 6}, BubbleNormalisation::IdleOverCompute), 6.0 / 14);
}

TEST(PipelineSimulate, GPipeMatchesItsFormulaExactly) {
  for (int p : kStages) {
    for (int m : kMicrobatches) {
      const ScheduleOptions o{.kind = PipelineSchedule::GPipe, .stages = p, .microbatches = m};
      const BubbleFormula f = bubble_formula(o);
      EXPECT_EQ(f.normalisation, BubbleNormalisation::IdleOverTotal);
      EXPECT_DOUBLE_EQ(f.value, double(p - 1) / (m + p - 1));
      const Simulation s = simulate(compile_schedule(o));
      EXPECT_NEAR(s.bubble(f.normalisation), f.value, 1e-12) << "p " << p << " m " << m;
      // Unbalanced F and B: (p-1)/(m+p-1) still holds.
      const Simulation u = simulate(compile_schedule(o), {.forward = 1, .backward_input = 2, .backward_weight = 1.5});
      EXPECT_NEAR(u.bubble(f.normalisation), f.value, 1e-12) << "p " << p << " m " << m;
      for (int r = 0; r < p; ++r) EXPECT_EQ(s.peak_live[r], m) << "p " << p << " m " << m << " rank " << r;
    }
  }
}

TEST(PipelineSimulate, OneFOneBMatchesItsFormulaExactly) {
  for (int p : kStages) {
    for (int m : kMicrobatches) {
      const ScheduleOptions o{.kind = PipelineSchedule::OneFOneB, .stages = p, .microbatches = m};
      const BubbleFormula f = bubble_formula(o);
      EXPECT_EQ(f.normalisation, BubbleNormalisation::IdleOverCompute);
      EXPECT_DOUBLE_EQ(f.value, double(p - 1) / m);
      const Simulation s = simulate(compile_schedule(o));
      EXPECT_NEAR(s.bubble(f.normalisation), f.value, 1e-12) << "p " << p << " m " << m;
      const Simulation u = simulate(compile_schedule(o), {.forward = 1, .backward_input = 2, .backward_weight = 1.5});
      EXPECT_NEAR(u.bubble(f.normalisation), f.value, 1e-12) << "p " << p << " m " << m;
      for (int r = 0; r < p; ++r) {
        EXPECT_LE(s.peak_live[r], p);
        EXPECT_EQ(s.peak_live[r], std::min(p - r, m)) << "p " << p << " m " << m << " rank " << r;
      }
    }
  }
}

TEST(PipelineSimulate, InterleavedMatchesItsFormulaExactly) {
  for (int p : kStages) {
    for (int v : {2, 3}) {
      for (int m : kMicrobatches) {
        if (m % p != 0) continue;  // the schedule's rule (PipelineSchedule.InvalidOptionsNameTheRule)
        const ScheduleOptions o{
            .kind = PipelineSchedule::Interleaved, .stages = p, .microbatches = m, .virtual_stages = v};
        const BubbleFormula f = bubble_formula(o);
        EXPECT_DOUBLE_EQ(f.value, double(p - 1) / (v * m));
        const Simulation s = simulate(compile_schedule(o));
        EXPECT_NEAR(s.bubble(f.normalisation), f.value, 1e-12) << "p " << p << " m " << m << " v " << v;
        // Against 1F1B on the same model: chunks take 1/v of a stage's time, the bubble shrinks v times.
        const Plan one_f_one_b =
            compile_schedule({.kind = PipelineSchedule::OneFOneB, .stages = p, .microbatches = m});
        const Simulation flat =
            simulate(one_f_one_b, {.forward = double(v), .backward_input = double(v), .backward_weight = double(v)});
        EXPECT_NEAR(s.makespan - flat.makespan, -(v - 1) * (p - 1) * 3.0, 1e-9) << "p " << p << " m " << m;
      }
    }
  }
}

TEST(PipelineSimulate, ZbH1MatchesItsFormulaExactly) {
  for (int p : kStages) {
    for (int m : kMicrobatches) {
      const ScheduleOptions o{.kind = PipelineSchedule::ZbH1, .stages = p, .microbatches = m};
      const BubbleFormula f = bubble_formula(o);
      if (m >= p) {  // the paper's (p-1)/(3m)
        EXPECT_DOUBLE_EQ(f.value, double(p - 1) / (3 * m));
      }
      const Simulation s = simulate(compile_schedule(o));
      EXPECT_NEAR(s.bubble(f.normalisation), f.value, 1e-12) << "p " << p << " m " << m;
      // Same peak as 1F1B's worst rank: min(p, m) on every rank.
      for (int r = 0; r < p; ++r) EXPECT_EQ(s.peak_live[r], std::min(p, m)) << "p " << p << " m " << m << " rank " << r;
      // A third of 1F1B's bubble (with B = Bi + W = 2F in both), for m >= p.
      const Simulation flat =
          simulate(compile_schedule({.kind = PipelineSchedule::OneFOneB, .stages = p, .microbatches = m}));
      if (m >= p) {
        EXPECT_NEAR(3 * s.bubble(f.normalisation), flat.bubble(BubbleNormalisation::IdleOverCompute), 1e-12);
      }
    }
  }
}

TEST(PipelineSimulate, RecomputationCostsAForwardAndHoldsOneActivation) {
  const ScheduleOptions o{.kind = PipelineSchedule::GPipe, .stages = 2, .microbatches = 4, .recompute = {true, true}};
  const Simulation s = simulate(compile_schedule(o));
  for (int r = 0; r < 2; ++r) {
    EXPECT_DOUBLE_EQ(s.busy[r], 4 * (1 + 1 + 2)) << "rank " << r;  // F, R, B
    EXPECT_EQ(s.peak_live[r], 1) << "rank " << r;                  // only between R and B
  }
}

TEST(PipelineSimulate, PeakLiveCountsUntilTheWeightGradient) {
  const std::vector<Action> actions = {
      {.op = Op::Forward, .microbatch = 0}, {.op = Op::Forward, .microbatch = 1},
      {.op = Op::BackwardInput, .microbatch = 0}, {.op = Op::Forward, .microbatch = 2},
      {.op = Op::BackwardWeight, .microbatch = 0}};
  EXPECT_EQ(peak_live_activations(actions), 3);
}

}  // namespace
}  // namespace loom::parallel::pipeline
