// Binomial-tree reduce and broadcast, and the allreduce made of the two.
//
// Relative to the root, rank v's parent is v minus its lowest set bit and its
// children are v + 1, v + 2, v + 4, ... below that bit (and below n): a tree
// of depth ceil(log2 n). Reduce: each rank combines its children's data
// into its own and passes the partial result up; broadcast: the reverse,
// largest subtree first. Both go segment by segment (chunk_bytes), so a large
// message streams through the levels instead of waiting at each one.
// 2 ceil(log2 n) steps carrying the whole buffer: the algorithm for small
// messages, and the intra-host stage of the hierarchical one.
#include <algorithm>
#include <vector>

#include "loom/comm/collectives/collectives.h"

namespace loom::comm::detail {

namespace {

// Children of relative rank `v` in a binomial tree of n ranks, nearest first.
std::vector<int> children_of(int v, int n) {
  std::vector<int> kids;
  for (int m = 1; m < n && (v & m) == 0; m <<= 1) {
    if (v + m < n) kids.push_back(v + m);
  }
  return kids;
}

int parent_of(int v) { return v - (v & -v); }

// Calls f(offset, count) for each segment of the buffer.
template <class F>
void for_segments(const Buffer& buf, size_t seg, F&& f) {
  for (size_t done = 0; done < buf.numel;) {
    const size_t cnt = std::min(seg, buf.numel - done);
    f(done, cnt);
    done += cnt;
  }
}

}  // namespace

void tree_reduce(const Call& call, const Group& g, Buffer buf, ReduceOp op, int root, size_t seg, uint32_t phase) {
  const int n = g.size();
  if (n == 1 || buf.numel == 0) return;
  const int v = ((g.me - root) % n + n) % n;
  const std::vector<int> kids = children_of(v, n);
  core::Tensor tmp_holder = kids.empty() ? core::Tensor() : scratch(buf.nbytes(std::min(seg, buf.numel)));
  auto* tmp = kids.empty() ? nullptr : static_cast<std::byte*>(tmp_holder.data_ptr());
  for_segments(buf, seg, [&](size_t off, size_t cnt) {
    for (int kid : kids) {
      call.recv(g.at(kid + root), phase, tmp, buf.nbytes(cnt));
      reduce_into(buf.dtype, op, buf.at(off), tmp, cnt);
    }
    if (v != 0) call.send(g.at(parent_of(v) + root), phase, buf.at(off), buf.nbytes(cnt));
  });
}

void tree_broadcast(const Call& call, const Group& g, Buffer buf, int root, size_t seg, uint32_t phase) {
  const int n = g.size();
  if (n == 1 || buf.numel == 0) return;
  const int v = ((g.me - root) % n + n) % n;
  std::vector<int> kids = children_of(v, n);
  std::reverse(kids.begin(), kids.end());  // largest subtree first
  for_segments(buf, seg, [&](size_t off, size_t cnt) {
    if (v != 0) call.recv(g.at(parent_of(v) + root), phase, buf.at(off), buf.nbytes(cnt));
    for (int kid : kids) call.send(g.at(kid + root), phase, buf.at(off), buf.nbytes(cnt));
  });
}

void tree_allreduce(const Call& call, const Group& g, Buffer buf, ReduceOp op, size_t seg, uint32_t phase) {
  tree_reduce(call, g, buf, op, 0, seg, phase);
  tree_broadcast(call, g, buf, 0, seg, phase + 1);
}

}  // namespace loom::comm::detail
