// The exact sum behind deterministic data parallelism: gradients are added as
// 64-bit integers in units of 2^-40 (fixed point), and integer addition does
// not depend on the order, so any grouping of the same atoms gives the same bits.
//
//   // given: Tensor grad_f32, Tensor acc_i64, Tensor g0, Tensor x0, Tensor g1, Tensor x1, Tensor acc_2d
//   using namespace parallel::fixed_point;
//   auto bad = accumulate(grad_f32, acc_i64, {.mode = Mode::Assign});  // acc = round(grad 2^40); grad = 0
//   bad = accumulate(grad_f32, acc_i64);                                // acc += round(grad 2^40); grad = 0
//   bad = accumulate(grad_f32, acc_i64, {.zero_grad = false});          // acc += round(grad 2^40); grad kept
//   if (bad) { ... }   // grad[bad->index] was bad->value, outside the range: the sum is not exact
//   to_float(acc_i64, grad_f32);                                        // grad = acc 2^-40
//   // a linear layer's weight gradient, one term per atom, never formed in memory:
//   std::vector<Product> terms = {{g0, x0}, {g1, x1}};   // g: [rows, out], x: [rows, in] (f32)
//   bad = accumulate_products(terms, acc_2d);            // acc[o, i] += round(sum_r g[r, o] x[r, i] 2^40), per term
//
// Limits (docs/ARCHITECTURE.md, "Data parallelism"): each value added must
// satisfy |g| <= kMaxMagnitude (2^51 - 1 units), so that kMaxAtoms of them
// never overflow an int64 (4096 (2^51 - 1) < 2^63); values are rounded to the
// nearest multiple of 2^-40 (ties to even). Both loops are plain vectorizable
// arithmetic (the 1.5 * 2^52 rounding trick for double -> int64, a hi/lo
// split for int64 -> double), exact in IEEE double; the range check rides
// along in the same pass.
#pragma once

#include <cstdint>
#include <optional>

#include "loom/core/tensor.h"
#include "loom/optim/fixed_point.h"

namespace loom::parallel::fixed_point {

inline constexpr int kFractionBits = optim::fixed_point::kFractionBits;  // resolution 2^-40
inline constexpr double kMaxMagnitude = 0x1p11 - 0x1p-40;  // 2^51 - 1 units: the bound on one added value
inline constexpr int64_t kMaxAtoms = 4096;  // values added into one element before it is read back

enum class Mode {
  Add,     // acc += q
  Assign,  // acc = q (the first value of a sum: acc is not read)
};

struct AccumulateOptions {
  Mode mode = Mode::Add;
  int64_t begin = 0, end = -1;  // the elements [begin, end) of both tensors (-1: grad.numel())
  // Zero grad's elements after adding them (for a buffer that gathers the
  // next atom's gradient); false leaves grad as it is (a gradient that nobody
  // reads again: one pass fewer).
  bool zero_grad = true;
};

// A value outside the range: then the accumulator is no longer exact and
// the caller must fail.
struct OutOfRange {
  int64_t index = 0;  // into grad
  double value = 0;
};

// For each i of the range: acc[i] (+)= round(grad[i] * 2^40), grad[i] = 0
// (unless !zero_grad).
// `grad` is a contiguous floating tensor, `acc` a contiguous i64 tensor with
// at least as many elements. Returns the first grad[i] with
// !(|grad[i]| <= kMaxMagnitude) (NaN and infinities included), if any.
std::optional<OutOfRange> accumulate(const core::Tensor& grad, core::Tensor& acc, const AccumulateOptions& options = {});

// One term of a product sum: the weight gradient of a linear layer for one
// atom, g^T x, given by its factors (the output gradient g [rows, out] and the
// input x [rows, in], both contiguous f32 with the same rows).
struct Product {
  core::Tensor g, x;
};

enum class Kernel {
  Best,      // AVX-512 where the CPU has it
  Portable,  // plain C++ (the same bits: tests compare the two)
};

// For every term t and element (o, i) of acc ([out, in], contiguous i64):
// P = the float sum over t's rows r, in row order, of g[r, o] x[r, i], each
// step one fused multiply-add starting from 0; acc[o, i] (+)= round(P 2^40)
// (Mode::Assign: the first term assigns). The terms' products are never
// written to memory: each tile of acc is read and written once for all of
// them, which is what makes an atom's weight gradient cheaper than forming it
// and calling accumulate. P's bits depend on t's rows alone (not on the other
// terms, the tile or the kernel), so a term adds the same integer wherever it
// is computed. Returns the first (o i, P) with P outside the range, if any.
std::optional<OutOfRange> accumulate_products(const std::vector<Product>& terms, core::Tensor& acc,
                                              Mode mode = Mode::Add, Kernel kernel = Kernel::Best);

// For i < grad.numel(): grad[i] = acc[i] * 2^-40, rounded to the nearest
// double, then to grad's dtype. acc is left as it is.
void to_float(const core::Tensor& acc, core::Tensor& grad);

}  // namespace loom::parallel::fixed_point
