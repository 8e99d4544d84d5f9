// libFuzzer target for training checkpoints as train::Trainer::load_checkpoint
// reads them (loom/train/trainer.h): a safetensors file in the old
// parameter-server layout is renamed first (train/legacy_checkpoint.h), then
// its "model.*" tensors go to Module::load_state_dict and its "optim.*"
// tensors through optim::from_state_dict (optim/state_dict.h) to
// Optimizer::load_state.
//
//   scripts/fuzz checkpoint 600
//
// Input: the file. The model is a BatchNorm2d with a cumulative moving
// average (its i64 num_batches_tracked buffer is loaded too) and a Linear;
// the file is loaded into it with an SGD-momentum and with an Adam optimizer.
// The property: each load either throws IoError (the file, or an old layout
// that does not fit) or ValueError (a state that does not fit the model or the
// optimizer), or succeeds, and then a training step runs and the optimizer's
// step count is the loaded one plus one. Anything else (another exception, a
// crash, a sanitizer report) is a bug.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "loom/autograd/engine.h"
#include "loom/core/error.h"
#include "loom/core/tensor.h"
#include "loom/io/safetensors.h"
#include "loom/nn/linear.h"
#include "loom/nn/module.h"
#include "loom/nn/normalization.h"
#include "loom/ops/math.h"
#include "loom/ops/view.h"
#include "loom/optim/optimizer.h"
#include "loom/optim/state_dict.h"
#include "loom/train/legacy_checkpoint.h"

namespace {

using loom::core::Tensor;

struct Model : loom::nn::Module {
  std::shared_ptr<loom::nn::BatchNorm2d> bn =
      register_module("bn", loom::nn::BatchNorm2d({.num_features = 2, .momentum = std::nullopt}));
  std::shared_ptr<loom::nn::Linear> fc = register_module("fc", loom::nn::Linear({.in = 2, .out = 3}));
  Tensor forward(const Tensor& x) override { return (*fc)(loom::ops::reshape((*bn)(x), {x.size(0), 2})); }
};

void check(bool ok, const char* what) {
  if (!ok) throw loom::InternalError(std::string("checkpoint_fuzz: ") + what);
}

void load_and_step(loom::io::SafetensorsFile file, bool adam) {
  Model model;
  loom::optim::Optimizer opt = adam ? loom::optim::adam(model.named_parameters(), {.lr = 0.01})
                                    : loom::optim::sgd(model.named_parameters(), {.lr = 0.1, .momentum = 0.9});
  try {
    loom::train::upgrade_legacy_server_state(file, opt.state_layout(), "fuzz");
    loom::nn::StateDict model_state;
    loom::optim::NamedTensors optim_tensors;
    for (const auto& [name, t] : file.tensors) {
      if (name.rfind("model.", 0) == 0) model_state.insert(name.substr(6), t);
      else if (name.rfind("optim.", 0) == 0) optim_tensors.emplace_back(name.substr(6), t);
    }
    model.load_state_dict(model_state);
    opt.load_state(loom::optim::from_state_dict(opt.state_layout(), optim_tensors));
  } catch (const loom::IoError&) {
    return;
  } catch (const loom::ValueError&) {
    return;
  }
  const int64_t loaded_step = opt.step_count();
  // A loaded model and optimizer train on: one step.
  const Tensor x = Tensor::from_vector<float>({1, 2, 3, 4, 5, 6, 7, 8}, {4, 2, 1, 1});
  opt.zero_grad();
  loom::autograd::backward(loom::ops::sum(model(x)));
  opt.step();
  check(loaded_step < INT64_MAX && opt.step_count() == loaded_step + 1,
        "the step count does not go on from the loaded one");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  loom::io::SafetensorsFile file;
  try {
    file = loom::io::read_safetensors_from_memory(std::span<const uint8_t>(data, size), "fuzz");
  } catch (const loom::IoError&) {
    return 0;
  }
  load_and_step(file, false);
  load_and_step(file, true);
  return 0;
}
