// Strategy::vote for ranks joined by a communicator (all-reduce, pipeline):
// one all-reduce (max) of the two flags, so every rank gets the OR of all.
//
//   // given: comm::Communicator comm, bool got_signal
//   train::StepVote all = parallel::allreduce_vote(comm, {.stop = got_signal});
//   if (all.stop) { /* every rank stops after this same step */ }
//
// A tiny message (8 bytes: the tree algorithm), after each step's own
// collectives are done, on the communicator's channel for barriers.
#pragma once

#include "loom/comm/collectives/collectives.h"
#include "loom/train/strategy.h"

namespace loom::parallel {

train::StepVote allreduce_vote(comm::Communicator& comm, train::StepVote mine);

}  // namespace loom::parallel
