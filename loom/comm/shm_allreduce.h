// Internal to the shared-memory transport: its all-reduce
// (Transport::allreduce_in_place), which runs on one host in fewer passes
// over memory than a ring of messages can.
//
//   // given: const comm::shm::Segment& segment, int rank, int size, std::function<void(int)> check_alive, std::byte* p, size_t n, DType t, comm::ReduceOp op, comm::Deadline deadline
//   using namespace comm;
//   shm::LaneAllreduce ar(segment, rank, size, [&](int peer) { check_alive(peer); });
//   if (!ar.run({.stream = 0, .data = p, .numel = n, .dtype = t, .op = op}, deadline)) { /* not offered */ }
//
// The buffer is processed in rounds of one block (ShmOptions::
// allreduce_block_nbytes). In round g every rank
//   1. stages its block into its own staging slot g % 2 of the lane, all but
//      the slice it reduces itself (slice r of the block: reduce_scatter_range);
//   2. waits until every rank has staged round g;
//   3. reduces its slice from all ranks' slots (its own slice straight from
//      its buffer) in one pass (reduce_many), into the lane's result block
//      g % 2 and into its own buffer;
//   4. copies the other ranks' slices of round g - 1 out of result block
//      (g - 1) % 2 into its buffer.
// Every rank thus reads its buffer once and writes it once, and the shared
// blocks stay in cache; per byte of buffer a rank moves 4(p-1)/p + 1 + 2/p
// bytes, against 11(p-1)/p for the ring over the transport's message rings
// (copy in, copy out, reduce; then copy in, copy out), and it waits once per
// block rather than at each of the ring's 2(p-1) steps. Only step 2 waits: having staged round g, a rank has finished
// reducing round g - 1 and copying out round g - 2, so two staging slots and
// two result blocks per lane are enough, and the round counter simply
// continues from one call to the next (every rank runs the same rounds). The
// end of a call waits until every rank has reduced its last round.
//
// A lane serves one stream at a time (a mutex orders this process's threads;
// ranks run a stream's calls in the same order). A call that fails half way
// (deadline, lost peer) leaves the round counters out of step, so it marks its
// lane broken and later calls on that lane are refused (run() returns false:
// the caller falls back to messages).
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <mutex>

#include "loom/comm/shm_segment.h"
#include "loom/comm/transport.h"

namespace loom::comm::shm {

class LaneAllreduce {
 public:
  // `check_peer(p)` throws PeerLostError when p is known to be gone.
  LaneAllreduce(const Segment& segment, int rank, int size, std::function<void(int)> check_peer);

  // False when the segment has no lanes, or the stream or the lane cannot take the call.
  bool run(const AllreduceInPlace& a, const Deadline& deadline);

 private:
  struct Lane {
    LaneHeader* header = nullptr;
    RankProgress* progress = nullptr;  // one per rank
    std::byte* blocks = nullptr;
    std::timed_mutex mu;  // this process's calls on the lane, one at a time
    uint64_t rounds = 0;  // rounds run so far, the same on every rank
  };
  std::byte* staging(const Lane& lane, int rank, uint64_t round) const;
  std::byte* result(const Lane& lane, uint64_t round) const;
  // Waits until every rank's `field` has reached `target`.
  void wait_all(Lane& lane, std::atomic<uint64_t> RankProgress::*field, uint64_t target, const Deadline& deadline,
                const char* what) const;
  void publish(Lane& lane, std::atomic<uint64_t> RankProgress::*field, uint64_t value) const;
  // CommError unless every rank's call reduces numel elements of the same kind (dtype << 8 | op).
  void check_same_call(const Lane& lane, size_t numel, uint32_t kind) const;
  void run_rounds(Lane& lane, const AllreduceInPlace& a, const Deadline& deadline);

  const Segment& segment_;
  int rank_;
  int size_;
  int spins_;  // busy polls before sleeping: few when ranks outnumber cores
  std::function<void(int)> check_peer_;
  std::array<Lane, kLanes> lanes_;
};

}  // namespace loom::comm::shm
