// Model placement for pipeline parallelism: a sequence of layers cut into
// contiguous parts, one per pipeline stage (or per model chunk, with
// interleaved schedules), balanced by cost or placed by hand.
//
//   // given: nn::Module& model, Tensor sample
//   using namespace parallel::pipeline;
//   Layers layers = pipeline_layers(model);                             // a Sequential's children, a GPT's parts
//   std::vector<double> cost = parameter_costs(layers);                 // one number a layer
//   std::vector<LayerRange> parts = balance(cost, 4);                   // 4 contiguous parts, the largest minimal
//   cost = measured_costs(layers, sample, {.repeats = 3});              // or forward + backward time a layer
//   const std::vector<int64_t> firsts = {0, 3, 7, 12};                  // by hand: each part's first layer
//   parts = cut_at(firsts, static_cast<int64_t>(layers.size()));
//   std::string text = describe_parts(layers, parts);                   // a line a part (`loom launch --describe`)
//
// Parts hold at least one layer each and cover every layer once, in order:
// part i's layers are [parts[i].begin, parts[i].end). balance() finds the
// cut whose most expensive part is the cheapest possible (the classic linear
// partition; exact, by dynamic programming over the n layers: O(n^2 parts)),
// each part's end chosen as late as an equally good cut allows, so a layer
// without cost (an activation) stays with the layer before it and the
// result is a function of the costs alone. Pure functions: no model is
// touched except by measured_costs, which runs it.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "loom/core/tensor.h"
#include "loom/nn/module.h"

namespace loom::parallel::pipeline {

// The layers a pipeline cuts, in the order a forward runs them.
using Layers = std::vector<std::shared_ptr<nn::Module>>;

// A Sequential's children, or a GPT's parts (embedding, blocks, head);
// ConfigError naming the model for anything else (its forward is not a
// sequence of layers a pipeline could cut).
Layers pipeline_layers(nn::Module& model);
// The weight the first and the last layer share (a tied GPT's token table),
// which the stages holding them must train together; undefined if none.
core::Tensor tied_weight(nn::Module& model);

struct LayerRange {
  int64_t begin = 0, end = 0;  // layers [begin, end)
  int64_t size() const { return end - begin; }
  bool operator==(const LayerRange&) const = default;
};

// The cut of `costs.size()` layers into `parts` contiguous parts that
// minimises the largest part's summed cost. ConfigError when there are fewer
// layers than parts (naming both) or a cost is negative or not finite.
std::vector<LayerRange> balance(std::span<const double> costs, int parts);

// The parts that start at `first_layers` (the job file's hand placement):
// ConfigError unless it starts at 0, strictly increases, and stays below
// `layers`, naming the offending entry.
std::vector<LayerRange> cut_at(std::span<const int64_t> first_layers, int64_t layers);

// The summed cost of each part.
std::vector<double> part_costs(std::span<const double> costs, std::span<const LayerRange> parts);

// A layer's cost as its number of parameter elements (layers without
// parameters cost 0 and go with their neighbours).
std::vector<double> parameter_costs(const Layers& layers);

struct MeasureOptions {
  int repeats = 3;  // the median of this many timed runs a layer, after one untimed
};

// A layer's cost as its measured forward + backward time in seconds on
// `sample` (a batch as the first layer takes it), each layer run alone on
// the previous layer's output. Runs the layers (in training mode, with
// gradients, which it drops afterwards).
std::vector<double> measured_costs(const Layers& layers, const core::Tensor& sample, MeasureOptions options = {});

// One line a part: "part 1: layers 3-6 (Linear(256 -> 256), ReLU, ...), 65,792 parameters".
std::string describe_parts(const Layers& layers, std::span<const LayerRange> parts);

}  // namespace loom::parallel::pipeline
