// Internal to loom_ps: how a worker's row-sparse requests (request_plan.h
// plan_sparse) carry their rows. A push gathers each server's rows from the
// caller's tensor in the order of that server's ids into a buffer its frame
// owns; a pull scatters each reply's rows to where their ids stand in the
// caller's list. The slice lists and ids are lent from the plan, which the
// frames and replies keep alive.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "loom/ps/request_plan.h"
#include "loom/ps/server_calls.h"

namespace loom::ps {

using SparsePlan = std::shared_ptr<const std::vector<SparseRequest>>;

// `rows`: the caller's rows, `row_bytes` each, in the order of the ids the plan was made from.
void add_sparse_push(RequestBatch& batch, const SparsePlan& plan, std::span<const std::byte> rows, size_t row_bytes);
// `out`: where the rows go, `row_bytes` each, in that order; valid until `batch` has run.
// A reply of the wrong size is a CommError naming `key`.
void add_sparse_pull(RequestBatch& batch, const SparsePlan& plan, std::span<std::byte> out, size_t row_bytes,
                     int64_t key);

}  // namespace loom::ps
