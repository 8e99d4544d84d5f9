// Recursive halving-doubling allreduce (Rabenseifner's algorithm), any world
// size.
//
// With p = the largest power of two <= n and r = n - p, the first 2r ranks
// pair up first: each even one sends its whole buffer to the odd one after it
// and sits out; the p remaining ranks get virtual ranks 0..p-1.
// - Reduce-scatter by recursive halving: the buffer is cut into p blocks; in
//   the step at distance d = p/2, p/4, ..., 1 a rank exchanges half of its
//   current block range with virtual rank (v xor d), keeps the lower half if
//   bit d of v is clear (else the upper) and reduces the partner's copy of it
//   in. After log2(p) steps virtual rank v owns block v fully reduced.
// - All-gather by recursive doubling: the same exchanges in reverse order,
//   now copying, doubling the owned range each step.
// - The odd ranks of the first 2r send the result back to their even partner.
// Every rank moves about 2 (p-1)/p of the buffer in 2 log2(p) steps (plus the
// two folding steps when n is not a power of two). Each exchange goes segment
// by segment (exchange(), chunk_bytes), so partners that both send first
// cannot block each other on a transport with flow control.
#include <algorithm>
#include <bit>

#include "loom/comm/collectives/collectives.h"

namespace loom::comm::detail {

void halving_doubling_allreduce(const Call& call, const Group& g, Buffer buf, ReduceOp op, size_t seg,
                                uint32_t phase) {
  const int n = g.size();
  if (n == 1 || buf.numel == 0) return;
  const int p = static_cast<int>(std::bit_floor(static_cast<unsigned>(n)));
  const int extra = n - p;
  const int i = g.me;
  const uint32_t fold_phase = phase, unfold_phase = phase + 1, halving_phase = phase + 2, doubling_phase = phase + 40;
  const ElementRange all{0, buf.numel}, none{0, 0};

  // Every message goes through exchange(): segmented, at most
  // kSegmentsInFlight segments ahead, received segments reduced through tmp.
  core::Tensor tmp_holder = scratch(buf.nbytes(std::min(seg, buf.numel)));
  auto* tmp = static_cast<std::byte*>(tmp_holder.data_ptr());

  // Fold the extra ranks into their odd partners.
  int v = i - extra;  // virtual rank, -1 for a rank that sits out
  if (i < 2 * extra) {
    if (i % 2 == 0) {
      exchange(call, g.at(i + 1), fold_phase, buf, all, none, seg, tmp, op);
      v = -1;
    } else {
      exchange(call, g.at(i - 1), fold_phase, buf, none, all, seg, tmp, op);
      v = i / 2;
    }
  }

  if (v >= 0) {
    auto real = [&](int virt) { return g.at(virt < extra ? 2 * virt + 1 : virt + extra); };
    // Elements of blocks [lo, hi) of the p blocks.
    auto blocks = [&](int lo, int hi) {
      const size_t begin = lo == p ? buf.numel : reduce_scatter_range(buf.numel, p, lo).offset;
      const size_t end = hi == p ? buf.numel : reduce_scatter_range(buf.numel, p, hi).offset;
      return ElementRange{begin, end - begin};
    };
    int lo = 0, hi = p;  // the block range this rank is responsible for
    uint32_t step = 0;
    for (int d = p / 2; d >= 1; d /= 2, ++step) {
      const int mid = lo + d;
      const bool lower = (v & d) == 0;
      const int keep_lo = lower ? lo : mid, keep_hi = lower ? mid : hi;
      const int give_lo = lower ? mid : lo, give_hi = lower ? hi : mid;
      exchange(call, real(v ^ d), halving_phase + step, buf, blocks(give_lo, give_hi), blocks(keep_lo, keep_hi), seg,
               tmp, op);
      lo = keep_lo;
      hi = keep_hi;
    }
    step = 0;
    for (int d = 1; d < p; d *= 2, ++step) {
      const bool lower = (v & d) == 0;
      const int other_lo = lower ? hi : lo - d, other_hi = lower ? hi + d : lo;
      exchange(call, real(v ^ d), doubling_phase + step, buf, blocks(lo, hi), blocks(other_lo, other_hi), seg,
               nullptr, op);
      lo = std::min(lo, other_lo);
      hi = std::max(hi, other_hi);
    }
  }

  // Hand the result back to the ranks that sat out.
  if (i < 2 * extra) {
    if (i % 2 == 1) exchange(call, g.at(i - 1), unfold_phase, buf, all, none, seg, nullptr, op);
    else exchange(call, g.at(i + 1), unfold_phase, buf, none, all, seg, nullptr, op);
  }
}

}  // namespace loom::comm::detail
