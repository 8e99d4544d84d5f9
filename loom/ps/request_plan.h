// The worker side's plan, without a socket: which requests a KVStore call
// makes (keys -> slice requests, each with its header, its replica chain and
// where its bytes lie in the caller's tensors). dist_kvstore.cc sends them
// through comm::RequestClient; tests check plans like placement's.
//
//   ps::PlacementOptions placement{.num_servers = 2, .split_bound = 1 << 16};
//   ps::KeyLayout layout = ps::key_layout(7, {1024, 256}, core::DType::F32, placement);
//   for (const ps::DenseRequest& r : ps::plan_dense(ps::Op::Push, 7, layout, /*version=*/3, placement)) {
//     // r.header: op, key, slice rows, version; r.chain: who may answer;
//     // bytes [r.offset, r.offset + r.nbytes) of the value travel (push) or land (pull)
//   }
//   std::vector<int64_t> ids = {3, 900};
//   for (const ps::SparseRequest& r : ps::plan_sparse(ps::Op::Push, 7, layout, ids, false, placement)) {
//     // one request per server: r.firsts (slices named), r.ids, r.positions (rows of the caller's tensor)
//   }
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "loom/core/dtype.h"
#include "loom/core/shape.h"
#include "loom/ps/placement.h"
#include "loom/ps/protocol.h"

namespace loom::ps {

// A key as placed: its shape, dtype and slices.
struct KeyLayout {
  core::Shape shape;
  core::DType dtype = core::DType::F32;
  std::vector<Slice> slices;
  size_t row_bytes() const { return static_cast<size_t>(key_row_numel(shape)) * core::itemsize(dtype); }
  size_t nbytes() const { return static_cast<size_t>(key_rows(shape)) * row_bytes(); }
  // Bytes of slice `s` inside the whole value.
  size_t offset_of(const Slice& s) const { return static_cast<size_t>(s.row_begin) * row_bytes(); }
  size_t nbytes_of(const Slice& s) const { return static_cast<size_t>(s.num_rows) * row_bytes(); }
};
KeyLayout key_layout(int64_t key, const core::Shape& shape, core::DType dtype, const PlacementOptions& placement);

// The header of a request about slice `s` of a key.
Header slice_header(Op op, int64_t key, const KeyLayout& layout, const Slice& s);

// One request about one dense slice.
struct DenseRequest {
  Header header;
  std::vector<int> chain;  // servers that may answer, primary first
  size_t offset = 0;       // the slice's bytes inside the key's value
  size_t nbytes = 0;
};
// One request per slice (init, push, pushpull, pull, get_state, set_state); `version` goes into pushes.
std::vector<DenseRequest> plan_dense(Op op, int64_t key, const KeyLayout& layout, int64_t version,
                                     const PlacementOptions& placement);

// One row-sparse request: to one server, naming its slices (protocol.h).
struct SparseRequest {
  Header header;
  std::vector<int> chain;
  std::vector<int64_t> firsts;     // the slices' first rows, or {-1 - server}: every slice of the server
  std::vector<int64_t> ids;        // row ids, slice by slice
  std::vector<size_t> positions;   // where each id is in the caller's list
};
// One request per server holding some of `ids`; with `every_slice` (a
// dist_sync push: every slice's round needs every worker) every server, each
// naming all its slices in one value.
std::vector<SparseRequest> plan_sparse(Op op, int64_t key, const KeyLayout& layout, std::span<const int64_t> ids,
                                       bool every_slice, const PlacementOptions& placement, int64_t version = 0);

// A request for every server (set_optimizer, leave): chain {s} only.
struct ServerRequest {
  Header header;
  std::vector<int> chain;
};
std::vector<ServerRequest> plan_every_server(Op op, const PlacementOptions& placement);

}  // namespace loom::ps
