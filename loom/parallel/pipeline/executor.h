// Runs one rank's share of a pipeline plan: the rank's actions in order,
// its compute on the rank's model chunks and its messages over links to the
// neighbouring ranks. The pipeline strategy implements both interfaces over
// its stage modules and a transport; tests use sleeping stages and
// in_process_links.h.
//
//   // given: parallel::pipeline::StageWork& work, parallel::pipeline::StageLinks& links, int rank
//   using namespace parallel::pipeline;
//   Plan plan = compile_schedule({.kind = io::PipelineSchedule::ZbH1, .stages = 4, .microbatches = 8});
//   run_rank(plan, rank, work, links, std::chrono::steady_clock::now() + 30s);  // TimeoutError naming the peer
//
// Payloads are tensors the executor only hands on: a Forward gets the
// activation received for (chunk, micro-batch), or the previous chunk's
// output when that chunk is on this rank, and an undefined Tensor on chunk 0
// (the stage reads its own micro-batch); what it returns goes to the next
// chunk (dropped on the last chunk, whose stage computes the loss). Backward
// and BackwardInput get the output gradient the same way (undefined on the
// last chunk: the stage starts from its loss) and return the input gradient
// (dropped on chunk 0). BackwardWeight takes and gives nothing: the stage
// keeps what it needs from BackwardInput. A tensor is held only until the
// action that uses it.
#pragma once

#include <chrono>

#include "loom/core/tensor.h"
#include "loom/parallel/pipeline/schedule.h"

namespace loom::parallel::pipeline {

using Deadline = std::chrono::steady_clock::time_point;

// The compute of one rank's chunks. `chunk` is the global virtual stage.
class StageWork {
 public:
  virtual ~StageWork() = default;
  virtual core::Tensor forward(int chunk, int microbatch, core::Tensor input) = 0;
  virtual core::Tensor backward(int chunk, int microbatch, core::Tensor output_grad) = 0;
  virtual core::Tensor backward_input(int chunk, int microbatch, core::Tensor output_grad) = 0;
  virtual void backward_weight(int chunk, int microbatch) = 0;
  // Chunks with recomputation on (ScheduleOptions::recompute): forward kept
  // only its input; rebuild what backward needs. By default a ConfigError:
  // a stage that cannot recompute says so instead of running without it.
  virtual void recompute(int chunk, int microbatch);
};

// Messages to and from the neighbouring ranks. `chunk` is always the
// caller's own chunk, as in its action: a send names the chunk that made the
// payload, a receive the chunk that will use it. Sends are posted and
// return; receives block until the message or the deadline (TimeoutError
// naming the peer, the micro-batch and the chunk).
class StageLinks {
 public:
  virtual ~StageLinks() = default;
  virtual void send_activation(int peer, int chunk, int microbatch, core::Tensor activation) = 0;
  virtual void send_gradient(int peer, int chunk, int microbatch, core::Tensor gradient) = 0;
  virtual core::Tensor recv_activation(int peer, int chunk, int microbatch, Deadline deadline) = 0;
  virtual core::Tensor recv_gradient(int peer, int chunk, int microbatch, Deadline deadline) = 0;
};

// Walks plan.ranks[rank]. The plan must have passed check_plan (compile_schedule's do).
void run_rank(const Plan& plan, int rank, StageWork& work, StageLinks& links, Deadline deadline);

}  // namespace loom::parallel::pipeline
