// MultiheadAttention: shapes, PyTorch's parameter layout, agreement with a
// plain-loop reference, and the causal mask.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "loom/nn/nn.h"
#include "loom/ops/ops.h"

namespace loom::nn {
namespace {

using core::DType;
using core::Shape;
using core::Tensor;

// Self-attention written out with loops, from PyTorch's definition:
// per head h, q/k/v are columns [h D, (h + 1) D) of x W_in^T + b_in.
std::vector<double> reference_attention(MultiheadAttention& m, const std::vector<double>& x, int64_t batch,
                                        int64_t seq, bool causal) {
  const int64_t e = m.options().embed_dim, heads = m.options().num_heads, d = e / heads;
  const std::vector<double> w = m.in_proj_weight().to_vector<double>(), b = m.in_proj_bias().to_vector<double>();
  const std::vector<double> wo = m.out_proj().weight().to_vector<double>(), bo = m.out_proj().bias().to_vector<double>();
  std::vector<double> out(static_cast<size_t>(batch * seq * e));
  for (int64_t n = 0; n < batch; ++n) {
    // qkv[s][j] for j in [0, 3E).
    std::vector<double> qkv(static_cast<size_t>(seq * 3 * e));
    for (int64_t s = 0; s < seq; ++s) {
      for (int64_t j = 0; j < 3 * e; ++j) {
        double acc = b[j];
        for (int64_t i = 0; i < e; ++i) acc += w[j * e + i] * x[(n * seq + s) * e + i];
        qkv[s * 3 * e + j] = acc;
      }
    }
    std::vector<double> context(static_cast<size_t>(seq * e), 0.0);
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t s = 0; s < seq; ++s) {
        std::vector<double> score(static_cast<size_t>(seq));
        double mx = -std::numeric_limits<double>::infinity();
        for (int64_t t = 0; t < seq; ++t) {
          double dot = 0;
          for (int64_t c = 0; c < d; ++c) dot += qkv[s * 3 * e + h * d + c] * qkv[t * 3 * e + e + h * d + c];
          score[t] = (causal && t > s) ? -std::numeric_limits<double>::infinity() : dot / std::sqrt(double(d));
          mx = std::max(mx, score[t]);
        }
        double z = 0;
        for (int64_t t = 0; t < seq; ++t) z += std::exp(score[t] - mx);
        for (int64_t t = 0; t < seq; ++t) {
          const double p = std::exp(score[t] - mx) / z;
          for (int64_t c = 0; c < d; ++c) context[s * e + h * d + c] += p * qkv[t * 3 * e + 2 * e + h * d + c];
        }
      }
    }
    for (int64_t s = 0; s < seq; ++s) {
      for (int64_t j = 0; j < e; ++j) {
        double acc = bo[j];
        for (int64_t i = 0; i < e; ++i) acc += wo[j * e + i] * context[s * e + i];
        out[(n * seq + s) * e + j] = acc;
      }
    }
  }
  return out;
}

MultiheadAttention make_f64(int64_t embed, int64_t heads, bool causal, uint64_t seed = 0) {
  MultiheadAttention m({.embed_dim = embed, .num_heads = heads, .causal = causal, .dtype = DType::F64, .seed = seed});
  // Non-zero biases so the reference checks where they go.
  core::Generator gen(seed + 100);
  for (auto& [name, p] : m.named_parameters()) {
    if (name.find("bias") != std::string::npos) ops::uniform_(p, gen, -0.5, 0.5);
  }
  return m;
}

TEST(MultiheadAttention, ParametersFollowPyTorch) {
  MultiheadAttention m({.embed_dim = 8, .num_heads = 2});
  const StateDict sd = m.state_dict();
  EXPECT_EQ(sd.keys(), (std::vector<std::string>{"in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"}));
  EXPECT_EQ(sd.at("in_proj_weight").shape(), (Shape{24, 8}));
  EXPECT_EQ(sd.at("in_proj_bias").shape(), (Shape{24}));
  EXPECT_EQ(sd.at("out_proj.weight").shape(), (Shape{8, 8}));
  for (float v : sd.at("in_proj_bias").to_vector<float>()) EXPECT_EQ(v, 0.0f);
  for (float v : sd.at("out_proj.bias").to_vector<float>()) EXPECT_EQ(v, 0.0f);
  // xavier_uniform bound for [24, 8]: sqrt(6 / 32).
  for (float v : sd.at("in_proj_weight").to_vector<float>()) EXPECT_LE(std::abs(v), std::sqrt(6.0 / 32.0));
  EXPECT_EQ(MultiheadAttention({.embed_dim = 8, .num_heads = 2, .bias = false}).state_dict().size(), 2u);
  EXPECT_THROW(MultiheadAttention({.embed_dim = 8, .num_heads = 3}), ValueError);
}

TEST(MultiheadAttention, OutputShapeAndWeights) {
  MultiheadAttention m({.embed_dim = 16, .num_heads = 4});
  core::Generator gen(1);
  Tensor x = ops::randn({3, 5, 16}, gen);
  auto [out, weights] = m.forward_with_weights(x);
  EXPECT_EQ(out.shape(), (Shape{3, 5, 16}));
  EXPECT_EQ(weights.shape(), (Shape{3, 4, 5, 5}));
  const std::vector<float> row_sums = ops::sum(weights, {-1}).to_vector<float>();
  for (float s : row_sums) EXPECT_NEAR(s, 1.0f, 1e-5);
  // Unbatched input gives the same rows as batch element 0.
  Tensor first = ops::select(x, 0, 0);
  Tensor y0 = m(first);
  EXPECT_EQ(y0.shape(), (Shape{5, 16}));
  const std::vector<float> a = y0.to_vector<float>(), b = ops::select(out, 0, 0).to_vector<float>();
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-5);

  const std::string msg = [&] {
    try {
      m(ops::zeros({3, 5, 12}));
    } catch (const ShapeError& e) {
      return std::string(e.what());
    }
    return std::string();
  }();
  EXPECT_NE(msg.find("MultiheadAttention(embed 16, heads 4)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[3, 5, 12]"), std::string::npos) << msg;
}

TEST(MultiheadAttention, MatchesLoopReference) {
  for (bool causal : {false, true}) {
    MultiheadAttention m = make_f64(6, 3, causal, 4);
    core::Generator gen(7);
    Tensor x = ops::randn({2, 4, 6}, gen, DType::F64);
    const std::vector<double> got = m(x).to_vector<double>();
    const std::vector<double> want = reference_attention(m, x.to_vector<double>(), 2, 4, causal);
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-10) << "causal " << causal << " at " << i;
  }
}

TEST(MultiheadAttention, CausalFutureTokensDoNotLeak) {
  MultiheadAttention m({.embed_dim = 8, .num_heads = 2, .causal = true, .seed = 3});
  core::Generator gen(11);
  Tensor x = ops::randn({2, 6, 8}, gen);
  const std::vector<float> before = m(x).to_vector<float>();
  // Change token 4 of every sequence.
  Tensor x2 = ops::empty_like(x);  // a copy (contiguous() would share x's storage)
  ops::copy_(x2, x);
  float* p = x2.data<float>();
  for (int n = 0; n < 2; ++n) {
    for (int j = 0; j < 8; ++j) p[(n * 6 + 4) * 8 + j] += 3.0f;
  }
  const std::vector<float> after = m(x2).to_vector<float>();
  for (int n = 0; n < 2; ++n) {
    for (int s = 0; s < 6; ++s) {
      float diff = 0;
      for (int j = 0; j < 8; ++j) diff = std::max(diff, std::abs(after[(n * 6 + s) * 8 + j] - before[(n * 6 + s) * 8 + j]));
      if (s < 4) {
        EXPECT_EQ(diff, 0.0f) << "position " << s << " saw a future token";
      } else {
        EXPECT_GT(diff, 1e-4f) << "position " << s << " should see token 4";
      }
    }
  }
  // The weights above the diagonal are exactly zero.
  Tensor w = m.forward_with_weights(x).weights;
  for (int64_t s = 0; s < 6; ++s) {
    for (int64_t t = s + 1; t < 6; ++t) EXPECT_EQ(w.at<float>({1, 1, s, t}), 0.0f);
  }

  // Without the mask, earlier positions do see later tokens.
  MultiheadAttention full({.embed_dim = 8, .num_heads = 2, .seed = 3});
  EXPECT_NE(full(x).to_vector<float>()[0], full(x2).to_vector<float>()[0]);
}

TEST(MultiheadAttention, SingleTokenIsValueProjection) {
  // With one position the softmax is 1: out = W_o (W_v x + b_v) + b_o.
  MultiheadAttention m = make_f64(4, 2, false, 9);
  core::Generator gen(3);
  Tensor x = ops::randn({1, 1, 4}, gen, DType::F64);
  Tensor wv = ops::slice(m.in_proj_weight(), 0, 8, 12), bv = ops::slice(m.in_proj_bias(), 0, 8, 12);
  Tensor want = m.out_proj()(ops::linear(x, wv, bv));
  const std::vector<double> a = m(x).to_vector<double>(), b = want.to_vector<double>();
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-12);
}

TEST(MultiheadAttention, DropoutOnlyInTraining) {
  MultiheadAttention m({.embed_dim = 8, .num_heads = 2, .dropout = 0.5, .seed = 1});
  core::Generator gen(2);
  Tensor x = ops::randn({2, 5, 8}, gen);
  const std::vector<float> t1 = m(x).to_vector<float>(), t2 = m(x).to_vector<float>();
  EXPECT_NE(t1, t2);
  m.eval();
  EXPECT_EQ(m(x).to_vector<float>(), m(x).to_vector<float>());
}

}  // namespace
}  // namespace loom::nn
