#include "loom/ps/request_plan.h"

namespace loom::ps {

KeyLayout key_layout(int64_t key, const core::Shape& shape, core::DType dtype, const PlacementOptions& placement) {
  return {.shape = shape, .dtype = dtype, .slices = place_key(key, shape, placement)};
}

Header slice_header(Op op, int64_t key, const KeyLayout& layout, const Slice& s) {
  return {.op = op, .dtype = layout.dtype, .key = key, .row_begin = s.row_begin, .num_rows = s.num_rows,
          .row_numel = key_row_numel(layout.shape), .total_rows = key_rows(layout.shape)};
}

std::vector<DenseRequest> plan_dense(Op op, int64_t key, const KeyLayout& layout, int64_t version,
                                     const PlacementOptions& placement) {
  std::vector<DenseRequest> out;
  out.reserve(layout.slices.size());
  for (const Slice& s : layout.slices) {
    DenseRequest r{.header = slice_header(op, key, layout, s), .chain = replica_chain(s.server, placement),
                   .offset = layout.offset_of(s), .nbytes = layout.nbytes_of(s)};
    if (op == Op::Push || op == Op::PushPull) r.header.version = version;
    out.push_back(std::move(r));
  }
  return out;
}

std::vector<SparseRequest> plan_sparse(Op op, int64_t key, const KeyLayout& layout, std::span<const int64_t> ids,
                                       bool every_slice, const PlacementOptions& placement, int64_t version) {
  std::vector<SparseRequest> out;
  for (RowGroup& g : group_rows(layout.slices, ids, placement.num_servers, every_slice)) {
    SparseRequest r{.header = slice_header(op, key, layout,
                                           {.server = g.server, .row_begin = 0, .num_rows = key_rows(layout.shape)}),
                    .chain = replica_chain(g.server, placement),
                    .firsts = std::move(g.firsts),
                    .ids = std::move(g.ids),
                    .positions = std::move(g.positions)};
    r.header.flags = flag::kSparse;
    if (op == Op::Push) r.header.version = version;
    if (every_slice) r.firsts = {-1 - static_cast<int64_t>(g.server)};  // 8 bytes, however big the table
    out.push_back(std::move(r));
  }
  return out;
}

std::vector<ServerRequest> plan_every_server(Op op, const PlacementOptions& placement) {
  std::vector<ServerRequest> out;
  for (int s = 0; s < placement.num_servers; ++s) out.push_back({.header = {.op = op}, .chain = {s}});
  return out;
}

}  // namespace loom::ps
