// Gpt and TransformerBlock: shapes, causality, the parameter count formula,
// tied weights, the parts in order, GPT-2 init and errors.
#include <gtest/gtest.h>

#include <cmath>

#include "loom/autograd/engine.h"
#include "loom/nn/nn.h"
#include "loom/ops/ops.h"

namespace loom::nn {
namespace {

using core::Tensor;

Tensor tokens(const std::vector<int64_t>& v, int64_t batch) {
  return Tensor::from_vector<int64_t>(v, {batch, static_cast<int64_t>(v.size()) / batch});
}

GptOptions small(bool tied = true) {
  return {.vocab = 256, .context = 8, .blocks = 2, .heads = 2, .embed = 16, .tied = tied, .seed = 3};
}

int64_t numel_of(const Module& m) {
  int64_t n = 0;
  for (const Tensor& p : m.parameters()) n += p.numel();
  return n;
}

TEST(Gpt, LogitsHaveOneRowPerToken) {
  Gpt gpt(small());
  Tensor y = gpt(tokens({1, 2, 3, 4, 5, 6, 250, 255, 0, 9}, 2));
  EXPECT_EQ(y.shape(), (core::Shape{2, 5, 256}));
}

TEST(Gpt, ParameterCountMatchesFormula) {
  for (bool tied : {true, false}) {
    for (int64_t ratio : {1, 4}) {
      GptOptions o = small(tied);
      o.mlp_ratio = ratio;
      Gpt gpt(o);
      EXPECT_EQ(numel_of(gpt), gpt_parameter_count(o)) << "tied " << tied << ", mlp_ratio " << ratio;
    }
  }
  // E = 16, r = 4: 12 E^2 + 13 E = 3280 per block.
  EXPECT_EQ(gpt_parameter_count(small()), 256 * 16 + 8 * 16 + 2 * 3280 + 2 * 16);
}

TEST(Gpt, FutureTokensDoNotChangeEarlierLogits) {
  Gpt gpt(small());
  gpt.eval();
  std::vector<int64_t> a = {10, 20, 30, 40, 50, 60, 70, 80};
  std::vector<double> ya = gpt(tokens(a, 1)).to_vector<double>();
  for (size_t changed = 1; changed < a.size(); ++changed) {
    std::vector<int64_t> b = a;
    b[changed] = 200;
    std::vector<double> yb = gpt(tokens(b, 1)).to_vector<double>();
    for (size_t t = 0; t < a.size(); ++t) {
      double diff = 0.0;
      for (size_t v = 0; v < 256; ++v) diff = std::max(diff, std::abs(ya[t * 256 + v] - yb[t * 256 + v]));
      if (t < changed) {
        EXPECT_EQ(diff, 0.0) << "position " << t << " saw token " << changed;
      } else if (t == changed) {
        EXPECT_GT(diff, 0.0) << "position " << t << " ignored its own token";
      }
    }
  }
}

TEST(Gpt, TiedHeadUsesTheTokenTable) {
  Gpt tied(small(true));
  for (const auto& [name, p] : tied.named_parameters()) EXPECT_EQ(name.find("lm_head"), std::string::npos) << name;
  EXPECT_EQ(tied.state_dict().size(), tied.named_parameters().size());
  // The table's gradient has both uses: the tokens' rows and every row through the head.
  Tensor loss = ops::sum(tied(tokens({1, 2, 3}, 1)));
  autograd::backward(loss);
  const std::vector<double> g = tied.embedding().token_weight().grad().to_vector<double>();
  double unused_row = 0.0;  // row 100 was never a token: its gradient comes from the head only
  for (int64_t j = 0; j < 16; ++j) unused_row += std::abs(g[100 * 16 + j]);
  EXPECT_GT(unused_row, 0.0);

  Gpt untied(small(false));
  bool has_head = false;
  for (const auto& [name, p] : untied.named_parameters()) has_head |= name == "head.lm_head.weight";
  EXPECT_TRUE(has_head);
}

TEST(Gpt, PartsInOrderGiveTheForward) {
  Gpt gpt(small());
  auto parts = gpt.parts();
  ASSERT_EQ(parts.size(), 4u);  // embedding, 2 blocks, head
  EXPECT_NE(dynamic_cast<GptEmbedding*>(parts.front().get()), nullptr);
  EXPECT_NE(dynamic_cast<TransformerBlock*>(parts[1].get()), nullptr);
  EXPECT_NE(dynamic_cast<GptHead*>(parts.back().get()), nullptr);
  Tensor x = tokens({5, 4, 3, 2, 1, 0}, 2);
  Tensor h = x;
  for (auto& p : parts) h = (*p)(h);
  EXPECT_EQ(h.to_vector<float>(), gpt(x).to_vector<float>());
  int64_t n = 0;
  for (auto& p : parts) n += numel_of(*p);
  EXPECT_EQ(n, numel_of(gpt));  // every parameter in exactly one part
}

TEST(Gpt, InitIsGpt2s) {
  GptOptions o{.vocab = 256, .context = 64, .blocks = 8, .heads = 4, .embed = 128, .seed = 1};
  Gpt gpt(o);
  auto std_of = [](const Tensor& t) {
    double s = 0.0, ss = 0.0;
    const std::vector<double> v = t.to_vector<double>();
    for (double x : v) s += x, ss += x * x;
    const double m = s / static_cast<double>(v.size());
    return std::sqrt(ss / static_cast<double>(v.size()) - m * m);
  };
  for (const auto& [name, p] : gpt.named_parameters()) {
    const double sd = std_of(p);
    if (name.ends_with("proj.weight")) {  // attn.out_proj.weight and the MLP's proj.weight
      EXPECT_NEAR(sd, 0.02 / std::sqrt(16.0), 0.0005) << name;
    } else if (name.ends_with("weight") && name.find("ln_") == std::string::npos) {
      EXPECT_NEAR(sd, 0.02, 0.001) << name;
    } else {
      EXPECT_EQ(sd, 0.0) << name;  // biases 0, LayerNorm weights 1
    }
  }
  Gpt again(o);
  EXPECT_EQ(again.state_dict().size(), gpt.state_dict().size());
  EXPECT_EQ(again.block(1).attn().in_proj_weight().to_vector<float>(), gpt.block(1).attn().in_proj_weight().to_vector<float>());
  EXPECT_NE(gpt.block(0).attn().in_proj_weight().to_vector<float>(), gpt.block(1).attn().in_proj_weight().to_vector<float>());
}

TEST(Gpt, ErrorsNameTheOption) {
  GptOptions o = small();
  o.heads = 3;
  try {
    Gpt bad(o);
    FAIL() << "heads 3 with embed 16 accepted";
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("heads 3"), std::string::npos) << e.what();
  }
  Gpt gpt(small());
  try {
    gpt(tokens(std::vector<int64_t>(9, 1), 1));
    FAIL() << "9 tokens accepted with context 8";
  } catch (const ShapeError& e) {
    EXPECT_NE(std::string(e.what()).find("context of 8"), std::string::npos) << e.what();
  }
  EXPECT_THROW(gpt(tokens({1, 256}, 1)), IndexError);  // not a byte
}

}  // namespace
}  // namespace loom::nn
