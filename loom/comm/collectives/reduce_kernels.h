// Element-wise reduction kernels used by every collective: one vectorisable
// loop per dtype and op, so all algorithms combine numbers the same way.
//
//   // given: float* dst, const float* src, const float* a, const float* b, const float* c, size_t n, int world_size
//   comm::reduce_into(DType::F32, comm::ReduceOp::Sum, dst, src, n);   // dst[i] += src[i]
//   comm::divide(DType::F32, dst, n, world_size);                  // the Avg step
//   const void* srcs[] = {a, b, c};
//   comm::reduce_many(DType::F32, comm::ReduceOp::Sum, srcs, dst, n);     // dst[i] = a[i] + b[i] + c[i]
//
// Dtypes: f32, f64, f16, bf16, i32, i64 (u8 and bool throw TypeError).
// 16-bit floats are storage types here as everywhere in Loom: each call
// widens both operands to f32, combines, and rounds to nearest-even once when
// it stores. A collective that combines in several steps (ring, tree) thus
// rounds once per step; the deterministic path folds all contributions in an
// f32 accumulator (`reduce_into_acc`) and rounds once at the very end, and so
// does `reduce_many`, which the shared-memory all-reduce uses.
// Avg combines as Sum; the collective divides once after the last step.
// Integer Avg truncates towards zero (C++ division).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "loom/core/dtype.h"

namespace loom::comm {

enum class ReduceOp { Sum, Avg, Max, Min };

std::string_view name(ReduceOp op);
// Parses "sum", "avg" (or "mean"), "max", "min"; ValueError otherwise.
ReduceOp reduce_op_from_name(std::string_view s);

// Throws TypeError naming `what` unless the collectives can reduce dtype `t`.
void check_reducible(core::DType t, std::string_view what);

// dst[i] = dst[i] op src[i] for i < numel. dst and src must not overlap.
// Max/Min propagate NaN from either side.
void reduce_into(core::DType t, ReduceOp op, void* dst, const void* src, size_t numel);

// dst[i] = srcs[0][i] op srcs[1][i] op ... (left to right), for i < numel,
// in one pass over the sources; 16-bit floats are combined in f32 and
// rounded once. srcs must not be empty; dst must not overlap any source.
void reduce_many(core::DType t, ReduceOp op, std::span<const void* const> srcs, void* dst, size_t numel);

// The dtype an exact-order fold accumulates in: f32 for f16/bf16, else `t`.
core::DType accumulate_dtype(core::DType t);
// acc[i] = widen(src[i]) (acc holds accumulate_dtype(t)).
void widen(core::DType t, const void* src, void* acc, size_t numel);
// dst[i] = round(acc[i]) back to `t`.
void narrow(core::DType t, const void* acc, void* dst, size_t numel);
// acc[i] = acc[i] op widen(src[i]); no rounding for 16-bit src.
void reduce_into_acc(core::DType t, ReduceOp op, void* acc, const void* src, size_t numel);

// data[i] /= divisor (the Avg step), computed in f32 for 16-bit floats.
void divide(core::DType t, void* data, size_t numel, int64_t divisor);

}  // namespace loom::comm
