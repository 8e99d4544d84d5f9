// Hierarchical allreduce for several hosts with several ranks each:
//   1. within each host, a binomial-tree reduce to the host's leader (its
//      lowest rank), over the fast local transport;
//   2. among the leaders, a flat allreduce chosen by size like Auto does
//      (tree, halving-doubling or ring), so only one rank per host talks
//      across hosts and inter-host traffic shrinks by the ranks per host;
//   3. within each host, a binomial-tree broadcast from the leader.
// With host_of_rank empty (one host) it is a tree allreduce.
#include "loom/comm/collectives/collectives.h"

namespace loom::comm::detail {

void hierarchical_allreduce(const Call& call, const Communicator& c, Buffer buf, ReduceOp op, size_t seg,
                            uint32_t phase) {
  const Group local = make_group(local_ranks(c), c.rank);
  tree_reduce(call, local, buf, op, 0, seg, phase);
  if (is_leader(c)) {
    const Group leaders = make_group(host_leaders(c), c.rank);
    const size_t nbytes = buf.nbytes(buf.numel);
    const uint32_t leader_phase = phase + 0x100;
    if (nbytes <= kTreeMaxBytes) tree_allreduce(call, leaders, buf, op, seg, leader_phase);
    else if (nbytes <= kHalvingDoublingMaxBytes) halving_doubling_allreduce(call, leaders, buf, op, seg, leader_phase);
    else ring_allreduce(call, leaders, buf, op, seg, leader_phase);
  }
  tree_broadcast(call, local, buf, 0, seg, phase + 0x200);
}

}  // namespace loom::comm::detail
