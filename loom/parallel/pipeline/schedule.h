// Pipeline schedules compiled into per-rank action lists: what each rank of
// a p-stage pipeline does, in order, for the m micro-batches of one step.
//
//   using namespace parallel::pipeline;
//   ScheduleOptions o{.kind = io::PipelineSchedule::Interleaved, .stages = 4, .microbatches = 8, .virtual_stages = 2};
//   Plan plan = compile_schedule(o);            // ConfigError naming the broken rule; checked by check_plan
//   for (const Action& a : plan.ranks[1]) {
//     std::string line = to_string(a);          // "F mb 0 chunk 1", "send act mb 0 chunk 1 to 2"
//   }
//
// The model is cut into S = p * v consecutive virtual stages ("chunks");
// chunk c runs on rank c mod p, so with v = 1 rank r holds stage r and with
// interleaving rank r holds chunks r, r + p, r + 2p, ... (Megatron-LM's
// layout). An action's `chunk` is always a chunk of the rank whose list holds
// it: a SendActivation names the chunk whose output it sends, a
// RecvActivation the chunk whose input it receives (chunk - 1 sent it); a
// SendGradient the chunk whose input gradient it sends, a RecvGradient the
// chunk whose output gradient it receives (chunk + 1 sent it). Neighbouring
// chunks on one rank (p = 1) hand over locally, with no send or receive.
// Sends come right after the action that produced their payload, receives
// right before the action that consumes it. A chunk with recomputation on
// gets a Recompute right before its backward's gradient receive (or its
// backward, on the last chunk), so it runs while the gradient travels.
//
// The orders, for m micro-batches on rank r of p:
//   gpipe        F0 .. F(m-1), then B0 .. B(m-1)
//   1f1b         min(p-r-1, m) warm-up forwards, then F(i+w) B(i) pairs, then the remaining backwards
//   interleaved  Megatron-LM's: (p-r-1)*2 + (v-1)*p warm-up forwards over the chunks, then 1F1B; needs m a
//                multiple of p (micro-batches go through the chunks in groups of p)
//   zb-h1        1f1b's order with B split into BackwardInput (Bi) and BackwardWeight (W); rank r holds back
//                r weight gradients (W(i - r) follows Bi(i)) and runs the rest at the end, filling the
//                cool-down bubble. W starts later the shorter the warm-up (Qi et al.'s ZB-H1), so every
//                rank has min(p, m) micro-batches live at most: 1F1B's peak, on its first rank
// compile_schedule() checks its result with check_plan (plan_check.h), so a
// plan it returns cannot deadlock.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "loom/io/pipeline_schedule.h"

namespace loom::parallel::pipeline {

struct ScheduleOptions {
  io::PipelineSchedule kind = io::PipelineSchedule::OneFOneB;
  int stages = 1;          // p: ranks in the pipeline
  int microbatches = 1;    // m: micro-batches per step
  int virtual_stages = 1;  // v: model chunks per rank (interleaved: >= 2; the others: 1)
  // Chunks that keep only their input after F and recompute the rest right
  // before their backward (activation recomputation): empty for none, else
  // one flag per chunk (p * v).
  std::vector<bool> recompute;
};

enum class Op : uint8_t {
  Forward,
  Backward,        // input and weight gradients in one action
  BackwardInput,   // split backward (zb-h1): the input gradient, which the previous stage waits for
  BackwardWeight,  // ... and the weight gradient, which nobody waits for
  Recompute,       // the forward again, from the kept input, for the backward that follows
  SendActivation,  // posted, never blocks
  RecvActivation,  // blocks until the matching send's payload arrives
  SendGradient,
  RecvGradient,
};
std::string_view name(Op op);  // "F", "B", "Bi", "W", "R", "send act", "recv act", "send grad", "recv grad"

inline bool is_compute(Op op) { return op <= Op::Recompute; }
inline bool is_send(Op op) { return op == Op::SendActivation || op == Op::SendGradient; }
inline bool is_recv(Op op) { return op == Op::RecvActivation || op == Op::RecvGradient; }

struct Action {
  Op op = Op::Forward;
  int microbatch = 0;
  int chunk = 0;  // the global virtual stage, one of this rank's chunks
  int peer = -1;  // the other rank of a send or receive; -1 for compute
  bool operator==(const Action&) const = default;
};
// "F mb 3 chunk 5", "recv grad mb 3 chunk 5 from 2".
std::string to_string(const Action& action);

struct Plan {
  ScheduleOptions options;
  std::vector<std::vector<Action>> ranks;  // ranks[r]: rank r's actions in order

  int num_chunks() const { return options.stages * options.virtual_stages; }
  int rank_of(int chunk) const { return chunk % options.stages; }
  bool recomputes(int chunk) const { return !options.recompute.empty() && options.recompute[chunk]; }
};

// ConfigError naming the rule and the values: p >= 1, m >= 1, v >= 1;
// v = 1 for gpipe, 1f1b and zb-h1; v >= 2 and m a multiple of p for interleaved;
// `recompute` empty or one flag per chunk.
void check_schedule_options(const ScheduleOptions& options);
Plan compile_schedule(const ScheduleOptions& options);
// One line a rank: "rank 0: F mb 0 chunk 0, send act mb 0 chunk 0 to 1, ..." (`loom launch --describe`).
std::string describe(const Plan& plan);

}  // namespace loom::parallel::pipeline
