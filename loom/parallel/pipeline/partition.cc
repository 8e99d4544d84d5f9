#include "loom/parallel/pipeline/partition.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>

#include "loom/autograd/engine.h"
#include "loom/core/error.h"
#include "loom/nn/sequential.h"
#include "loom/nn/transformer.h"
#include "loom/ops/creation.h"

namespace loom::parallel::pipeline {

Layers pipeline_layers(nn::Module& model) {
  if (auto* seq = dynamic_cast<nn::Sequential*>(&model)) {
    Layers out;
    for (size_t i = 0; i < seq->size(); ++i) out.push_back((*seq)[i]);
    return out;
  }
  if (auto* gpt = dynamic_cast<nn::Gpt*>(&model)) return gpt->parts();
  throw ConfigError(format("pipeline: the model {} is not a sequence of layers (a Sequential, a [[model.layers]] "
                           "list, or the GPT) that stages could be cut from", model.describe()));
}

core::Tensor tied_weight(nn::Module& model) {
  auto* gpt = dynamic_cast<nn::Gpt*>(&model);
  return gpt && gpt->options().tied ? gpt->embedding().token_weight() : core::Tensor();
}

std::vector<LayerRange> balance(std::span<const double> costs, int parts) {
  const auto n = static_cast<int64_t>(costs.size());
  LOOM_CHECK_T(ConfigError, parts >= 1, "pipeline placement: {} parts; at least 1", parts);
  LOOM_CHECK_T(ConfigError, n >= parts,
               "pipeline placement: {} layers cannot be cut into {} parts (every stage needs at least one layer): "
               "use fewer stages or virtual stages", n, parts);
  std::vector<double> prefix(static_cast<size_t>(n) + 1, 0.0);
  for (int64_t i = 0; i < n; ++i) {
    const double c = costs[static_cast<size_t>(i)];
    LOOM_CHECK_T(ConfigError, std::isfinite(c) && c >= 0, "pipeline placement: layer {} has cost {}", i, c);
    prefix[static_cast<size_t>(i) + 1] = prefix[static_cast<size_t>(i)] + c;
  }
  const auto sum = [&](int64_t a, int64_t b) { return prefix[static_cast<size_t>(b)] - prefix[static_cast<size_t>(a)]; };
  // best[k][i]: the cheapest largest part over the first i layers in k + 1
  // parts; from[k][i]: where its last part begins.
  const auto P = static_cast<size_t>(parts);
  const auto width = static_cast<size_t>(n) + 1;
  constexpr double kNone = std::numeric_limits<double>::infinity();
  std::vector<double> best(P * width, kNone);
  std::vector<int64_t> from(P * width, 0);
  for (int64_t i = 1; i <= n; ++i) best[static_cast<size_t>(i)] = sum(0, i);
  for (size_t k = 1; k < P; ++k) {
    for (int64_t i = static_cast<int64_t>(k) + 1; i <= n; ++i) {
      double& b = best[k * width + static_cast<size_t>(i)];
      for (int64_t j = static_cast<int64_t>(k); j < i; ++j) {
        const double v = std::max(best[(k - 1) * width + static_cast<size_t>(j)], sum(j, i));
        if (v <= b) {  // a tie goes to the latest cut: a layer without cost stays with the one before it
          b = v;
          from[k * width + static_cast<size_t>(i)] = j;
        }
      }
    }
  }
  std::vector<LayerRange> out(P);
  int64_t end = n;
  for (size_t k = P; k-- > 0;) {
    const int64_t begin = k == 0 ? 0 : from[k * width + static_cast<size_t>(end)];
    out[k] = {begin, end};
    end = begin;
  }
  return out;
}

std::vector<LayerRange> cut_at(std::span<const int64_t> first_layers, int64_t layers) {
  LOOM_CHECK_T(ConfigError, !first_layers.empty(), "pipeline placement: no parts given");
  LOOM_CHECK_T(ConfigError, first_layers[0] == 0,
               "pipeline placement: the first part must start at layer 0, not {}", first_layers[0]);
  std::vector<LayerRange> out;
  for (size_t i = 0; i < first_layers.size(); ++i) {
    const int64_t begin = first_layers[i];
    const int64_t end = i + 1 < first_layers.size() ? first_layers[i + 1] : layers;
    LOOM_CHECK_T(ConfigError, begin < layers,
                 "pipeline placement: part {} starts at layer {}, but the model has {} layers (0 to {})", i, begin,
                 layers, layers - 1);
    LOOM_CHECK_T(ConfigError, end > begin,
                 "pipeline placement: part {} starts at layer {} and part {} at layer {}: the first layers must "
                 "strictly increase (every part needs at least one layer)", i, begin, i + 1, end);
    out.push_back({begin, end});
  }
  return out;
}

std::vector<double> part_costs(std::span<const double> costs, std::span<const LayerRange> parts) {
  std::vector<double> out;
  for (const LayerRange& r : parts) {
    LOOM_CHECK(r.begin >= 0 && r.begin <= r.end && r.end <= static_cast<int64_t>(costs.size()),
               "pipeline placement: part [{}, {}) is outside {} layers", r.begin, r.end, costs.size());
    double c = 0;
    for (int64_t i = r.begin; i < r.end; ++i) c += costs[static_cast<size_t>(i)];
    out.push_back(c);
  }
  return out;
}

namespace {

int64_t parameter_count(const nn::Module& layer) {
  int64_t n = 0;
  for (const auto& [name, p] : layer.named_parameters()) n += p.numel();
  return n;
}

// One timed forward + backward of `layer` on `x` (a fresh leaf), in seconds;
// returns the output through `y` for the next layer.
double time_layer(nn::Module& layer, const core::Tensor& x, core::Tensor& y) {
  core::Tensor in = x.detach();
  if (core::is_floating(in.dtype())) in.set_requires_grad(true);
  const auto start = std::chrono::steady_clock::now();
  y = layer(in);
  if (y.requires_grad()) autograd::backward(y, ops::ones_like(y));
  const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
  for (auto& [name, p] : layer.named_parameters()) autograd::zero_grad(p, /*set_to_none=*/true);
  y = y.detach();
  return took.count();
}

}  // namespace

std::vector<double> parameter_costs(const Layers& layers) {
  std::vector<double> out;
  for (const auto& layer : layers) out.push_back(static_cast<double>(parameter_count(*layer)));
  return out;
}

std::vector<double> measured_costs(const Layers& layers, const core::Tensor& sample, MeasureOptions options) {
  LOOM_CHECK_T(ConfigError, options.repeats >= 1, "pipeline placement: {} timed runs a layer; at least 1",
               options.repeats);
  std::vector<double> out;
  core::Tensor x = sample;
  for (const auto& l : layers) {
    nn::Module& layer = *l;
    core::Tensor y;
    time_layer(layer, x, y);  // untimed: caches warm, buffers allocated
    std::vector<double> runs;
    for (int r = 0; r < options.repeats; ++r) runs.push_back(time_layer(layer, x, y));
    std::nth_element(runs.begin(), runs.begin() + static_cast<ptrdiff_t>(runs.size() / 2), runs.end());
    out.push_back(runs[runs.size() / 2]);
    x = y;
  }
  return out;
}

std::string describe_parts(const Layers& layers, std::span<const LayerRange> parts) {
  std::string out;
  for (size_t k = 0; k < parts.size(); ++k) {
    const LayerRange& r = parts[k];
    std::string names;
    int64_t params = 0;
    for (int64_t i = r.begin; i < r.end; ++i) {
      const nn::Module& layer = *layers[static_cast<size_t>(i)];
      names += (i > r.begin ? ", " : "") + layer.describe();
      params += parameter_count(layer);
    }
    out += format("part {}: layers {}-{} ({}), {} parameters\n", k, r.begin, r.end - 1, names, params);
  }
  return out;
}

}  // namespace loom::parallel::pipeline
