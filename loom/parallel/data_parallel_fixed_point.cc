#include "loom/parallel/data_parallel_fixed_point.h"

#include <algorithm>
#include <bit>
#include <cmath>

#include <immintrin.h>

#include "loom/core/error.h"
#include "loom/optim/fixed_point.h"

namespace loom::parallel::fixed_point {

using core::Tensor;

namespace {

constexpr double kScale = 0x1p40;  // 2^kFractionBits
constexpr double kLimit = 0x1p51 - 1;  // kMaxMagnitude * kScale, the largest |x| added
// For |x| <= 2^51 - 1, x + 1.5 * 2^52 lies in [2^52, 2^53), where doubles are
// the integers: the add rounds x to the nearest integer (ties to even), and
// the difference of the two bit patterns is that integer.
constexpr double kRound = 0x1.8p52;
static_assert(static_cast<double>(kMaxAtoms) * kLimit < 0x1p63, "kMaxAtoms values of one element fit an int64");
static_assert(kMaxMagnitude * kScale == kLimit);

// acc (+)= round(g 2^40), g = 0, for n values; returns how many were out of
// range. Unsigned arithmetic: the same bits as int64 two's complement, and a
// garbage value (out of range) cannot be undefined behaviour.
template <Mode mode, class T>
int64_t accumulate_block(T* g, uint64_t* acc, int64_t n) {
  const uint64_t round_bits = std::bit_cast<uint64_t>(kRound);
  int64_t out_of_range = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double x = static_cast<double>(g[i]) * kScale;  // exact: a power of two
    out_of_range += !(std::fabs(x) <= kLimit);
    const uint64_t q = std::bit_cast<uint64_t>(x + kRound) - round_bits;
    if constexpr (mode == Mode::Add) acc[i] += q;
    else acc[i] = q;
  }
  return out_of_range;
}

template <Mode mode, class T>
std::optional<OutOfRange> accumulate_typed(T* g, uint64_t* acc, int64_t begin, int64_t end, bool zero_grad) {
  // Blocks that stay in L1: the values are zeroed after the block's pass,
  // so an offender can still be found and named.
  constexpr int64_t kBlock = 1024;
  std::optional<OutOfRange> first;
  for (int64_t lo = begin; lo < end; lo += kBlock) {
    const int64_t len = std::min(kBlock, end - lo);
    if (accumulate_block<mode>(g + lo, acc + lo, len) != 0 && !first) {
      for (int64_t i = lo; !first; ++i) {
        if (!(std::fabs(static_cast<double>(g[i])) <= kMaxMagnitude)) first = OutOfRange{i, static_cast<double>(g[i])};
      }
    }
    if (zero_grad) std::fill(g + lo, g + lo + len, T(0));
  }
  return first;
}

void check(const Tensor& grad, const Tensor& acc) {
  LOOM_ASSERT(grad.defined() && acc.defined() && grad.is_contiguous() && acc.is_contiguous());
  LOOM_ASSERT(acc.dtype() == core::DType::I64 && acc.numel() >= grad.numel());
}

// ---- accumulate_products ----

// round(p 2^40) for a float p with |p| < 2^11 (accumulate_block's rounding:
// 2^40 p is exact in double).
inline uint64_t round_product(float p) {
  return std::bit_cast<uint64_t>(static_cast<double>(p) * kScale + kRound) - std::bit_cast<uint64_t>(kRound);
}
inline bool product_in_range(float p) { return std::fabs(static_cast<double>(p)) * kScale <= kLimit; }

struct Factors {
  const float* g;
  const float* x;
  int64_t rows;
};

struct Bad {
  bool found = false;
  int64_t index = 0;
  float value = 0;
  void note(int64_t i, float v) {
    if (!found) *this = {true, i, v};
  }
};

// Plain C++ (acc null: only finds the first offender): a row of acc at a time, columns in blocks of 64 kept in float
// while the term's rows are added, one std::fma each (the compiler may
// vectorise across columns; every column's chain stays in row order).
void products_portable(const std::vector<Factors>& terms, int64_t out, int64_t in, uint64_t* acc, bool assign,
                       Bad& bad) {
  constexpr int64_t kCols = 64;
  float p[kCols];
  for (int64_t o = 0; o < out; ++o) {
    for (int64_t i0 = 0; i0 < in; i0 += kCols) {
      const int64_t n = std::min(kCols, in - i0);
      uint64_t* a = acc ? acc + o * in + i0 : nullptr;
      for (size_t t = 0; t < terms.size(); ++t) {
        std::fill(p, p + n, 0.0f);
        for (int64_t r = 0; r < terms[t].rows; ++r) {
          const float gv = terms[t].g[r * out + o];
          const float* x = terms[t].x + r * in + i0;
          for (int64_t i = 0; i < n; ++i) p[i] = std::fma(gv, x[i], p[i]);
        }
        for (int64_t i = 0; i < n; ++i) {
          if (!product_in_range(p[i])) bad.note(o * in + i0 + i, p[i]);
          if (!acc) continue;  // only looking for an offender
          const uint64_t q = round_product(p[i]);
          a[i] = (assign && t == 0) ? q : a[i] + q;
        }
      }
    }
  }
}

// GCC 12's AVX-512 intrinsics start some results from _mm512_undefined_*(),
// which -Wmaybe-uninitialized reports as a use of an uninitialised value.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

// AVX-512. g is packed first: for each block of kRowsOfAcc rows of acc, every
// term's rows of g for it, back to back (g's rows are `out` floats apart: read
// in place, every row of a term would be another page). A tile is MO rows of
// acc by 16 columns: per term, MO float accumulators, one FMA per row of the
// term (in row order: the portable kernel's chain), then rounded (x 2^40 is
// exact in float; vcvtps2qq rounds to nearest even, as the 1.5 2^52 trick
// does) into MO x 2 vectors of int64 that stay in registers across the terms.
constexpr int kRowsOfAcc = 8;

struct Packed {
  std::vector<float> g;               // [out / kRowsOfAcc blocks][rows of all terms][kRowsOfAcc]
  std::vector<int64_t> first_row;     // of each term in a block
  int64_t rows = 0;                   // of all terms
};

Packed pack_g(const std::vector<Factors>& terms, int64_t out) {
  Packed p;
  for (const Factors& t : terms) {
    p.first_row.push_back(p.rows);
    p.rows += t.rows;
  }
  const int64_t blocks = (out + kRowsOfAcc - 1) / kRowsOfAcc;
  p.g.assign(static_cast<size_t>(blocks * p.rows * kRowsOfAcc), 0.0f);
  for (size_t t = 0; t < terms.size(); ++t) {
    for (int64_t r = 0; r < terms[t].rows; ++r) {
      const float* src = terms[t].g + r * out;
      for (int64_t o = 0; o < out; ++o) {
        p.g[static_cast<size_t>(((o / kRowsOfAcc) * p.rows + p.first_row[t] + r) * kRowsOfAcc + o % kRowsOfAcc)] = src[o];
      }
    }
  }
  return p;
}

template <int MO>
__attribute__((target("avx512f,avx512dq"))) void products_tile_avx512(const std::vector<Factors>& terms,
                                                                      const float* gblock, int64_t in, int64_t o0,
                                                                      int64_t i0, __mmask16 m, uint64_t* acc,
                                                                      bool assign, __mmask16& bad) {
  const __m512 scale = _mm512_set1_ps(0x1p40f);
  const __m512 limit = _mm512_set1_ps(0x1p11f);
  __m512i q[MO][2];
  for (int j = 0; j < MO; ++j) q[j][0] = q[j][1] = _mm512_setzero_si512();
  const float* g = gblock;
  for (const Factors& t : terms) {
    __m512 p[MO];
    for (int j = 0; j < MO; ++j) p[j] = _mm512_setzero_ps();
    const float* x = t.x + i0;
    const int64_t rows = t.rows;
    for (int64_t r = 0; r < rows; ++r) {
      const __m512 xv = _mm512_maskz_loadu_ps(m, x + r * in);
      for (int j = 0; j < MO; ++j) p[j] = _mm512_fmadd_ps(_mm512_set1_ps(g[r * kRowsOfAcc + j]), xv, p[j]);
    }
    g += rows * kRowsOfAcc;
    __mmask16 in_range = m;
    for (int j = 0; j < MO; ++j) {
      in_range &= _mm512_cmp_ps_mask(_mm512_abs_ps(p[j]), limit, _CMP_LT_OQ);
      const __m512 s = _mm512_mul_ps(p[j], scale);
      const __m256 lo = _mm512_castps512_ps256(s);
      const __m256 hi = _mm512_castps512_ps256(_mm512_shuffle_f32x4(s, s, _MM_SHUFFLE(3, 2, 3, 2)));
      q[j][0] = _mm512_add_epi64(q[j][0], _mm512_cvt_roundps_epi64(lo, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
      q[j][1] = _mm512_add_epi64(q[j][1], _mm512_cvt_roundps_epi64(hi, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
    bad |= static_cast<__mmask16>(m & ~in_range);
  }
  for (int j = 0; j < MO; ++j) {
    uint64_t* a = acc + (o0 + j) * in + i0;
    for (int h = 0; h < 2; ++h) {
      const __mmask8 mh = static_cast<__mmask8>(m >> (8 * h));
      __m512i v = q[j][h];
      if (!assign) v = _mm512_add_epi64(v, _mm512_maskz_loadu_epi64(mh, a + 8 * h));
      _mm512_mask_storeu_epi64(a + 8 * h, mh, v);
    }
  }
}

// Columns in blocks of 16 (outer: the block of x, all terms' rows, stays in
// L1 while every row of acc is done), rows of acc in eights. Returns whether
// a product was out of range (the caller finds which with the portable kernel).
__attribute__((target("avx512f,avx512dq"))) bool products_avx512(const std::vector<Factors>& terms, int64_t out,
                                                                 int64_t in, uint64_t* acc, bool assign) {
  const Packed packed = pack_g(terms, out);
  __mmask16 bad = 0;
  for (int64_t i0 = 0; i0 < in; i0 += 16) {
    const int64_t n = std::min<int64_t>(16, in - i0);
    const __mmask16 m = n >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << n) - 1);
    for (int64_t o0 = 0; o0 < out; o0 += kRowsOfAcc) {
      const float* gblock = packed.g.data() + (o0 / kRowsOfAcc) * packed.rows * kRowsOfAcc;
      switch (std::min<int64_t>(kRowsOfAcc, out - o0)) {
        case 8: products_tile_avx512<8>(terms, gblock, in, o0, i0, m, acc, assign, bad); break;
        case 7: products_tile_avx512<7>(terms, gblock, in, o0, i0, m, acc, assign, bad); break;
        case 6: products_tile_avx512<6>(terms, gblock, in, o0, i0, m, acc, assign, bad); break;
        case 5: products_tile_avx512<5>(terms, gblock, in, o0, i0, m, acc, assign, bad); break;
        case 4: products_tile_avx512<4>(terms, gblock, in, o0, i0, m, acc, assign, bad); break;
        case 3: products_tile_avx512<3>(terms, gblock, in, o0, i0, m, acc, assign, bad); break;
        case 2: products_tile_avx512<2>(terms, gblock, in, o0, i0, m, acc, assign, bad); break;
        default: products_tile_avx512<1>(terms, gblock, in, o0, i0, m, acc, assign, bad); break;
      }
    }
  }
  return bad != 0;
}

#pragma GCC diagnostic pop

bool has_avx512() {
  static const bool yes = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq");
  return yes;
}

}  // namespace

std::optional<OutOfRange> accumulate_products(const std::vector<Product>& terms, Tensor& acc, Mode mode,
                                              Kernel kernel) {
  LOOM_ASSERT(acc.defined() && acc.is_contiguous() && acc.dtype() == core::DType::I64 && acc.dim() == 2);
  const int64_t out = acc.shape()[0], in = acc.shape()[1];
  std::vector<Factors> factors;
  for (const Product& t : terms) {
    LOOM_ASSERT(t.g.dtype() == core::DType::F32 && t.x.dtype() == core::DType::F32 && t.g.is_contiguous() &&
                t.x.is_contiguous() && t.g.dim() == 2 && t.x.dim() == 2 && t.g.shape()[0] == t.x.shape()[0] &&
                t.g.shape()[1] == out && t.x.shape()[1] == in);
    factors.push_back({t.g.data<float>(), t.x.data<float>(), t.g.shape()[0]});
  }
  auto* a = static_cast<uint64_t*>(acc.data_ptr());
  const bool assign = mode == Mode::Assign;
  if (factors.empty()) {
    if (assign) std::fill(a, a + acc.numel(), 0);
    return std::nullopt;
  }
  Bad bad;
  if (kernel == Kernel::Best && has_avx512()) {
    if (!products_avx512(factors, out, in, a, assign)) return std::nullopt;
    products_portable(factors, out, in, nullptr, assign, bad);  // out of range somewhere: which?
  } else {
    products_portable(factors, out, in, a, assign, bad);
  }
  if (!bad.found) return std::nullopt;
  return OutOfRange{bad.index, static_cast<double>(bad.value)};
}

std::optional<OutOfRange> accumulate(const Tensor& grad, Tensor& acc, const AccumulateOptions& o) {
  check(grad, acc);
  const int64_t end = o.end < 0 ? grad.numel() : o.end;
  LOOM_ASSERT(0 <= o.begin && o.begin <= end && end <= grad.numel());
  auto* a = static_cast<uint64_t*>(acc.data_ptr());
  return core::visit_float_dtype(grad.dtype(), "fixed_point::accumulate", [&]<class T>() {
    T* g = static_cast<T*>(grad.data_ptr());
    return o.mode == Mode::Add ? accumulate_typed<Mode::Add>(g, a, o.begin, end, o.zero_grad)
                               : accumulate_typed<Mode::Assign>(g, a, o.begin, end, o.zero_grad);
  });
}

void to_float(const Tensor& acc, Tensor& grad) {
  check(grad, acc);
  // The one conversion back, shared with the parameter servers' merge (optim/fixed_point.h).
  optim::fixed_point::to_float({static_cast<const int64_t*>(acc.data_ptr()), static_cast<size_t>(grad.numel())},
                               grad.dtype(), grad.data_ptr());
}

}  // namespace loom::parallel::fixed_point
