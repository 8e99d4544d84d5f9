#include "loom/ps/sparse_transfer.h"

#include <cstring>

#include "loom/core/error.h"

namespace loom::ps {

using comm::FramePtr;
using comm::OutFrame;

void add_sparse_push(RequestBatch& batch, const SparsePlan& plan, std::span<const std::byte> rows, size_t row_bytes) {
  for (const SparseRequest& r : *plan) {
    // This server's rows, gathered in the order of its ids; the frame owns them.
    auto gathered = std::make_shared<std::vector<std::byte>>();
    gathered->reserve(r.positions.size() * row_bytes);
    for (size_t i : r.positions) {
      gathered->insert(gathered->end(), rows.begin() + i * row_bytes, rows.begin() + (i + 1) * row_bytes);
    }
    std::vector<OutFrame> payload = {OutFrame::lend(i64_bytes(r.firsts), plan), OutFrame::lend(i64_bytes(r.ids), plan),
                                     OutFrame::lend(*gathered, gathered)};
    batch.add(r.header, r.chain, std::move(payload));
  }
}

void add_sparse_pull(RequestBatch& batch, const SparsePlan& plan, std::span<std::byte> out, size_t row_bytes,
                     int64_t key) {
  for (const SparseRequest& r : *plan) {
    auto scatter = [out, &r, row_bytes, key, plan](std::span<const FramePtr> f) {
      LOOM_CHECK_T(CommError, f.size() == 1 && f[0]->bytes().size() == r.positions.size() * row_bytes,
                   "kvstore: row_sparse_pull of key {}: reply of the wrong size", key);
      for (size_t i = 0; i < r.positions.size(); ++i) {
        std::memcpy(out.data() + r.positions[i] * row_bytes, f[0]->bytes().data() + i * row_bytes, row_bytes);
      }
    };
    batch.add(r.header, r.chain, {OutFrame::lend(i64_bytes(r.firsts), plan), OutFrame::lend(i64_bytes(r.ids), plan)},
              scatter);
  }
}

}  // namespace loom::ps
