// Pipeline schedules compiled into per-rank action lists (parallel/pipeline/schedule.h).
#include "loom/parallel/pipeline/schedule.h"

#include <gtest/gtest.h>

#include "loom/core/error.h"
#include "loom/io/pipeline_schedule.h"
#include "loom/parallel/pipeline/plan_check.h"

namespace loom::parallel::pipeline {
namespace {

using io::PipelineSchedule;

constexpr PipelineSchedule kAll[] = {PipelineSchedule::GPipe, PipelineSchedule::OneFOneB,
                                     PipelineSchedule::Interleaved, PipelineSchedule::ZbH1};

std::string compute_order(const std::vector<Action>& actions) {
  std::string s;
  for (const Action& a : actions) {
    if (!is_compute(a.op)) continue;
    s += format("{}{}{} ", name(a.op), a.microbatch, a.chunk == actions[0].chunk ? "" : format("c{}", a.chunk));
  }
  return s;
}

TEST(PipelineScheduleNames, RoundTripAndUnknown) {
  for (PipelineSchedule s : kAll) EXPECT_EQ(io::parse_pipeline_schedule(io::name(s)), s);
  EXPECT_EQ(io::pipeline_schedule_names(), (std::vector<std::string>{"gpipe", "1f1b", "interleaved", "zb-h1"}));
  EXPECT_FALSE(io::parse_pipeline_schedule("1F1B").has_value());
  EXPECT_FALSE(io::parse_pipeline_schedule("").has_value());
  EXPECT_EQ(format("{}", PipelineSchedule::ZbH1), "zb-h1");
  EXPECT_TRUE(io::splits_backward(PipelineSchedule::ZbH1));
  EXPECT_FALSE(io::splits_backward(PipelineSchedule::OneFOneB));
}

void expect_config_error(const ScheduleOptions& o, const std::string& needle) {
  try {
    compile_schedule(o);
    ADD_FAILURE() << "no error for " << needle;
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(PipelineSchedule, InvalidOptionsNameTheRule) {
  expect_config_error({.kind = PipelineSchedule::GPipe, .stages = 0}, "stages must be >= 1, got 0");
  expect_config_error({.kind = PipelineSchedule::OneFOneB, .stages = 2, .microbatches = 0},
                      "microbatches must be >= 1, got 0");
  expect_config_error({.kind = PipelineSchedule::Interleaved, .stages = 2, .microbatches = 2, .virtual_stages = 0},
                      "virtual_stages must be >= 1, got 0");
  expect_config_error({.kind = PipelineSchedule::Interleaved, .stages = 4, .microbatches = 6, .virtual_stages = 2},
                      "microbatches a multiple of stages (micro-batches pass the chunks in groups of p), got "
                      "microbatches = 6 with stages = 4");
  expect_config_error({.kind = PipelineSchedule::Interleaved, .stages = 4, .microbatches = 1, .virtual_stages = 2},
                      "got microbatches = 1 with stages = 4");
  expect_config_error({.kind = PipelineSchedule::Interleaved, .stages = 4, .microbatches = 4, .virtual_stages = 1},
                      "\"interleaved\" needs virtual_stages >= 2");
  expect_config_error({.kind = PipelineSchedule::GPipe, .stages = 2, .microbatches = 4, .recompute = {true}},
                      "recompute needs one flag per chunk (stages * virtual_stages = 2) or none, got 1");
  expect_config_error({.kind = PipelineSchedule::ZbH1, .stages = 4, .microbatches = 4, .virtual_stages = 2},
                      "schedule \"zb-h1\" runs one model chunk per rank (virtual_stages = 1), got virtual_stages = 2");
}

TEST(PipelineSchedule, GPipeOrder) {
  const Plan plan = compile_schedule({.kind = PipelineSchedule::GPipe, .stages = 2, .microbatches = 3});
  EXPECT_EQ(compute_order(plan.ranks[0]), "F0 F1 F2 B0 B1 B2 ");
  const std::vector<Action> rank1 = plan.ranks[1];
  ASSERT_GE(rank1.size(), 3u);
  EXPECT_EQ(rank1[0], (Action{.op = Op::RecvActivation, .microbatch = 0, .chunk = 1, .peer = 0}));
  EXPECT_EQ(to_string(rank1[0]), "recv act mb 0 chunk 1 from 0");
  EXPECT_EQ(to_string(plan.ranks[0][1]), "send act mb 0 chunk 0 to 1");
}

TEST(PipelineSchedule, OneFOneBWarmsUpByRank) {
  const Plan plan = compile_schedule({.kind = PipelineSchedule::OneFOneB, .stages = 4, .microbatches = 6});
  EXPECT_EQ(compute_order(plan.ranks[0]), "F0 F1 F2 F3 B0 F4 B1 F5 B2 B3 B4 B5 ");
  EXPECT_EQ(compute_order(plan.ranks[2]), "F0 F1 B0 F2 B1 F3 B2 F4 B3 F5 B4 B5 ");
  EXPECT_EQ(compute_order(plan.ranks[3]), "F0 B0 F1 B1 F2 B2 F3 B3 F4 B4 F5 B5 ");
  // Fewer micro-batches than stages: warm-up is cut to m.
  const Plan short_plan = compile_schedule({.kind = PipelineSchedule::OneFOneB, .stages = 4, .microbatches = 2});
  EXPECT_EQ(compute_order(short_plan.ranks[0]), "F0 F1 B0 B1 ");
}

TEST(PipelineSchedule, ZbH1DefersWeightGradientsByRank) {
  const Plan plan = compile_schedule({.kind = PipelineSchedule::ZbH1, .stages = 3, .microbatches = 4});
  EXPECT_EQ(compute_order(plan.ranks[0]), "F0 F1 F2 Bi0 W0 F3 Bi1 W1 Bi2 W2 Bi3 W3 ");
  EXPECT_EQ(compute_order(plan.ranks[1]), "F0 F1 Bi0 F2 Bi1 W0 F3 Bi2 W1 Bi3 W2 W3 ");
  EXPECT_EQ(compute_order(plan.ranks[2]), "F0 Bi0 F1 Bi1 F2 Bi2 W0 F3 Bi3 W1 W2 W3 ");
}

TEST(PipelineSchedule, RecomputeRunsWhileTheGradientTravels) {
  const Plan plan = compile_schedule(
      {.kind = PipelineSchedule::OneFOneB, .stages = 2, .microbatches = 2, .recompute = {true, false}});
  EXPECT_EQ(describe(plan),
            "rank 0: F mb 0 chunk 0, send act mb 0 chunk 0 to 1, F mb 1 chunk 0, send act mb 1 chunk 0 to 1, "
            "R mb 0 chunk 0, recv grad mb 0 chunk 0 from 1, B mb 0 chunk 0, "
            "R mb 1 chunk 0, recv grad mb 1 chunk 0 from 1, B mb 1 chunk 0\n"
            "rank 1: recv act mb 0 chunk 1 from 0, F mb 0 chunk 1, B mb 0 chunk 1, send grad mb 0 chunk 1 to 0, "
            "recv act mb 1 chunk 1 from 0, F mb 1 chunk 1, B mb 1 chunk 1, send grad mb 1 chunk 1 to 0\n");
}

TEST(PipelineSchedule, InterleavedPlacesChunkCOnRankCModP) {
  const Plan plan =
      compile_schedule({.kind = PipelineSchedule::Interleaved, .stages = 2, .microbatches = 4, .virtual_stages = 2});
  EXPECT_EQ(plan.num_chunks(), 4);
  for (int r = 0; r < 2; ++r) {
    for (const Action& a : plan.ranks[r]) EXPECT_EQ(plan.rank_of(a.chunk), r) << to_string(a);
  }
  // Rank 0: warm-up 2 (p-r-1) + (v-1) p = 4 forwards: micro-batches 0, 1 on chunk 0, then 0, 1 on chunk 2.
  EXPECT_EQ(compute_order(plan.ranks[0]), "F0 F1 F0c2 F1c2 F2 B0c2 F3 B1c2 F2c2 B0 F3c2 B1 B2c2 B3c2 B2 B3 ");
  // The last chunk's output and the first chunk's input gradient go nowhere; rank 1 -> rank 0 carries chunk 1 -> 2.
  for (const Action& a : plan.ranks[1]) {
    if (a.op == Op::SendActivation) {
      EXPECT_EQ(a.chunk, 1) << to_string(a);
    }
  }
}

TEST(PipelineSchedule, OneRankHandsOverLocally) {
  const Plan plan =
      compile_schedule({.kind = PipelineSchedule::Interleaved, .stages = 1, .microbatches = 3, .virtual_stages = 3});
  for (const Action& a : plan.ranks[0]) EXPECT_TRUE(is_compute(a.op)) << to_string(a);
  EXPECT_EQ(plan.ranks[0].size(), 18u);
}

// Every combination the options allow compiles into a plan check_plan accepts.
TEST(PipelineSchedule, EveryValidCombinationCompilesAndChecks) {
  int plans = 0;
  for (PipelineSchedule kind : kAll) {
    for (int p = 1; p <= 6; ++p) {
      for (int m = 1; m <= 13; ++m) {
        for (int v = 1; v <= 3; ++v) {
          const ScheduleOptions o{.kind = kind, .stages = p, .microbatches = m, .virtual_stages = v};
          bool valid = true;
          try {
            check_schedule_options(o);
          } catch (const ConfigError&) {
            valid = false;
          }
          if (!valid) continue;
          const Plan plan = compile_schedule(o);
          EXPECT_NO_THROW(check_plan(plan)) << io::name(kind) << " p " << p << " m " << m << " v " << v;
          ++plans;
        }
      }
    }
  }
  EXPECT_GT(plans, 200);
}

TEST(PipelineSchedule, DescribeListsEveryRank) {
  const std::string text =
      describe(compile_schedule({.kind = PipelineSchedule::GPipe, .stages = 2, .microbatches = 1}));
  EXPECT_EQ(text,
            "rank 0: F mb 0 chunk 0, send act mb 0 chunk 0 to 1, recv grad mb 0 chunk 0 from 1, B mb 0 chunk 0\n"
            "rank 1: recv act mb 0 chunk 1 from 0, F mb 0 chunk 1, B mb 0 chunk 1, send grad mb 0 chunk 1 to 0\n");
}

}  // namespace
}  // namespace loom::parallel::pipeline
