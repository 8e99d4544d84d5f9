// Step-boundary agreement among parameter-server workers, through the job
// coordinator: which step every worker stops (or checkpoints) at, whichever
// worker asked first. (The all-reduce and pipeline strategies agree with one
// all-reduce per step, parallel/step_vote.h; parameter-server workers have
// no collective of their own, so they keep a log of agreed events on the
// coordinator.)
//
//   // given: comm::CoordinatorClient& client, int64_t staleness, bool got_signal, int64_t steps_done
//   ps::StepAgreement agreement(client, {.margin = 1 + staleness});
//   uint32_t act = agreement.vote(got_signal ? 1u : 0u, steps_done);   // after every step, every worker
//   if (act & 1u) { /* every worker stops after this same step */ }
//
// Event n of the job is the coordinator key "loom.vote.<n>" holding
// "<bits>@<step>". A worker with a wish (bits != 0) and no event pending
// proposes event n as (its bits, its steps + margin + 1); the first proposal
// wins (CoordinatorClient::propose) and every worker learns the winner by
// polling the key once per step (try_get). The poll runs beside the next
// step, on a thread of the agreement's own, and vote() takes its answer at
// the boundary after (hence the + 1): the round trip to the coordinator is
// not on the step's path. A worker acts on event n at its first boundary at or past
// the event's step, then waits for event n + 1. A wish that lost to
// another event is the caller's to repeat (the Trainer asks again after
// every step until it is served).
//
// The end: a worker done with its steps calls finish() until it returns
// nothing, acting on each event it returns. It acts on the events the
// others may still act on (their step is within its own steps), then
// proposes an end marker: once the marker wins, no worker proposes again,
// so none waits for a worker that has left. (With dist_sync every worker
// has the same steps; with dist_async a late stop request may meet the
// marker and be dropped: the run is ending anyway.)
//
// Why every worker acts at the same step: with dist_sync, no worker finishes
// step s + 1 before every worker pushed step s + 1, which the proposer does
// only after its proposal at boundary s; so the poll every worker starts at
// boundary s + 1 finds the proposal, and its answer is read at boundary
// s + 2 = the event's step: none is past it, none misses it. With dist_ssp a
// worker runs at most `staleness` steps ahead, hence margin 1 + staleness.
// With dist_async there is no common step: each worker acts at its first
// boundary past the event's step (in its own step count).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "loom/comm/rendezvous/coordinator.h"

namespace loom::ps {

struct StepAgreementOptions {
  int64_t margin = 1;  // how many steps another worker may be ahead of the proposer, plus one (>= 1)
  std::chrono::milliseconds timeout{30000};  // one coordinator call
};

class StepAgreement {
 public:
  StepAgreement(comm::CoordinatorClient& client, StepAgreementOptions options = {});
  ~StepAgreement();  // waits for a poll in flight (at most the timeout)
  StepAgreement(const StepAgreement&) = delete;
  StepAgreement& operator=(const StepAgreement&) = delete;

  // After every step, on every worker: `wish` (bits; 0 for none), `steps`
  // done by this worker. Returns the bits of the event to act on at this
  // boundary (0: none).
  uint32_t vote(uint32_t wish, int64_t steps);
  // After the last step: the bits of the next event to act on now, or
  // nullopt when no event is left for this worker (see above).
  std::optional<uint32_t> finish(int64_t steps);

 private:
  struct Event {
    uint32_t bits = 0;  // 0: the end marker
    int64_t step = 0;
  };
  Event parse(const std::string& value) const;
  void learn();         // pending_ from the coordinator, if event next_ exists
  void collect();        // pending_ from the poll started at the previous boundary, if any
  void start_polling();  // unless an event is pending: the poll for event next_, answered at the next boundary
  void poll_loop();      // the poller thread: one try_get per request

  comm::CoordinatorClient& client_;
  StepAgreementOptions options_;
  int64_t next_ = 0;             // the event this worker waits for
  std::optional<Event> pending_;  // event next_, once known

  // The poll (started at the first boundary).
  std::thread poller_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool polling_ = false;            // a poll was asked for and its answer not read (vote's side only)
  std::optional<std::string> ask_;  // the key the poller is to read next
  bool answered_ = false;
  std::optional<std::string> answer_;
  std::exception_ptr error_;
  bool stopping_ = false;
};

}  // namespace loom::ps
