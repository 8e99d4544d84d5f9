// check_plan (parallel/pipeline/plan_check.h) on hand-broken plans: it must reject each, naming what is wrong.
#include "loom/parallel/pipeline/plan_check.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <functional>

#include "loom/core/error.h"

namespace loom::parallel::pipeline {
namespace {

using io::PipelineSchedule;

Plan gpipe_2x1() { return compile_schedule({.kind = PipelineSchedule::GPipe, .stages = 2, .microbatches = 1}); }

size_t index_of(const std::vector<Action>& actions, Op op, int microbatch) {
  for (size_t k = 0; k < actions.size(); ++k) {
    if (actions[k].op == op && actions[k].microbatch == microbatch) return k;
  }
  ADD_FAILURE() << "no " << name(op) << " for micro-batch " << microbatch;
  return 0;
}

void expect_rejected(const Plan& plan, const std::string& needle) {
  try {
    check_plan(plan);
    ADD_FAILURE() << "accepted a plan that should fail with: " << needle << "\n" << describe(plan);
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(PipelineCheck, AcceptsTheCompiledPlan) { EXPECT_NO_THROW(check_plan(gpipe_2x1())); }

TEST(PipelineCheck, MissingBackward) {
  Plan plan = gpipe_2x1();
  auto& r1 = plan.ranks[1];
  r1.erase(r1.begin() + static_cast<long>(index_of(r1, Op::Backward, 0)));
  expect_rejected(plan, "micro-batch 0 on chunk 1 (rank 1) has no backward");
}

TEST(PipelineCheck, DuplicateForward) {
  Plan plan = compile_schedule({.kind = PipelineSchedule::OneFOneB, .stages = 2, .microbatches = 2});
  plan.ranks[0].insert(plan.ranks[0].begin(), plan.ranks[0][0]);
  expect_rejected(plan, "rank 0 action 1 (F mb 0 chunk 0) repeats action 0 of the same rank");
}

TEST(PipelineCheck, BackwardBeforeForward) {
  Plan plan = compile_schedule({.kind = PipelineSchedule::GPipe, .stages = 1, .microbatches = 2});
  std::swap(plan.ranks[0][0], plan.ranks[0][2]);  // B0 F1 F0 B1
  expect_rejected(plan,
                  "micro-batch 0 on chunk 0 (rank 0): its backward (action 0) runs before its forward (action 2)");
}

TEST(PipelineCheck, WeightGradientBeforeInputGradient) {
  Plan plan = compile_schedule({.kind = PipelineSchedule::ZbH1, .stages = 1, .microbatches = 1});
  ASSERT_EQ(plan.ranks[0].size(), 3u);  // F Bi W
  std::swap(plan.ranks[0][1], plan.ranks[0][2]);
  expect_rejected(plan, "its weight gradient (action 1) runs before its input gradient (action 2)");
}

TEST(PipelineCheck, SplitBackwardMissingItsWeightGradient) {
  Plan plan = compile_schedule({.kind = PipelineSchedule::ZbH1, .stages = 1, .microbatches = 1});
  plan.ranks[0].pop_back();
  expect_rejected(plan, "has a split backward without its weight gradient (W)");
}

TEST(PipelineCheck, RecomputeMissingOrUnasked) {
  Plan plan = compile_schedule({.kind = PipelineSchedule::GPipe, .stages = 1, .microbatches = 1, .recompute = {true}});
  ASSERT_EQ(plan.ranks[0].size(), 3u);  // F R B
  Plan without = plan;
  without.ranks[0].erase(without.ranks[0].begin() + 1);
  expect_rejected(without, "micro-batch 0 on chunk 0 (rank 0) recomputes its activations, but has no Recompute "
                           "between its forward (action 0) and its backward (action 1)");
  Plan after = plan;
  std::swap(after.ranks[0][1], after.ranks[0][2]);
  expect_rejected(after, "has no Recompute between its forward (action 0) and its backward (action 1)");
  Plan unasked = plan;
  unasked.options.recompute.clear();
  expect_rejected(unasked, "keeps its activations (recomputation off), but action 1 recomputes them");
}

TEST(PipelineCheck, ForwardBeforeItsReceive) {
  Plan plan = gpipe_2x1();
  std::swap(plan.ranks[1][0], plan.ranks[1][1]);  // F before recv act
  expect_rejected(plan, "its forward (action 0) has no receive of its input activation before it");
}

TEST(PipelineCheck, MissingSend) {
  Plan plan = gpipe_2x1();
  auto& r0 = plan.ranks[0];
  r0.erase(r0.begin() + static_cast<long>(index_of(r0, Op::SendActivation, 0)));
  expect_rejected(plan, "micro-batch 0 on chunk 0 (rank 0): no send of its activation after its forward");
}

TEST(PipelineCheck, WrongPeer) {
  Plan plan = compile_schedule({.kind = PipelineSchedule::GPipe, .stages = 3, .microbatches = 1});
  plan.ranks[0][1].peer = 2;
  expect_rejected(plan, "rank 0 action 1 (send act mb 0 chunk 0 to 2) names peer 2, but the neighbouring chunk "
                        "runs on rank 1");
}

TEST(PipelineCheck, ChunkOfAnotherRank) {
  Plan plan = gpipe_2x1();
  plan.ranks[0][0].chunk = 1;
  expect_rejected(plan, "names chunk 1, not one of rank 0's");
}

TEST(PipelineCheck, MicrobatchOutOfRange) {
  Plan plan = gpipe_2x1();
  plan.ranks[0][0].microbatch = 1;
  expect_rejected(plan, "rank 0 action 0 (F mb 1 chunk 0) names micro-batch 1 of 1");
}

TEST(PipelineCheck, SendOnALocalHandOver) {
  Plan plan =
      compile_schedule({.kind = PipelineSchedule::Interleaved, .stages = 1, .microbatches = 1, .virtual_stages = 2});
  plan.ranks[0].insert(plan.ranks[0].begin() + 1,
                       Action{.op = Op::SendActivation, .microbatch = 0, .chunk = 0, .peer = 0});
  expect_rejected(plan, "has no remote neighbour to talk to");
}

TEST(PipelineCheck, ChannelOutOfOrder) {
  Plan plan = compile_schedule({.kind = PipelineSchedule::GPipe, .stages = 2, .microbatches = 2});
  // Rank 1 receives micro-batch 1 first: each forward still follows its receive.
  auto& r1 = plan.ranks[1];
  const size_t recv0 = index_of(r1, Op::RecvActivation, 0), f0 = index_of(r1, Op::Forward, 0);
  const size_t recv1 = index_of(r1, Op::RecvActivation, 1), f1 = index_of(r1, Op::Forward, 1);
  std::swap(r1[recv0], r1[recv1]);
  std::swap(r1[f0], r1[f1]);
  expect_rejected(plan, "the activation channel rank 0 -> rank 1 is out of order: message 0 is rank 0 action 1 "
                        "(send act mb 0 chunk 0 to 1) but rank 1 action 0 (recv act mb 1 chunk 1 from 0) expects it");
}

TEST(PipelineCheck, DeadlockNamesEachBlockedRank) {
  Plan plan = gpipe_2x1();
  // Rank 0 waits for the gradient before sending the activation rank 1 needs to make it.
  auto& r0 = plan.ranks[0];  // F, send act, recv grad, B
  std::swap(r0[1], r0[2]);
  expect_rejected(plan, "pipeline plan deadlocks: rank 0 action 1 (recv grad mb 0 chunk 0 from 1) waits for its "
                        "message; rank 1 action 0 (recv act mb 0 chunk 1 from 0) waits for its message");
}

TEST(PipelineCheck, DeadlockAcrossFourRanks) {
  Plan plan = compile_schedule({.kind = PipelineSchedule::OneFOneB, .stages = 4, .microbatches = 8});
  // Rank 1 takes micro-batch 0's backward before micro-batch 1's forward (1F1B with warm-up 1 instead of 2):
  // the channels stay in order, but rank 1 now waits for a gradient rank 3 can only make from
  // forwards rank 2 waits on. Find the recv grad of mb 0 and move it (with its B and send) before F1's receive.
  auto& r1 = plan.ranks[1];
  const size_t recv_f1 = index_of(r1, Op::RecvActivation, 1);
  const size_t recv_g0 = index_of(r1, Op::RecvGradient, 0);
  std::rotate(r1.begin() + static_cast<long>(recv_f1), r1.begin() + static_cast<long>(recv_g0),
              r1.begin() + static_cast<long>(recv_g0) + 3);
  expect_rejected(plan, "pipeline plan deadlocks: rank 0 action");
}

TEST(PipelineCheck, SecondReceiveOfOneGradient) {
  Plan plan = gpipe_2x1();
  plan.ranks[0].push_back({.op = Op::RecvGradient, .microbatch = 0, .chunk = 0, .peer = 1});
  expect_rejected(plan, "rank 0 action 4 (recv grad mb 0 chunk 0 from 1) repeats action 2");
}

}  // namespace
}  // namespace loom::parallel::pipeline
