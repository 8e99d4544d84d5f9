// Pipelined ring allreduce: a reduce-scatter pass then an all-gather pass
// around the ring, each n-1 steps; every rank sends and receives 2(n-1)/n of
// the buffer in total, which is optimal for large messages.
//
// The buffer is cut into n chunks (reduce_scatter_range). In step s of a pass
// rank i sends chunk (i + start - s) to its right neighbour and receives
// chunk (i + start - s - 1) from its left one. A chunk is further cut into
// segments of at most chunk_bytes, and a segment received in step s is
// forwarded (as step s+1's send) right after it has been reduced, so a rank
// works on segment k while segment k+1 is still on the wire. The last step of
// the reduce-scatter pass forwards straight into the all-gather pass, which
// starts from the chunk the reduce-scatter completed. A rank runs at most
// kSegmentsInFlight segments ahead of its receives, which bounds the bytes in
// flight per link (transports with flow control never block the ring).
// It runs over messages on every transport; the shared-memory schedule is an
// algorithm of its own (allreduce_shm.cc).
#include <algorithm>
#include <span>
#include <vector>

#include "loom/comm/collectives/collectives.h"

namespace loom::comm::detail {

namespace {

struct RingPass {
  bool reduce;     // reduce received data into the chunk, or just store it
  int start;       // chunk offset: step 0 sends chunk (i + start)
  uint32_t phase;  // tag phase of the pass
};

struct Piece {
  ElementRange range;
  uint32_t phase;
  bool reduce = false;  // (receives) reduce into the buffer, or store
};

// Runs consecutive passes; pass p+1 must start where pass p ended
// (start_{p+1} == start_p + 1), so its first sends are pass p's last forwards.
void run_ring(const Call& call, const Group& g, Buffer buf, ReduceOp op, size_t seg,
              std::span<const RingPass> passes) {
  const int n = g.size();
  if (n == 1 || buf.numel == 0) return;
  const int i = g.me;
  const int right = g.at(i + 1), left = g.at(i - 1);
  auto chunk = [&](int index) { return reduce_scatter_range(buf.numel, n, ((index % n) + n) % n); };

  // The schedule: what this rank receives, in order, and what it sends: the
  // first chunk's segments, then each received segment that goes on. The
  // right neighbour's receives are exactly this rank's sends, in order.
  std::vector<Piece> sends, recvs;
  const ElementRange first = chunk(i + passes[0].start);
  for (size_t k = 0; k < num_segments(first.numel, seg); ++k) {
    sends.push_back({segment_of(first, seg, k), passes[0].phase});
  }
  const size_t initial_sends = sends.size();
  bool any_reduce = false;
  for (size_t p = 0; p < passes.size(); ++p) {
    const RingPass& pass = passes[p];
    any_reduce |= pass.reduce;
    for (int s = 0; s < n - 1; ++s) {
      const bool last_step = s == n - 2;
      const bool forward = !last_step || p + 1 < passes.size();
      const uint32_t forward_phase = last_step && forward ? passes[p + 1].phase : pass.phase;
      const ElementRange c = chunk(i + pass.start - s - 1);
      for (size_t k = 0; k < num_segments(c.numel, seg); ++k) {
        recvs.push_back({segment_of(c, seg, k), pass.phase, pass.reduce});
        if (forward) sends.push_back({recvs.back().range, forward_phase});
      }
    }
  }

  const size_t max_seg = std::min(seg, chunk(0).numel);  // chunk 0 is the longest
  core::Tensor tmp_holder = any_reduce ? scratch(buf.nbytes(max_seg)) : core::Tensor();
  auto* tmp = any_reduce ? static_cast<std::byte*>(tmp_holder.data_ptr()) : nullptr;

  // Send what is ready, at most kSegmentsInFlight ahead of the receives (a
  // forward is ready once its segment has been received), then receive one.
  size_t sent = 0, received = 0;
  while (sent < sends.size() || received < recvs.size()) {
    for (; sent < sends.size() && (received == recvs.size() || sent < received + kSegmentsInFlight) &&
           (sent < initial_sends || sent - initial_sends < received);
         ++sent) {
      const Piece& s = sends[sent];
      call.send(right, s.phase, buf.at(s.range.offset), buf.nbytes(s.range.numel));
    }
    if (received == recvs.size()) {
      LOOM_ASSERT(sent == sends.size());
      break;
    }
    const Piece& r = recvs[received++];
    if (r.reduce) {
      call.recv(left, r.phase, tmp, buf.nbytes(r.range.numel));
      reduce_into(buf.dtype, op, buf.at(r.range.offset), tmp, r.range.numel);
    } else {
      call.recv(left, r.phase, buf.at(r.range.offset), buf.nbytes(r.range.numel));
    }
  }
}

}  // namespace

void ring_allreduce(const Call& call, const Group& g, Buffer buf, ReduceOp op, size_t seg, uint32_t phase) {
  // Reduce-scatter leaves chunk i+1 complete on rank i; the all-gather starts there.
  const RingPass passes[] = {{true, 0, phase}, {false, 1, phase + 1}};
  run_ring(call, g, buf, op, seg, passes);
}

void ring_reduce_scatter(const Call& call, const Group& g, Buffer buf, ReduceOp op, size_t seg, uint32_t phase) {
  // Starting one chunk back makes rank i finish with chunk i.
  const RingPass passes[] = {{true, -1, phase}};
  run_ring(call, g, buf, op, seg, passes);
}

void ring_all_gather(const Call& call, const Group& g, Buffer buf, size_t seg, uint32_t phase) {
  const RingPass passes[] = {{false, 0, phase}};
  run_ring(call, g, buf, ReduceOp::Sum, seg, passes);
}

}  // namespace loom::comm::detail
