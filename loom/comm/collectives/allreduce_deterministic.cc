// Deterministic allreduce and reduce-scatter: every element is the left fold
// x_0 op x_1 op ... op x_{n-1} over ranks in order, accumulated in
// accumulate_dtype (f32 for 16-bit floats) and rounded once, so the bits do
// not depend on the algorithm, the topology or the order messages arrive in.
//
// Reduce-scatter shape: rank i receives chunk i (reduce_scatter_range) of
// every rank's buffer and folds the copies in rank order; each rank sends and
// receives (n-1)/n of the buffer, as in a ring reduce-scatter, but directly
// (in rounds of one segment per peer, to bound the bytes in flight). The
// allreduce then all-gathers the folded chunks around the ring.
// Gather shape (small messages): rank 0 folds whole buffers and broadcasts.
#include <algorithm>

#include "loom/comm/collectives/collectives.h"

namespace loom::comm::detail {

namespace {

// Folds `count` elements of each rank's contribution into `out` in rank
// order; contribution(j) returns rank j's data (receiving it if needed).
// `acc` holds count elements of accumulate_dtype(dtype).
template <class Contribution>
void fold_in_rank_order(int n, core::DType dtype, ReduceOp op, size_t count, void* acc, std::byte* out,
                        Contribution&& contribution) {
  const core::DType acc_dtype = accumulate_dtype(dtype);
  for (int j = 0; j < n; ++j) {
    const std::byte* src = contribution(j);
    if (j == 0) widen(dtype, src, acc, count);
    else reduce_into_acc(dtype, op, acc, src, count);
  }
  if (op == ReduceOp::Avg) divide(acc_dtype, acc, count, n);
  narrow(dtype, acc, out, count);
}

}  // namespace

void deterministic_reduce_scatter(const Call& call, const Group& g, Buffer in, std::byte* out, ReduceOp op,
                                  size_t seg, uint32_t phase) {
  const int n = g.size(), i = g.me;
  const ElementRange mine = reduce_scatter_range(in.numel, n, i);
  const core::DType acc_dtype = accumulate_dtype(in.dtype);
  const size_t seg_max = std::min(seg, mine.numel);
  core::Tensor tmp_holder = scratch(in.nbytes(seg_max));
  core::Tensor acc_holder = scratch(seg_max * core::itemsize(acc_dtype));
  auto* tmp = static_cast<std::byte*>(tmp_holder.data_ptr());
  // Round k: send segment k of every other rank's chunk to it, then fold
  // segment k of this rank's chunk. Chunk lengths differ by at most one
  // element, so no rank gets more than a round ahead of another: the bytes in
  // flight per link stay at about two segments.
  const size_t rounds = num_segments(reduce_scatter_range(in.numel, n, 0).numel, seg);  // chunk 0 is the longest
  for (size_t k = 0; k < rounds; ++k) {
    for (int d = 1; d < n; ++d) {  // nearest first, so ranks do not all send to rank 0 at once
      const int j = (i + d) % n;
      const ElementRange chunk = reduce_scatter_range(in.numel, n, j);
      if (k < num_segments(chunk.numel, seg)) {
        const ElementRange piece = segment_of(chunk, seg, k);
        call.send(g.at(j), phase, in.at(piece.offset), in.nbytes(piece.numel));
      }
    }
    if (k >= num_segments(mine.numel, seg)) continue;
    const ElementRange piece = segment_of(mine, seg, k);
    // `out` may be this rank's chunk of `in`: a segment is written after its fold.
    fold_in_rank_order(n, in.dtype, op, piece.numel, acc_holder.data_ptr(), out + in.nbytes(piece.offset - mine.offset),
                       [&](int j) -> const std::byte* {
                         if (j == i) return in.at(piece.offset);
                         call.recv(g.at(j), phase, tmp, in.nbytes(piece.numel));
                         return tmp;
                       });
  }
}

void deterministic_allreduce(const Call& call, const Group& g, Buffer buf, ReduceOp op, bool gather_to_root,
                             size_t seg, uint32_t phase) {
  const int n = g.size(), i = g.me;
  if (!gather_to_root) {
    deterministic_reduce_scatter(call, g, buf, buf.at(reduce_scatter_range(buf.numel, n, i).offset), op, seg, phase);
    ring_all_gather(call, g, buf, seg, phase + 0x100);
    return;
  }
  if (i != 0) {
    call.send(g.at(0), phase, buf.data, buf.nbytes(buf.numel));
  } else {
    core::Tensor tmp_holder = scratch(buf.nbytes(buf.numel));
    core::Tensor acc_holder = scratch(buf.numel * core::itemsize(accumulate_dtype(buf.dtype)));
    auto* tmp = static_cast<std::byte*>(tmp_holder.data_ptr());
    fold_in_rank_order(n, buf.dtype, op, buf.numel, acc_holder.data_ptr(), buf.data, [&](int j) -> const std::byte* {
      if (j == 0) return buf.data;
      call.recv(g.at(j), phase, tmp, buf.nbytes(buf.numel));
      return tmp;
    });
  }
  tree_broadcast(call, g, buf, 0, seg, phase + 0x100);
}

}  // namespace loom::comm::detail
