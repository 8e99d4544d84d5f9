#include "loom/comm/collectives/reduce_kernels.h"

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "loom/core/error.h"

namespace loom::comm {

using core::BFloat16;
using core::DType;
using core::Half;

namespace {

// Calls f.template operator()<T>() for the dtypes collectives reduce.
template <class F>
decltype(auto) visit_reducible(DType t, std::string_view what, F&& f) {
  switch (t) {
    case DType::F32: return f.template operator()<float>();
    case DType::F64: return f.template operator()<double>();
    case DType::F16: return f.template operator()<Half>();
    case DType::BF16: return f.template operator()<BFloat16>();
    case DType::I32: return f.template operator()<int32_t>();
    case DType::I64: return f.template operator()<int64_t>();
    default: break;
  }
  throw TypeError(format("{}: dtype {} cannot be reduced (f32, f64, f16, bf16, i32, i64 can)", what, core::name(t)));
}

template <class T>
constexpr bool is_16bit_float = std::is_same_v<T, Half> || std::is_same_v<T, BFloat16>;

// The type arithmetic happens in: float for the 16-bit storage types.
template <class T>
using compute_t = std::conditional_t<is_16bit_float<T>, float, T>;

struct SumOp {
  template <class C>
  C operator()(C a, C b) const { return a + b; }
};
struct MaxOp {
  template <class C>
  C operator()(C a, C b) const {
    if constexpr (std::is_floating_point_v<C>) return (b > a || b != b) ? b : a;  // NaN wins
    else return b > a ? b : a;
  }
};
struct MinOp {
  template <class C>
  C operator()(C a, C b) const {
    if constexpr (std::is_floating_point_v<C>) return (b < a || b != b) ? b : a;
    else return b < a ? b : a;
  }
};

template <class F>
decltype(auto) visit_op(ReduceOp op, F&& f) {
  switch (op) {
    case ReduceOp::Sum:
    case ReduceOp::Avg: return f(SumOp{});
    case ReduceOp::Max: return f(MaxOp{});
    case ReduceOp::Min: return f(MinOp{});
  }
  throw InternalError("reduce: bad ReduceOp");
}

// D and S are the stored types of dst and src; the loop computes in
// compute_t<S> (== D for the accumulator paths) and converts once on store.
template <class D, class S, class Op>
void combine_loop(D* __restrict dst, const S* __restrict src, size_t n, Op op) {
  using C = compute_t<S>;
  for (size_t i = 0; i < n; ++i) {
    dst[i] = static_cast<D>(op(static_cast<C>(dst[i]), static_cast<C>(src[i])));
  }
}

// dst = fold of srcs, tile by tile: the running result of a tile stays in a
// small compute-type accumulator (in L1), so each source is read once and
// dst written once whatever the number of sources.
template <class T, class Op>
void fold_sources(std::span<const void* const> srcs, T* __restrict dst, size_t n, Op op) {
  using C = compute_t<T>;
  const size_t nsrc = srcs.size();
  auto src = [&](size_t j) { return static_cast<const T*>(srcs[j]); };
  constexpr size_t kTile = 2048;
  C acc[kTile];
  for (size_t base = 0; base < n; base += kTile) {
    const size_t m = std::min(kTile, n - base);
    {
      const T* __restrict a = src(0) + base;
      if (nsrc == 1) {
        for (size_t i = 0; i < m; ++i) acc[i] = static_cast<C>(a[i]);
      } else {
        const T* __restrict b = src(1) + base;
        for (size_t i = 0; i < m; ++i) acc[i] = op(static_cast<C>(a[i]), static_cast<C>(b[i]));
      }
    }
    for (size_t j = 2; j < nsrc; ++j) {
      const T* __restrict s = src(j) + base;
      for (size_t i = 0; i < m; ++i) acc[i] = op(acc[i], static_cast<C>(s[i]));
    }
    T* __restrict d = dst + base;
    for (size_t i = 0; i < m; ++i) d[i] = static_cast<T>(acc[i]);
  }
}

}  // namespace

std::string_view name(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum: return "sum";
    case ReduceOp::Avg: return "avg";
    case ReduceOp::Max: return "max";
    case ReduceOp::Min: return "min";
  }
  return "?";
}

ReduceOp reduce_op_from_name(std::string_view s) {
  if (s == "sum") return ReduceOp::Sum;
  if (s == "avg" || s == "mean") return ReduceOp::Avg;
  if (s == "max") return ReduceOp::Max;
  if (s == "min") return ReduceOp::Min;
  throw ValueError(format("unknown reduce op '{}' (expected sum, avg, max or min)", s));
}

void check_reducible(DType t, std::string_view what) {
  visit_reducible(t, what, []<class T>() {});
}

void reduce_into(DType t, ReduceOp op, void* dst, const void* src, size_t numel) {
  if (numel == 0) return;
  visit_reducible(t, "reduce_into", [&]<class T>() {
    visit_op(op, [&](auto f) { combine_loop(static_cast<T*>(dst), static_cast<const T*>(src), numel, f); });
  });
}

void reduce_many(DType t, ReduceOp op, std::span<const void* const> srcs, void* dst, size_t numel) {
  LOOM_ASSERT(!srcs.empty());
  if (numel == 0) return;
  visit_reducible(t, "reduce_many", [&]<class T>() {
    visit_op(op, [&](auto f) { fold_sources(srcs, static_cast<T*>(dst), numel, f); });
  });
}

DType accumulate_dtype(DType t) { return core::is_half(t) ? DType::F32 : t; }

void widen(DType t, const void* src, void* acc, size_t numel) {
  visit_reducible(t, "widen", [&]<class T>() {
    using C = compute_t<T>;
    const T* __restrict s = static_cast<const T*>(src);
    C* __restrict a = static_cast<C*>(acc);
    for (size_t i = 0; i < numel; ++i) a[i] = static_cast<C>(s[i]);
  });
}

void narrow(DType t, const void* acc, void* dst, size_t numel) {
  visit_reducible(t, "narrow", [&]<class T>() {
    using C = compute_t<T>;
    const C* __restrict a = static_cast<const C*>(acc);
    T* __restrict d = static_cast<T*>(dst);
    for (size_t i = 0; i < numel; ++i) d[i] = static_cast<T>(a[i]);
  });
}

void reduce_into_acc(DType t, ReduceOp op, void* acc, const void* src, size_t numel) {
  if (numel == 0) return;
  visit_reducible(t, "reduce_into_acc", [&]<class T>() {
    using C = compute_t<T>;
    visit_op(op, [&](auto f) { combine_loop(static_cast<C*>(acc), static_cast<const T*>(src), numel, f); });
  });
}

void divide(DType t, void* data, size_t numel, int64_t divisor) {
  LOOM_ASSERT(divisor > 0);
  if (numel == 0 || divisor == 1) return;
  visit_reducible(t, "divide", [&]<class T>() {
    using C = compute_t<T>;
    T* __restrict d = static_cast<T*>(data);
    const C q = static_cast<C>(divisor);
    for (size_t i = 0; i < numel; ++i) d[i] = static_cast<T>(static_cast<C>(d[i]) / q);
  });
}

}  // namespace loom::comm
