#include "loom/parallel/step_vote.h"

#include "loom/ops/ops.h"

namespace loom::parallel {

train::StepVote allreduce_vote(comm::Communicator& comm, train::StepVote mine) {
  if (comm.size == 1) return mine;
  core::Tensor flags = core::Tensor::from_vector<float>({mine.stop ? 1.f : 0.f, mine.checkpoint ? 1.f : 0.f}, {2});
  comm::allreduce(comm, flags, {.op = comm::ReduceOp::Max});
  const float* f = flags.data<float>();
  return {.stop = f[0] > 0.f, .checkpoint = f[1] > 0.f};
}

}  // namespace loom::parallel
