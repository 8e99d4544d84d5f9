// The shared-memory all-reduce: the lanes behind the "shm" algorithm of
// collectives.h (Algorithm::SharedMemory), which runs on one host in fewer
// passes over memory than a ring of messages can. The lanes live in the
// shared-memory transport's segment; the algorithm reaches them through
// ShmTransport::lanes(). The Transport interface knows nothing of them.
//
//   // given: comm::ShmTransport& t, int channel, std::byte* p, size_t n, DType dtype, comm::Deadline deadline
//   comm::shm::LaneAllreduce& lanes = t.lanes();
//   if (lanes.missing_lane(channel).empty() && !lanes.broken(channel)) {
//     lanes.run({.stream = channel, .data = p, .numel = n, .dtype = dtype, .op = comm::ReduceOp::Sum}, deadline);
//   }
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
// lane broken (a flag in the segment, so every rank sees it) and later calls
// on that lane are refused with CommError; Auto then picks an algorithm over
// messages (collectives.h).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>

#include "loom/comm/collectives/reduce_kernels.h"
#include "loom/comm/transport/shm_segment.h"
#include "loom/comm/transport/transport.h"
#include "loom/core/dtype.h"

namespace loom::comm::shm {

// One in-place all-reduce over every rank of the segment.
struct LaneCall {
  // Calls that may run at the same time (from communicators on different
  // channels) pass different streams; calls on one stream come in the same
  // order on every rank, as collectives do.
  int stream = 0;
  std::byte* data = nullptr;  // numel elements of dtype, contiguous; the result replaces them
  size_t numel = 0;
  core::DType dtype = core::DType::F32;
  ReduceOp op = ReduceOp::Sum;  // Sum, Max or Min (for Avg the caller sums, then divides)
};

class LaneAllreduce {
 public:
  // `check_declared(p)` throws PeerLostError when p was declared lost (cheap,
  // checked for every peer as a call starts); `check_alive(p)` also looks at
  // p's process and heartbeat (checked while waiting for p).
  LaneAllreduce(const Segment& segment, int rank, int size, std::function<void(int)> check_declared,
                std::function<void(int)> check_alive);

  // "" when the segment has a lane for `stream`; otherwise why not, for an
  // error message. Depends only on the transport's options, so every rank
  // gives the same answer.
  std::string missing_lane(int stream) const;
  // Whether a call on `stream`'s lane (which must exist) failed half way: the
  // lane is then out of use, on every rank.
  bool broken(int stream) const;

  // All-reduces `a` over all ranks, in place. CommError when the lane is
  // missing or broken, or the ranks' calls differ (numel, dtype, op);
  // TimeoutError at the deadline, PeerLostError when a peer is gone.
  void run(const LaneCall& a, const Deadline& deadline);

  // Rounds (blocks) this process has run on `stream`'s lane so far: tells
  // tests whether a call went through the lane.
  uint64_t rounds(int stream);

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
  void run_rounds(Lane& lane, const LaneCall& a, const Deadline& deadline);

  const Segment& segment_;
  int rank_;
  int size_;
  int spins_;  // busy polls before sleeping: few when ranks outnumber cores
  std::function<void(int)> check_declared_;
  std::function<void(int)> check_alive_;
  std::array<Lane, kLanes> lanes_;
};

}  // namespace loom::comm::shm
