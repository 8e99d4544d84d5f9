// A group of some ranks of a transport, seen as a transport of its own: rank
// i of the group is rank ranks[i] of the parent. Collectives written for a
// whole job then run over a part of it (the data-parallel replicas of one
// pipeline stage, the ranks of one tensor-parallel group).
//
//   // given: std::shared_ptr<comm::Transport> job
//   // 4 ranks: 2 replicas x 2 stages; rank r's stage is r % 2
//   std::vector<int> replicas_of_my_stage = {job->rank() % 2, job->rank() % 2 + 2};
//   comm::Communicator c = comm::sub_communicator(comm::make_communicator(job), replicas_of_my_stage, /*channel=*/2);
//   Tensor g = ops::ones({4});
//   comm::allreduce(c, g);           // over the 2 replicas only
//
// Messages keep their tags: give each group's communicator its own channel
// (Communicator::channel) when groups can share a pair of ranks. The parent
// outlives the group; fail_peer and the timeouts are the parent's.
#pragma once

#include <memory>
#include <vector>

#include "loom/comm/collectives/communicator.h"
#include "loom/comm/transport/transport.h"

namespace loom::comm {

// ConfigError unless `ranks` are distinct ranks of `parent` that include its own.
std::shared_ptr<Transport> sub_transport(std::shared_ptr<Transport> parent, std::vector<int> ranks);

// A communicator over `ranks` of c's transport (in that order), with the
// hosts of those ranks and tags on `channel`; its collectives count from 0.
Communicator sub_communicator(const Communicator& c, const std::vector<int>& ranks, uint8_t channel);

}  // namespace loom::comm
