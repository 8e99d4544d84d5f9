#include "loom/parallel/pipeline/executor.h"

#include <map>
#include <utility>

#include "loom/core/error.h"

namespace loom::parallel::pipeline {
namespace {

using Key = std::pair<int, int>;  // chunk, micro-batch

core::Tensor take(std::map<Key, core::Tensor>& held, Key key) {
  auto it = held.find(key);
  if (it == held.end()) return {};
  core::Tensor t = std::move(it->second);
  held.erase(it);
  return t;
}

}  // namespace

void StageWork::recompute(int chunk, int microbatch) {
  throw ConfigError(format("pipeline: this stage cannot recompute activations (chunk {}, micro-batch {}); turn "
                           "recompute off for chunk {}",
                           chunk, microbatch, chunk));
}

void run_rank(const Plan& plan, int rank, StageWork& work, StageLinks& links, Deadline deadline) {
  LOOM_CHECK_T(ConfigError, rank >= 0 && rank < static_cast<int>(plan.ranks.size()),
               "pipeline: rank {} is not one of the plan's {}", rank, plan.ranks.size());
  const int last = plan.num_chunks() - 1;
  // Inputs waiting for their action, outputs waiting for their send, by (chunk, micro-batch).
  std::map<Key, core::Tensor> activations_in, gradients_in, activations_out, gradients_out;
  // An output goes to the neighbouring chunk directly when it runs here, else to its send.
  auto hand_on_activation = [&](int c, int i, core::Tensor t) {
    if (c == last) return;
    if (plan.rank_of(c + 1) == rank) {
      activations_in[{c + 1, i}] = std::move(t);
    } else {
      activations_out[{c, i}] = std::move(t);
    }
  };
  auto hand_on_gradient = [&](int c, int i, core::Tensor t) {
    if (c == 0) return;
    if (plan.rank_of(c - 1) == rank) {
      gradients_in[{c - 1, i}] = std::move(t);
    } else {
      gradients_out[{c, i}] = std::move(t);
    }
  };
  for (const Action& a : plan.ranks[rank]) {
    const int c = a.chunk, i = a.microbatch;
    switch (a.op) {
      case Op::Forward: hand_on_activation(c, i, work.forward(c, i, take(activations_in, {c, i}))); break;
      case Op::Backward: hand_on_gradient(c, i, work.backward(c, i, take(gradients_in, {c, i}))); break;
      case Op::BackwardInput: hand_on_gradient(c, i, work.backward_input(c, i, take(gradients_in, {c, i}))); break;
      case Op::BackwardWeight: work.backward_weight(c, i); break;
      case Op::Recompute: work.recompute(c, i); break;
      case Op::SendActivation: links.send_activation(a.peer, c, i, take(activations_out, {c, i})); break;
      case Op::SendGradient: links.send_gradient(a.peer, c, i, take(gradients_out, {c, i})); break;
      case Op::RecvActivation: activations_in[{c, i}] = links.recv_activation(a.peer, c, i, deadline); break;
      case Op::RecvGradient: gradients_in[{c, i}] = links.recv_gradient(a.peer, c, i, deadline); break;
    }
  }
}

}  // namespace loom::parallel::pipeline
