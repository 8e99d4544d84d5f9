// conv2d, pooling and batch norm: forward against naive loops written here,
// f32 (oneDNN) against f64 (reference loops), f64 finite-difference
// gradient checks, argument errors, and batch-norm running statistics.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "loom/autograd/engine.h"
#include "loom/autograd/gradcheck.h"
#include "loom/core/allocator.h"
#include "loom/ops/ops.h"

namespace loom::ops {
namespace {

using core::DType;
using core::Generator;

struct ConvCase {
  const char* name;
  int64_t n, c, h, w, o, kh, kw;
  Conv2dParams p;
};

const ConvCase kConvCases[] = {
    {"plain", 2, 3, 7, 6, 4, 3, 3, {}},
    {"pad1", 2, 3, 7, 6, 4, 3, 3, {.pad_h = 1, .pad_w = 1}},
    {"stride2_rect", 2, 3, 9, 8, 5, 3, 2, {.stride_h = 2, .stride_w = 2, .pad_h = 1}},
    {"dilation2", 1, 2, 9, 9, 3, 3, 3, {.pad_h = 2, .pad_w = 2, .dilation_h = 2, .dilation_w = 2}},
    {"groups2", 2, 4, 6, 5, 6, 3, 3, {.pad_h = 1, .pad_w = 1, .groups = 2}},
    {"depthwise", 2, 3, 5, 5, 3, 3, 3, {.stride_h = 2, .stride_w = 1, .pad_h = 1, .pad_w = 1, .groups = 3}},
    {"mixed", 3, 2, 8, 7, 4, 2, 3, {.stride_h = 2, .stride_w = 1, .pad_w = 1, .dilation_h = 1, .dilation_w = 2}},
    {"one_by_one", 2, 5, 4, 4, 3, 1, 1, {}},
};

int64_t out_len(int64_t in, int64_t k, int64_t stride, int64_t pad, int64_t dilation) {
  return (in + 2 * pad - dilation * (k - 1) - 1) / stride + 1;
}

// The definition of a convolution, one output element at a time.
std::vector<double> naive_conv(const ConvCase& t, const std::vector<double>& x, const std::vector<double>& w,
                               const std::vector<double>& b) {
  const auto& p = t.p;
  const int64_t oh = out_len(t.h, t.kh, p.stride_h, p.pad_h, p.dilation_h);
  const int64_t ow = out_len(t.w, t.kw, p.stride_w, p.pad_w, p.dilation_w);
  const int64_t cg = t.c / p.groups, og = t.o / p.groups;
  std::vector<double> y;
  for (int64_t n = 0; n < t.n; ++n)
    for (int64_t o = 0; o < t.o; ++o)
      for (int64_t i = 0; i < oh; ++i)
        for (int64_t j = 0; j < ow; ++j) {
          double acc = b[o];
          for (int64_t cl = 0; cl < cg; ++cl)
            for (int64_t ki = 0; ki < t.kh; ++ki)
              for (int64_t kj = 0; kj < t.kw; ++kj) {
                const int64_t iy = i * p.stride_h - p.pad_h + ki * p.dilation_h;
                const int64_t ix = j * p.stride_w - p.pad_w + kj * p.dilation_w;
                if (iy < 0 || iy >= t.h || ix < 0 || ix >= t.w) continue;
                const int64_t c = (o / og) * cg + cl;
                acc += x[((n * t.c + c) * t.h + iy) * t.w + ix] * w[((o * cg + cl) * t.kh + ki) * t.kw + kj];
              }
          y.push_back(acc);
        }
  return y;
}

void expect_near_all(const std::vector<double>& got, const std::vector<double>& want, double tol,
                     const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_NEAR(got[i], want[i], tol * (1 + std::abs(want[i]))) << what << " at " << i;
  }
}

TEST(Conv2d, ForwardMatchesNaiveLoops) {
  for (const ConvCase& t : kConvCases) {
    for (DType dtype : {DType::F32, DType::F64}) {
      Generator gen(7);
      Tensor x = randn({t.n, t.c, t.h, t.w}, gen, dtype);
      Tensor w = randn({t.o, t.c / t.p.groups, t.kh, t.kw}, gen, dtype);
      Tensor b = randn({t.o}, gen, dtype);
      Tensor y = conv2d(x, w, b, t.p);
      EXPECT_EQ(y.shape(), (core::Shape{t.n, t.o, out_len(t.h, t.kh, t.p.stride_h, t.p.pad_h, t.p.dilation_h),
                                        out_len(t.w, t.kw, t.p.stride_w, t.p.pad_w, t.p.dilation_w)}))
          << t.name;
      const auto want = naive_conv(t, x.to_vector<double>(), w.to_vector<double>(), b.to_vector<double>());
      expect_near_all(y.to_vector<double>(), want, dtype == DType::F32 ? 1e-4 : 1e-12,
                      std::string(t.name) + " " + std::string(core::name(dtype)));
    }
  }
}

TEST(Conv2d, WithoutBiasAndFromStridedInput) {
  Generator gen(3);
  const ConvCase t{"nobias", 2, 3, 6, 6, 4, 3, 3, {.pad_h = 1, .pad_w = 1}};
  // A transposed view: the op must make it contiguous before the kernel.
  Tensor xt = transpose(randn({t.n, t.c, t.w, t.h}, gen), 2, 3);
  Tensor w = randn({t.o, t.c, t.kh, t.kw}, gen);
  Tensor y = conv2d(xt, w, Tensor(), t.p);
  const auto want = naive_conv(t, xt.to_vector<double>(), w.to_vector<double>(), std::vector<double>(t.o, 0.0));
  expect_near_all(y.to_vector<double>(), want, 1e-4, "nobias");
}

// Runs conv2d forward and backward in `dtype` and returns y, gx, gw, gb (as f64).
std::vector<std::vector<double>> conv_forward_backward(const ConvCase& t, DType dtype, uint64_t seed) {
  Generator gen(seed);
  Tensor x = to_dtype(randn({t.n, t.c, t.h, t.w}, gen, DType::F64), dtype).set_requires_grad(true);
  Tensor w = to_dtype(randn({t.o, t.c / t.p.groups, t.kh, t.kw}, gen, DType::F64), dtype).set_requires_grad(true);
  Tensor b = to_dtype(randn({t.o}, gen, DType::F64), dtype).set_requires_grad(true);
  Tensor y = conv2d(x, w, b, t.p);
  Tensor gy = to_dtype(randn(y.shape(), gen, DType::F64), dtype);
  autograd::backward(y, gy);
  return {y.to_vector<double>(), x.grad().to_vector<double>(), w.grad().to_vector<double>(),
          b.grad().to_vector<double>()};
}

TEST(Conv2d, OneDnnF32AgreesWithF64Reference) {
  std::vector<ConvCase> cases(std::begin(kConvCases), std::end(kConvCases));
  // The reference CNN's layers, at a small batch.
  cases.push_back({"cnn_conv1", 4, 1, 28, 28, 32, 5, 5, {.pad_h = 2, .pad_w = 2}});
  cases.push_back({"cnn_conv2", 4, 32, 14, 14, 64, 5, 5, {.pad_h = 2, .pad_w = 2}});
  for (const ConvCase& t : cases) {
    const auto f32 = conv_forward_backward(t, DType::F32, 11);
    const auto f64 = conv_forward_backward(t, DType::F64, 11);
    const char* parts[] = {"y", "gx", "gw", "gb"};
    for (size_t i = 0; i < 4; ++i) expect_near_all(f32[i], f64[i], 1e-4, std::string(t.name) + " " + parts[i]);
  }
}

TEST(Conv2d, OnlyTheNeededGradients) {
  Generator gen(5);
  Tensor x = randn({2, 3, 6, 6}, gen).set_requires_grad(true);
  Tensor w = randn({4, 3, 3, 3}, gen);  // frozen
  Tensor b = randn({4}, gen);
  autograd::backward(sum(conv2d(x, w, b, {.pad_h = 1, .pad_w = 1})));
  EXPECT_TRUE(x.grad().defined());
  EXPECT_FALSE(w.grad().defined());
  EXPECT_FALSE(b.grad().defined());
}

TEST(Conv2d, RepeatedStepsAllocateNothingNew) {
  Generator gen(9);
  Tensor x = randn({8, 32, 14, 14}, gen);
  Tensor w = randn({64, 32, 5, 5}, gen).set_requires_grad(true);
  Tensor b = randn({64}, gen).set_requires_grad(true);
  auto step = [&] {
    autograd::backward(sum(conv2d(x, w, b, {.pad_h = 2, .pad_w = 2})));
    autograd::zero_grad(w, true);
    autograd::zero_grad(b, true);
  };
  step();
  step();
  const uint64_t before = core::cpu_allocator().stats().system_allocs;
  step();
  EXPECT_EQ(core::cpu_allocator().stats().system_allocs, before);
}

TEST(Conv2d, ConcurrentCallersShareCachedPrimitives) {
  // Ranks run as threads in one process: they share the primitive cache.
  Generator gen(31);
  Tensor w = randn({8, 4, 3, 3}, gen);
  std::vector<Tensor> xs, want, got(4);
  for (int i = 0; i < 4; ++i) {
    xs.push_back(randn({3, 4, 10, 10}, gen));
    want.push_back(conv2d(xs.back(), w, Tensor(), {.pad_h = 1, .pad_w = 1}));
  }
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&, i] {
      for (int rep = 0; rep < 5; ++rep) got[i] = conv2d(xs[i], w, Tensor(), {.pad_h = 1, .pad_w = 1});
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < 4; ++i) EXPECT_EQ(got[i].to_vector<float>(), want[i].to_vector<float>()) << i;
}

TEST(Conv2d, EmptyBatch) {
  Generator gen(1);
  Tensor x = zeros({0, 3, 8, 8});
  Tensor w = randn({4, 3, 3, 3}, gen).set_requires_grad(true);
  Tensor y = conv2d(x, w, Tensor());
  EXPECT_EQ(y.shape(), (core::Shape{0, 4, 6, 6}));
  autograd::backward(sum(y));
  EXPECT_EQ(w.grad().to_vector<float>(), std::vector<float>(w.numel(), 0.0f));
}

TEST(Conv2d, HalfInputsComputeInF32) {
  Generator gen(12);
  Tensor x = randn({2, 3, 6, 6}, gen), w = randn({4, 3, 3, 3}, gen), b = randn({4}, gen);
  for (DType half : {DType::F16, DType::BF16}) {
    Tensor y = conv2d(to_dtype(x, half), to_dtype(w, half), to_dtype(b, half));
    EXPECT_EQ(y.dtype(), half);
    // Rounding the inputs and the output to 16 bits: compare loosely.
    expect_near_all(y.to_vector<double>(), conv2d(x, w, b).to_vector<double>(), 0.1, std::string(core::name(half)));
  }
}

TEST(Conv2d, Gradcheck) {
  for (const ConvCase& t : kConvCases) {
    Generator gen(21);
    std::vector<Tensor> in = {randn({t.n, t.c, t.h, t.w}, gen, DType::F64),
                              randn({t.o, t.c / t.p.groups, t.kh, t.kw}, gen, DType::F64),
                              randn({t.o}, gen, DType::F64)};
    auto r = autograd::gradcheck([&](const std::vector<Tensor>& v) { return conv2d(v[0], v[1], v[2], t.p); }, in);
    EXPECT_TRUE(r.ok) << t.name << ": " << r.message;
  }
}

TEST(Conv2d, BadArgumentsThrow) {
  Tensor x = zeros({8, 3, 28, 28});
  try {
    conv2d(x, zeros({32, 1, 5, 5}), Tensor());
    FAIL() << "expected ShapeError";
  } catch (const ShapeError& e) {
    EXPECT_EQ(std::string(e.what()),
              "conv2d: input [8, 3, 28, 28] has 3 channels but weight [32, 1, 5, 5] expects 1 (groups 1)");
  }
  EXPECT_THROW(conv2d(zeros({3, 28, 28}), zeros({4, 3, 3, 3}), Tensor()), ShapeError);
  EXPECT_THROW(conv2d(x, zeros({4, 3, 3}), Tensor()), ShapeError);
  EXPECT_THROW(conv2d(x, zeros({4, 3, 3, 3}), zeros({5})), ShapeError);
  EXPECT_THROW(conv2d(x, zeros({5, 1, 3, 3}), Tensor(), {.groups = 3}), ShapeError);  // 5 outputs, 3 groups
  EXPECT_THROW(conv2d(zeros({1, 3, 2, 2}), zeros({4, 3, 3, 3}), Tensor()), ShapeError);  // kernel too big
  EXPECT_THROW(conv2d(x, zeros({4, 3, 3, 3}), Tensor(), {.stride_h = 0}), ValueError);
  EXPECT_THROW(conv2d(x, zeros({4, 3, 3, 3}), Tensor(), {.pad_w = -1}), ValueError);
  EXPECT_THROW(conv2d(x, zeros({4, 3, 3, 3}, DType::F64), Tensor()), TypeError);
  EXPECT_THROW(conv2d(zeros({1, 3, 4, 4}, DType::I32), zeros({4, 3, 3, 3}, DType::I32), Tensor()), TypeError);
}

// ---- pooling ----

TEST(MaxPool2d, ValuesAndIndicesWithPadding) {
  // All negative, so a padded position (-inf) must never win over them.
  std::vector<double> v(16);
  for (int i = 0; i < 16; ++i) v[i] = -1.0 - ((i * 7) % 16);
  for (DType dtype : {DType::F32, DType::F64}) {
    Tensor x = to_dtype(Tensor::from_vector<double>(v, {1, 1, 4, 4}), dtype);
    Tensor y = max_pool2d(x, {.kernel_h = 3, .kernel_w = 3, .stride_h = 2, .stride_w = 2, .pad_h = 1, .pad_w = 1});
    ASSERT_EQ(y.shape(), (core::Shape{1, 1, 2, 2}));
    // Each output is the max over its clipped window of the 4x4 input.
    const int64_t win[4][4] = {{0, 2, 0, 2}, {0, 2, 1, 4}, {1, 4, 0, 2}, {1, 4, 1, 4}};  // y0 y1 x0 x1
    for (int k = 0; k < 4; ++k) {
      double best = -std::numeric_limits<double>::infinity();
      for (int64_t iy = win[k][0]; iy < win[k][1]; ++iy)
        for (int64_t ix = win[k][2]; ix < win[k][3]; ++ix) best = std::max(best, v[iy * 4 + ix]);
      EXPECT_EQ(y.to_vector<double>()[k], best) << k;
    }
  }
}

TEST(MaxPool2d, BackwardRoutesToTheArgmax) {
  Tensor x = Tensor::from_vector<double>({1, 5, 2, 0,  //
                                          3, 4, 9, 8,  //
                                          7, 6, 1, 2,  //
                                          0, 0, 3, 1},
                                         {1, 1, 4, 4})
                 .set_requires_grad(true);
  Tensor y = max_pool2d(x, {});  // 2x2, stride 2
  EXPECT_EQ(y.to_vector<double>(), (std::vector<double>{5, 9, 7, 3}));
  autograd::backward(y, Tensor::from_vector<double>({1, 2, 3, 4}, {1, 1, 2, 2}));
  EXPECT_EQ(x.grad().to_vector<double>(),
            (std::vector<double>{0, 1, 0, 0, 0, 0, 2, 0, 3, 0, 0, 0, 0, 0, 4, 0}));
}

TEST(MaxPool2d, NanPropagates) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  Tensor x = Tensor::from_vector<double>({1, nan, 2, 3, 0, 1, 4, 5}, {1, 1, 2, 4});
  const auto y = max_pool2d(x, {}).to_vector<double>();
  EXPECT_TRUE(std::isnan(y[0]));
  EXPECT_EQ(y[1], 5);
}

// The unrolled 2x2/stride-2 path against a plain reference: ties go to the
// first maximum in row-major window order (so does the gradient), a NaN
// anywhere in a window wins, -inf windows pick their first element, and an
// odd width leaves the last column out.
TEST(MaxPool2d, TwoByTwoMatchesReferenceOnTiesNanAndInf) {
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  // Widths 7 and 21: 3 and 10 outputs per row (the f32 path takes 8 at a
  // time, the rest masked).
  for (const int64_t w : {7, 21}) {
    const int64_t h = 6, ow = w / 2;
    std::vector<double> v(2 * h * w);
    for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<double>((i * 5) % 3);  // many ties
    v[3] = nan;                                                                     // window (0, 1)
    v[w + 4] = inf;                                                                 // window (0, 2)
    v[2 * w + 0] = v[2 * w + 1] = v[3 * w + 0] = v[3 * w + 1] = -inf;               // window (1, 0)
    v[h * w + 3 * w + 3] = nan;                                                     // plane 1, window (1, 1)
    v[h * w + 2 * w + 2] = -inf;
    for (DType dtype : {DType::F32, DType::F64}) {
      Tensor x = to_dtype(Tensor::from_vector<double>(v, {1, 2, h, w}), dtype).set_requires_grad(true);
      Tensor y = max_pool2d(x, {});
      ASSERT_EQ(y.shape(), (core::Shape{1, 2, 3, ow}));
      const auto got = y.to_vector<double>();
      std::vector<double> expected_grad(v.size(), 0.0);
      for (int64_t plane = 0; plane < 2; ++plane) {
        for (int64_t oy = 0; oy < 3; ++oy) {
          for (int64_t ox = 0; ox < ow; ++ox) {
            double best = -inf;
            int64_t at = plane * h * w + 2 * oy * w + 2 * ox;
            for (int64_t iy = 2 * oy; iy < 2 * oy + 2 && !std::isnan(best); ++iy) {
              for (int64_t ix = 2 * ox; ix < 2 * ox + 2; ++ix) {
                const double e = v[plane * h * w + iy * w + ix];
                if (std::isnan(e) || e > best) best = e, at = plane * h * w + iy * w + ix;
                if (std::isnan(e)) break;
              }
            }
            const double g = got[(plane * 3 + oy) * ow + ox];
            if (std::isnan(best)) {
              EXPECT_TRUE(std::isnan(g)) << w << ": " << plane << " " << oy << " " << ox;
            } else {
              EXPECT_EQ(g, best) << w << ": " << plane << " " << oy << " " << ox;
            }
            expected_grad[at] += 1.0;
          }
        }
      }
      autograd::backward(y, ones_like(y));
      EXPECT_EQ(x.grad().to_vector<double>(), expected_grad) << core::name(dtype) << " width " << w;
    }
  }
}

TEST(AvgPool2d, CountIncludePad) {
  Tensor x = ones({1, 1, 3, 3});
  Pool2dParams p{.kernel_h = 3, .kernel_w = 3, .stride_h = 1, .stride_w = 1, .pad_h = 1, .pad_w = 1};
  // The corner window holds 4 real ones out of 9 positions.
  EXPECT_NEAR(avg_pool2d(x, p).at<float>({0, 0, 0, 0}), 4.0f / 9.0f, 1e-6);
  EXPECT_NEAR(avg_pool2d(x, p).at<float>({0, 0, 1, 1}), 1.0f, 1e-6);
  p.count_include_pad = false;
  EXPECT_NEAR(avg_pool2d(x, p).at<float>({0, 0, 0, 0}), 1.0f, 1e-6);
}

TEST(Pool2d, Gradcheck) {
  const Pool2dParams configs[] = {
      {},
      {.kernel_h = 3, .kernel_w = 3, .stride_h = 2, .stride_w = 2, .pad_h = 1, .pad_w = 1},
      {.kernel_h = 3, .kernel_w = 2, .stride_h = 1, .stride_w = 1, .pad_h = 1, .pad_w = 0},  // overlapping
      {.kernel_h = 3, .kernel_w = 3, .stride_h = 2, .stride_w = 2, .pad_h = 1, .pad_w = 1, .count_include_pad = false},
  };
  for (const Pool2dParams& p : configs) {
    Generator gen(4);
    std::vector<Tensor> in = {randn({2, 3, 7, 6}, gen, DType::F64)};
    auto max_r = autograd::gradcheck([&](const std::vector<Tensor>& v) { return max_pool2d(v[0], p); }, in);
    EXPECT_TRUE(max_r.ok) << "max_pool2d kernel " << p.kernel_h << "x" << p.kernel_w << ": " << max_r.message;
    auto avg_r = autograd::gradcheck([&](const std::vector<Tensor>& v) { return avg_pool2d(v[0], p); }, in);
    EXPECT_TRUE(avg_r.ok) << "avg_pool2d kernel " << p.kernel_h << "x" << p.kernel_w << ": " << avg_r.message;
  }
}

TEST(Pool2d, F32AgreesWithF64) {
  Generator gen(8);
  Tensor x64 = randn({4, 8, 13, 11}, gen, DType::F64);
  Tensor x32 = to_dtype(x64, DType::F32);
  const Pool2dParams p{.kernel_h = 3, .kernel_w = 3, .stride_h = 2, .stride_w = 2, .pad_h = 1, .pad_w = 1};
  expect_near_all(max_pool2d(x32, p).to_vector<double>(), max_pool2d(x64, p).to_vector<double>(), 1e-6, "max");
  expect_near_all(avg_pool2d(x32, p).to_vector<double>(), avg_pool2d(x64, p).to_vector<double>(), 1e-6, "avg");
}

TEST(Pool2d, BadArgumentsThrow) {
  EXPECT_THROW(max_pool2d(zeros({3, 4, 4})), ShapeError);
  EXPECT_THROW(max_pool2d(zeros({1, 1, 1, 1})), ShapeError);  // 2x2 window does not fit
  EXPECT_THROW(avg_pool2d(zeros({1, 1, 4, 4}), {.kernel_h = 2, .kernel_w = 2, .pad_h = 2}), ValueError);
  EXPECT_THROW(avg_pool2d(zeros({1, 1, 4, 4}), {.stride_w = 0}), ValueError);
  EXPECT_THROW(max_pool2d(zeros({1, 1, 4, 4}, DType::I64)), TypeError);
}

// ---- batch norm ----

TEST(BatchNorm, TrainingNormalisesAndUpdatesRunningStats) {
  // Channel 0 holds {1, 2, 3, 4}, channel 1 holds {10, 10, 20, 20} across N = 2 and H * W = 2.
  Tensor x = Tensor::from_vector<double>({1, 2, 10, 10, 3, 4, 20, 20}, {2, 2, 2, 1});
  Tensor rm = Tensor::from_vector<double>({0, 1}, {2});
  Tensor rv = Tensor::from_vector<double>({1, 1}, {2});
  Tensor y = batch_norm(x, Tensor(), Tensor(), rm, rv, /*training=*/true, /*momentum=*/0.1, /*eps=*/0.0);
  // Biased variances 1.25 and 25; unbiased 5/3 and 100/3.
  const double s0 = 1 / std::sqrt(1.25);
  expect_near_all(y.to_vector<double>(), {-1.5 * s0, -0.5 * s0, -1, -1, 0.5 * s0, 1.5 * s0, 1, 1}, 1e-12, "y");
  expect_near_all(rm.to_vector<double>(), {0.9 * 0 + 0.1 * 2.5, 0.9 * 1 + 0.1 * 15}, 1e-12, "running_mean");
  expect_near_all(rv.to_vector<double>(), {0.9 + 0.1 * 5.0 / 3.0, 0.9 + 0.1 * 100.0 / 3.0}, 1e-12, "running_var");
}

TEST(BatchNorm, EvalUsesRunningStats) {
  Generator gen(2);
  Tensor x = randn({4, 3, 2, 2}, gen, DType::F64);
  Tensor w = Tensor::from_vector<double>({1, 2, 3}, {3});
  Tensor b = Tensor::from_vector<double>({0, -1, 1}, {3});
  Tensor rm = Tensor::from_vector<double>({0.5, -0.5, 0}, {3});
  Tensor rv = Tensor::from_vector<double>({4, 1, 0.25}, {3});
  Tensor y = batch_norm(x, w, b, rm, rv, /*training=*/false, 0.1, 0.0);
  const auto xv = x.to_vector<double>(), yv = y.to_vector<double>();
  const double mean[] = {0.5, -0.5, 0}, sd[] = {2, 1, 0.5}, wv[] = {1, 2, 3}, bv[] = {0, -1, 1};
  for (size_t i = 0; i < xv.size(); ++i) {
    const size_t c = (i / 4) % 3;
    EXPECT_NEAR(yv[i], (xv[i] - mean[c]) / sd[c] * wv[c] + bv[c], 1e-12);
  }
  EXPECT_EQ(rm.to_vector<double>(), (std::vector<double>{0.5, -0.5, 0}));  // untouched in eval
}

TEST(BatchNorm, Gradcheck) {
  for (bool training : {true, false}) {
    for (const core::Shape& shape : {core::Shape{6, 4}, core::Shape{3, 4, 3, 2}}) {
      Generator gen(13);
      std::vector<Tensor> in = {randn(shape, gen, DType::F64), randn({4}, gen, DType::F64),
                                randn({4}, gen, DType::F64)};
      Tensor rm = randn({4}, gen, DType::F64);
      Tensor rv = add(rand({4}, gen, DType::F64), 0.5);
      auto r = autograd::gradcheck(
          [&](const std::vector<Tensor>& v) { return batch_norm(v[0], v[1], v[2], rm, rv, training); }, in);
      EXPECT_TRUE(r.ok) << (training ? "train " : "eval ") << core::to_string(shape) << ": " << r.message;
    }
  }
}

TEST(BatchNorm, F32AgreesWithF64) {
  Generator gen(17);
  Tensor x64 = add(mul(randn({16, 8, 5, 5}, gen, DType::F64), 3.0), 100.0);  // large mean: tests cancellation
  Tensor gy64 = randn(x64.shape(), gen, DType::F64);
  std::vector<std::vector<double>> results[2];
  for (DType dtype : {DType::F32, DType::F64}) {
    Tensor x = to_dtype(x64, dtype).set_requires_grad(true);
    Tensor w = ones({8}, dtype).set_requires_grad(true);
    Tensor b = zeros({8}, dtype).set_requires_grad(true);
    Tensor y = batch_norm(x, w, b, Tensor(), Tensor(), true);
    autograd::backward(y, to_dtype(gy64, dtype));
    results[dtype == DType::F64].push_back(y.to_vector<double>());
    results[dtype == DType::F64].push_back(x.grad().to_vector<double>());
    results[dtype == DType::F64].push_back(w.grad().to_vector<double>());
  }
  expect_near_all(results[0][0], results[1][0], 1e-4, "y");
  expect_near_all(results[0][1], results[1][1], 1e-3, "gx");
  expect_near_all(results[0][2], results[1][2], 1e-3, "gw");
}

TEST(BatchNorm, BadArgumentsThrow) {
  Tensor x = zeros({8, 3, 4, 4});
  EXPECT_THROW(batch_norm(zeros({8}), Tensor(), Tensor(), Tensor(), Tensor(), true), ShapeError);
  EXPECT_THROW(batch_norm(x, zeros({4}), Tensor(), Tensor(), Tensor(), true), ShapeError);
  EXPECT_THROW(batch_norm(x, Tensor(), Tensor(), zeros({3}), Tensor(), true), ValueError);  // only one stat
  EXPECT_THROW(batch_norm(x, Tensor(), Tensor(), Tensor(), Tensor(), false), ValueError);   // eval, no stats
  EXPECT_THROW(batch_norm(zeros({1, 3}), Tensor(), Tensor(), Tensor(), Tensor(), true), ValueError);
  EXPECT_THROW(batch_norm(x, zeros({3}, DType::F64), Tensor(), Tensor(), Tensor(), true), TypeError);
}

}  // namespace
}  // namespace loom::ops
