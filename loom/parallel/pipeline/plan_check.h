// Proves a pipeline plan runs before any rank starts it: every micro-batch
// passes every chunk forward and back once, in dependency order, every send
// meets its receive, and no rank waits forever.
//
//   // given: parallel::pipeline::Plan plan
//   parallel::pipeline::check_plan(plan);  // ConfigError: "pipeline plan deadlocks: rank 1 blocks at action 0 (...)"
//
// The rules, each failure a ConfigError that names the rank, the action's
// index in the rank's list and the action (schedule.h has the action model):
// - actions name micro-batches [0, m) and chunks of their own rank; sends and
//   receives name the rank of the neighbouring chunk, which is another rank
//   (neighbours on one rank hand over without messages);
// - each (micro-batch, chunk) has one Forward and either one Backward or one
//   BackwardInput and one BackwardWeight, in the order F, B (or Bi), W; a
//   chunk with recomputation on has one Recompute between F and B (or Bi),
//   the others none;
// - its inputs come first: the activation (a RecvActivation, or the
//   previous chunk's F on the same rank) before F, the output gradient (a
//   RecvGradient, or the next chunk's B/Bi on the same rank) before B/Bi; its
//   outputs are sent once, after the action that made them;
// - messages travel on FIFO channels, one per (sender, receiver, activation
//   or gradient): the receiver's receives on a channel must list the
//   sender's sends in the same order;
// - executed with sends that never block (buffered) and receives that block,
//   every rank reaches the end of its list. A plan that stops names each
//   rank that blocks, the action index and the message it waits for.
#pragma once

#include "loom/parallel/pipeline/schedule.h"

namespace loom::parallel::pipeline {

void check_plan(const Plan& plan);

}  // namespace loom::parallel::pipeline
