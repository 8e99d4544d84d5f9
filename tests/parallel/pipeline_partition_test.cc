#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <numeric>

#include "loom/core/error.h"
#include "loom/nn/activation.h"
#include "loom/nn/linear.h"
#include "loom/nn/sequential.h"
#include "loom/nn/transformer.h"
#include "loom/ops/creation.h"
#include "loom/parallel/pipeline/partition.h"

using namespace loom;
using namespace loom::parallel::pipeline;

namespace {

// Every cut of n layers into k parts, by brute force: the best largest part.
double brute_force_best(const std::vector<double>& costs, int parts) {
  const auto n = static_cast<int64_t>(costs.size());
  double best = 1e300;
  // Choose parts - 1 cut points among 1 .. n - 1.
  std::vector<int64_t> cuts(static_cast<size_t>(parts - 1));
  std::function<void(size_t, int64_t)> rec = [&](size_t at, int64_t from) {
    if (at == cuts.size()) {
      std::vector<int64_t> firsts = {0};
      firsts.insert(firsts.end(), cuts.begin(), cuts.end());
      const auto c = part_costs(costs, cut_at(firsts, n));
      best = std::min(best, *std::max_element(c.begin(), c.end()));
      return;
    }
    for (int64_t p = from; p < n; ++p) {
      cuts[at] = p;
      rec(at + 1, p + 1);
    }
  };
  rec(0, 1);
  return best;
}

void expect_covers(const std::vector<LayerRange>& parts, int64_t layers) {
  ASSERT_FALSE(parts.empty());
  EXPECT_EQ(parts.front().begin, 0);
  EXPECT_EQ(parts.back().end, layers);
  for (size_t i = 0; i < parts.size(); ++i) {
    EXPECT_GE(parts[i].size(), 1) << "part " << i;
    if (i > 0) {
      EXPECT_EQ(parts[i].begin, parts[i - 1].end);
    }
  }
}

}  // namespace

TEST(PipelinePartition, BalancesEqualLayersEvenly) {
  const std::vector<double> costs(12, 1.0);
  const auto parts = balance(costs, 4);
  EXPECT_EQ(parts, (std::vector<LayerRange>{{0, 3}, {3, 6}, {6, 9}, {9, 12}}));
}

TEST(PipelinePartition, MatchesBruteForceOnUnevenCosts) {
  // A GPT-like profile: a heavy embedding, light blocks, a heavy head; and a few random ones.
  std::vector<std::vector<double>> cases = {{50, 10, 10, 10, 10, 10, 10, 60}, {1, 2, 3, 4, 5, 6, 7, 8, 9}};
  uint64_t s = 12345;
  for (int c = 0; c < 20; ++c) {
    std::vector<double> v;
    for (int i = 0; i < 3 + c % 8; ++i) {
      s = s * 6364136223846793005ULL + 1442695040888963407ULL;
      v.push_back(static_cast<double>(s >> 54));  // 0 .. 1023, zeros included sometimes
    }
    cases.push_back(v);
  }
  for (const auto& costs : cases) {
    for (int parts = 1; parts <= std::min<int>(5, static_cast<int>(costs.size())); ++parts) {
      const auto cut = balance(costs, parts);
      expect_covers(cut, static_cast<int64_t>(costs.size()));
      ASSERT_EQ(cut.size(), static_cast<size_t>(parts));
      const auto c = part_costs(costs, cut);
      EXPECT_EQ(*std::max_element(c.begin(), c.end()), brute_force_best(costs, parts))
          << costs.size() << " layers, " << parts << " parts";
    }
  }
}

TEST(PipelinePartition, ZeroCostLayersStillGetAStageEach) {
  const std::vector<double> costs = {0, 0, 0, 0};
  const auto parts = balance(costs, 4);
  expect_covers(parts, 4);
  EXPECT_EQ(parts.size(), 4u);
}

TEST(PipelinePartition, RefusesImpossibleCuts) {
  const std::vector<double> three = {1, 1, 1};
  EXPECT_THROW(balance(three, 4), ConfigError);
  EXPECT_THROW(balance(three, 0), ConfigError);
  const std::vector<double> negative = {1, -1, 1};
  EXPECT_THROW(balance(negative, 2), ConfigError);
  try {
    balance(three, 4);
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("3 layers cannot be cut into 4 parts"), std::string::npos) << e.what();
  }
}

TEST(PipelinePartition, HandPlacementIsChecked) {
  const std::vector<int64_t> good = {0, 2, 5};
  EXPECT_EQ(cut_at(good, 8), (std::vector<LayerRange>{{0, 2}, {2, 5}, {5, 8}}));
  const std::vector<int64_t> not_zero = {1, 4};
  const std::vector<int64_t> not_increasing = {0, 4, 4};
  const std::vector<int64_t> past_end = {0, 8};
  for (const auto& bad : {not_zero, not_increasing, past_end}) EXPECT_THROW(cut_at(bad, 8), ConfigError);
  try {
    cut_at(not_increasing, 8);
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("part 1 starts at layer 4 and part 2 at layer 4"), std::string::npos)
        << e.what();
  }
}

TEST(PipelinePartition, CostsOfARealModel) {
  nn::Sequential model(nn::Linear({.in = 8, .out = 64}), nn::ReLU(), nn::Linear({.in = 64, .out = 64}), nn::ReLU(),
                       nn::Linear({.in = 64, .out = 4}));
  const Layers layers = pipeline_layers(model);
  ASSERT_EQ(layers.size(), 5u);
  const auto params = parameter_costs(layers);
  EXPECT_EQ(params, (std::vector<double>{8 * 64 + 64, 0, 64 * 64 + 64, 0, 64 * 4 + 4}));
  const auto by_params = balance(params, 2);
  EXPECT_EQ(by_params, (std::vector<LayerRange>{{0, 2}, {2, 5}}));

  const auto timed = measured_costs(layers, ops::ones({16, 8}), {.repeats = 2});
  ASSERT_EQ(timed.size(), 5u);
  for (double t : timed) EXPECT_GT(t, 0.0);
  for (auto& [name, p] : model.named_parameters()) EXPECT_FALSE(p.grad().defined()) << name;

  const std::string text = describe_parts(layers, by_params);
  EXPECT_NE(text.find("part 0: layers 0-1 (Linear(8 -> 64), ReLU()), 576 parameters"), std::string::npos) << text;
  EXPECT_NE(text.find("part 1: layers 2-4"), std::string::npos) << text;
}

TEST(PipelinePartition, LayersOfAGptAndRefusalOfOtherModels) {
  nn::Gpt gpt({.vocab = 256, .context = 8, .blocks = 3, .heads = 2, .embed = 16, .tied = false});
  const Layers layers = pipeline_layers(gpt);
  EXPECT_EQ(layers.size(), 5u);  // embedding, 3 blocks, head
  nn::Linear lone({.in = 2, .out = 2});
  EXPECT_THROW(pipeline_layers(lone), ConfigError);
  // The weight the first and last layers share: a tied GPT's token table only.
  EXPECT_FALSE(tied_weight(gpt).defined());
  EXPECT_FALSE(tied_weight(lone).defined());
  nn::Gpt tied({.vocab = 256, .context = 8, .blocks = 1, .heads = 2, .embed = 16, .tied = true});
  EXPECT_TRUE(tied_weight(tied).is_same(tied.embedding().token_weight()));
}
