#include "loom/parallel/data_parallel_fixed_point.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

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
//
// Both kernels compute, for each term and element, P = the float FMA chain
// over the term's rows (in row order, from 0) of (2^40 g[r, o]) x[r, i]:
// g is scaled when it is packed (exact for every g above 2^-86 and below
// 2^88, and whatever it does below, it does the same in both kernels), so P
// is already in units and is rounded to the nearest integer as it is. A
// term's products are all in range when rows max|2^40 g| max|x| (1 + 2^-7)
// < 2^51 (each FMA rounds once, by at most 2^-24 relative, so a chain of at
// most 2^16 of them grows by less than (1 + 2^-24)^(2^16) < 1 + 2^-7);
// only the terms of a call that cannot show this check each product.

constexpr float kLimitF = 0x1p51f;  // |P| < 2^51, in units: |g^T x| < 2^11, the accumulate() range for floats

// The packed factors of one call: for each block of kRowsOfAcc rows of acc,
// every term's rows of 2^40 g for it, back to back (g's rows are `out`
// floats apart: read in place, every row of a term would be another page).
constexpr int kRowsOfAcc = 8;

struct Packed {
  std::vector<float> g;            // [ceil(out / kRowsOfAcc)][rows of all terms][kRowsOfAcc]
  int64_t rows = 0;                // of all terms
  bool surely_in_range = true;     // every product of every term provably |P| < 2^51
};

struct Factors {
  const float* g;
  const float* x;
  int64_t rows;
};

// max |v| over `count` rows of n values `stride` apart; NaN if one is NaN.
// (Written to vectorise: a > m ? a : m is maxps, the NaN test an or.)
float max_abs(const float* v, int64_t n, int64_t stride, int64_t count) {
  float m = 0.0f;
  bool nan = false;
  for (int64_t r = 0; r < count; ++r) {
    for (int64_t i = 0; i < n; ++i) {
      const float a = std::fabs(v[r * stride + i]);
      m = a > m ? a : m;
      nan |= a != a;
    }
  }
  return nan ? std::numeric_limits<float>::quiet_NaN() : m;
}

Packed pack(const std::vector<Factors>& terms, int64_t out, int64_t in) {
  Packed p;
  for (const Factors& t : terms) p.rows += t.rows;
  const int64_t blocks = (out + kRowsOfAcc - 1) / kRowsOfAcc;
  p.g.assign(static_cast<size_t>(blocks * p.rows * kRowsOfAcc), 0.0f);
  int64_t first = 0;
  for (const Factors& t : terms) {
    for (int64_t r = 0; r < t.rows; ++r) {
      const float* src = t.g + r * out;
      for (int64_t o0 = 0; o0 < out; o0 += kRowsOfAcc) {
        float* dst = p.g.data() + ((o0 / kRowsOfAcc) * p.rows + first + r) * kRowsOfAcc;
        const int64_t n = std::min<int64_t>(kRowsOfAcc, out - o0);
        for (int64_t j = 0; j < n; ++j) dst[j] = src[o0 + j] * 0x1p40f;
      }
    }
    const float gmax = max_abs(t.g, out, out, t.rows) * 0x1p40f;
    const double bound = static_cast<double>(t.rows) * gmax * max_abs(t.x, in, in, t.rows) * (1.0 + 0x1p-7);
    if (!(bound < kLimitF) || t.rows > (int64_t{1} << 16)) p.surely_in_range = false;
    first += t.rows;
  }
  return p;
}

// round(P) for P in units, |P| < 2^51 (accumulate_block's rounding).
inline uint64_t round_units(float p) {
  return std::bit_cast<uint64_t>(static_cast<double>(p) + kRound) - std::bit_cast<uint64_t>(kRound);
}

struct Bad {
  bool found = false;
  int64_t index = 0;
  double value = 0;  // g^T x, not in units
  void note(int64_t i, float p) {
    if (!found) *this = {true, i, static_cast<double>(p) * 0x1p-40};
  }
};

// Plain C++ (acc null: only finds the first offender): a row of acc at a
// time, columns in blocks of 64 kept in float while the term's rows are added,
// one std::fma each (the compiler may vectorise across columns; every
// column's chain stays in row order).
void products_portable(const std::vector<Factors>& terms, const Packed& packed, int64_t out, int64_t in,
                       uint64_t* acc, bool assign, Bad& bad) {
  constexpr int64_t kCols = 64;
  float p[kCols];
  for (int64_t o = 0; o < out; ++o) {
    const float* gblock = packed.g.data() + (o / kRowsOfAcc) * packed.rows * kRowsOfAcc + o % kRowsOfAcc;
    for (int64_t i0 = 0; i0 < in; i0 += kCols) {
      const int64_t n = std::min(kCols, in - i0);
      uint64_t* a = acc ? acc + o * in + i0 : nullptr;
      const float* g = gblock;
      for (size_t t = 0; t < terms.size(); ++t) {
        std::fill(p, p + n, 0.0f);
        for (int64_t r = 0; r < terms[t].rows; ++r) {
          const float gv = g[r * kRowsOfAcc];
          const float* x = terms[t].x + r * in + i0;
          for (int64_t i = 0; i < n; ++i) p[i] = std::fma(gv, x[i], p[i]);
        }
        g += terms[t].rows * kRowsOfAcc;
        for (int64_t i = 0; i < n; ++i) {
          if (!(std::fabs(p[i]) < kLimitF)) bad.note(o * in + i0 + i, p[i]);
          if (!acc) continue;  // only looking for an offender
          const uint64_t q = round_units(p[i]);
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

// AVX-512: a tile is MO rows of acc by 16 NV columns; per term, MO x NV
// float accumulators, one FMA per row of the term (in row order: the portable
// kernel's chain), then rounded (vcvtps2qq rounds to nearest even, as the
// 1.5 2^52 trick does) into MO x NV x 2 vectors of int64 that stay in
// registers across the terms. kChecked: each product is compared with the
// range (when the bound could not show it for every term). Measured on the
// 256 x 784 and 1024 x 3136 layers at 8 terms of 16 rows (one thread), 8 x 1
// was the fastest of 8 x 1, 4 x 2 (registers), 8 x 2 and 4 x 4 (sums in
// L1); packing x's block of columns (below) took the big layer from 17 to
// 11.6 ms (oneDNN's one 128-deep GEMM: 7.7), the small one from 0.81 to
// 0.74-0.84 (0.46): x's rows in place are on a page each.
template <int MO, int NV, bool kChecked>
__attribute__((target("avx512f,avx512dq"))) void products_tile_avx512(const std::vector<Factors>& terms,
                                                                      const float* gblock, const float* xblock,
                                                                      int64_t in, int64_t o0,
                                                                      int64_t i0, const __mmask16* m, uint64_t* acc,
                                                                      bool assign, __mmask16& bad) {
  __m512i q[MO][NV][2];
  for (int j = 0; j < MO; ++j) {
    for (int v = 0; v < NV; ++v) q[j][v][0] = q[j][v][1] = _mm512_setzero_si512();
  }
  const float* g = gblock;
  const float* x = xblock;
  for (const Factors& t : terms) {
    __m512 p[MO][NV];
    for (int j = 0; j < MO; ++j) {
      for (int v = 0; v < NV; ++v) p[j][v] = _mm512_setzero_ps();
    }
    const int64_t rows = t.rows;
    for (int64_t r = 0; r < rows; ++r) {
      __m512 xv[NV];
      for (int v = 0; v < NV; ++v) xv[v] = _mm512_load_ps(x + r * 16 * NV + 16 * v);
      for (int j = 0; j < MO; ++j) {
        const __m512 b = _mm512_set1_ps(g[r * kRowsOfAcc + j]);
        for (int v = 0; v < NV; ++v) p[j][v] = _mm512_fmadd_ps(b, xv[v], p[j][v]);
      }
    }
    g += rows * kRowsOfAcc;
    x += rows * 16 * NV;
    for (int j = 0; j < MO; ++j) {
      for (int v = 0; v < NV; ++v) {
        if constexpr (kChecked) {
          bad |= static_cast<__mmask16>(m[v] & ~_mm512_cmp_ps_mask(_mm512_abs_ps(p[j][v]), _mm512_set1_ps(kLimitF),
                                                                    _CMP_LT_OQ));
        }
        const __m256 lo = _mm512_castps512_ps256(p[j][v]);
        const __m256 hi = _mm512_castps512_ps256(_mm512_shuffle_f32x4(p[j][v], p[j][v], _MM_SHUFFLE(3, 2, 3, 2)));
        q[j][v][0] = _mm512_add_epi64(q[j][v][0], _mm512_cvt_roundps_epi64(lo, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        q[j][v][1] = _mm512_add_epi64(q[j][v][1], _mm512_cvt_roundps_epi64(hi, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
      }
    }
  }
  for (int j = 0; j < MO; ++j) {
    uint64_t* a = acc + (o0 + j) * in + i0;
    for (int v = 0; v < NV; ++v) {
      for (int h = 0; h < 2; ++h) {
        const __mmask8 mh = static_cast<__mmask8>(m[v] >> (8 * h));
        __m512i s = q[j][v][h];
        if (!assign) s = _mm512_add_epi64(s, _mm512_maskz_loadu_epi64(mh, a + 16 * v + 8 * h));
        _mm512_mask_storeu_epi64(a + 16 * v + 8 * h, mh, s);
      }
    }
  }
}

constexpr int kVectors = 1;  // of 16 columns a tile

template <bool kChecked>
__attribute__((target("avx512f,avx512dq"))) void products_block_avx512(const std::vector<Factors>& terms,
                                                                       const float* gblock, const float* xblock,
                                                                       int64_t in, int64_t o0, int64_t mo, int64_t i0,
                                                                       const __mmask16* m,
                                                                       uint64_t* acc, bool assign, __mmask16& bad) {
  switch (mo) {
    case 8: products_tile_avx512<8, kVectors, kChecked>(terms, gblock, xblock, in, o0, i0, m, acc, assign, bad); break;
    case 7: products_tile_avx512<7, kVectors, kChecked>(terms, gblock, xblock, in, o0, i0, m, acc, assign, bad); break;
    case 6: products_tile_avx512<6, kVectors, kChecked>(terms, gblock, xblock, in, o0, i0, m, acc, assign, bad); break;
    case 5: products_tile_avx512<5, kVectors, kChecked>(terms, gblock, xblock, in, o0, i0, m, acc, assign, bad); break;
    case 4: products_tile_avx512<4, kVectors, kChecked>(terms, gblock, xblock, in, o0, i0, m, acc, assign, bad); break;
    case 3: products_tile_avx512<3, kVectors, kChecked>(terms, gblock, xblock, in, o0, i0, m, acc, assign, bad); break;
    case 2: products_tile_avx512<2, kVectors, kChecked>(terms, gblock, xblock, in, o0, i0, m, acc, assign, bad); break;
    default: products_tile_avx512<1, kVectors, kChecked>(terms, gblock, xblock, in, o0, i0, m, acc, assign, bad); break;
  }
}

// Columns in blocks of 16 kVectors (outer: the block of x, all terms' rows,
// stays in L1 while every row of acc is done), rows of acc in eights. Returns
// whether a product was out of range (the caller finds which with the
// portable kernel).
__attribute__((target("avx512f,avx512dq"))) bool products_avx512(const std::vector<Factors>& terms,
                                                                 const Packed& packed, int64_t out, int64_t in,
                                                                 uint64_t* acc, bool assign) {
  __mmask16 bad = 0;
  // The packed block of x, 64-byte aligned (aligned loads).
  std::vector<float> x_storage(static_cast<size_t>(packed.rows * 16 * kVectors + 16));
  float* const xblock = x_storage.data() + (16 - (reinterpret_cast<uintptr_t>(x_storage.data()) / sizeof(float)) % 16) % 16;
  for (int64_t i0 = 0; i0 < in; i0 += 16 * kVectors) {
    __mmask16 m[kVectors];
    for (int v = 0; v < kVectors; ++v) {
      const int64_t n = std::clamp<int64_t>(in - i0 - 16 * v, 0, 16);
      m[v] = n >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << n) - 1);
    }
    // This block of columns of every term's x, back to back and zero-padded:
    // in place, its rows are `in` floats apart, each on another page.
    float* xp = xblock;
    for (const Factors& t : terms) {
      for (int64_t r = 0; r < t.rows; ++r, xp += 16 * kVectors) {
        for (int v = 0; v < kVectors; ++v) _mm512_store_ps(xp + 16 * v, _mm512_maskz_loadu_ps(m[v], t.x + r * in + i0 + 16 * v));
      }
    }
    for (int64_t o0 = 0; o0 < out; o0 += kRowsOfAcc) {
      const float* gblock = packed.g.data() + (o0 / kRowsOfAcc) * packed.rows * kRowsOfAcc;
      const int64_t mo = std::min<int64_t>(kRowsOfAcc, out - o0);
      if (packed.surely_in_range) {
        products_block_avx512<false>(terms, gblock, xblock, in, o0, mo, i0, m, acc, assign, bad);
      } else {
        products_block_avx512<true>(terms, gblock, xblock, in, o0, mo, i0, m, acc, assign, bad);
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
  const Packed packed = pack(factors, out, in);
  Bad bad;
  if (kernel == Kernel::Best && has_avx512()) {
    if (!products_avx512(factors, packed, out, in, a, assign)) return std::nullopt;
    products_portable(factors, packed, out, in, nullptr, assign, bad);  // out of range somewhere: which?
  } else {
    products_portable(factors, packed, out, in, a, assign, bad);
  }
  if (!bad.found) return std::nullopt;
  return OutOfRange{bad.index, bad.value};
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
