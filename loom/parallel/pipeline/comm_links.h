// Pipeline links between processes: activations and gradients as
// point-to-point messages of a comm::Communicator (any transport: shared
// memory on one host, ZeroMQ between hosts).
//
//   // given: comm::Communicator& c, parallel::pipeline::StageWork& work, const parallel::pipeline::Plan& plan
//   using namespace parallel::pipeline;
//   std::vector<int> stage_ranks = {0, 1, 2, 3};   // pipeline rank i is communicator rank stage_ranks[i]
//   CommLinks links(c, stage_ranks);
//   run_rank(plan, 1, work, links, std::chrono::steady_clock::now() + std::chrono::seconds(60));
//
// A message is a fixed header (dtype, rank, up to 8 dimensions) and the
// tensor's bytes, both under one tag made of (activation or gradient, the
// chunk that consumes it, the micro-batch), so the receiver knows the size
// before it takes the bytes, and messages for different chunks and
// micro-batches never mix (a transport keeps one tag's messages in order).
// A receive past its deadline is a TimeoutError naming the peer, the chunk
// and the micro-batch; a lost peer is the transport's PeerLostError.
#pragma once

#include <vector>

#include "loom/comm/collectives/communicator.h"
#include "loom/parallel/pipeline/executor.h"

namespace loom::parallel::pipeline {

class CommLinks final : public StageLinks {
 public:
  // `stage_ranks[i]`: the communicator rank of pipeline rank i (peers in the
  // plan are pipeline ranks). The communicator outlives the links.
  CommLinks(comm::Communicator& comm, std::vector<int> stage_ranks);

  void send_activation(int peer, int chunk, int microbatch, core::Tensor activation) override;
  void send_gradient(int peer, int chunk, int microbatch, core::Tensor gradient) override;
  core::Tensor recv_activation(int peer, int chunk, int microbatch, Deadline deadline) override;
  core::Tensor recv_gradient(int peer, int chunk, int microbatch, Deadline deadline) override;

 private:
  void send(int peer, bool gradient, int to_chunk, int microbatch, const core::Tensor& t);
  core::Tensor recv(int peer, bool gradient, int chunk, int microbatch, Deadline deadline);

  comm::Communicator& comm_;
  std::vector<int> stage_ranks_;
};

}  // namespace loom::parallel::pipeline
