// Training step time of the reference models (../shared/reference/pytorch_cpu_step.py):
// forward, cross-entropy, backward, SGD-momentum step, on a fixed random batch.
// Prints one JSON line; run it next to the PyTorch script for the ratio.
//
//   build/bench/step_time --model mlp|cnn [--batch 128] [--threads T] [--steps N] [--warmup W]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "loom/autograd/engine.h"
#include "loom/core/parallel.h"
#include "loom/nn/nn.h"
#include "loom/ops/ops.h"
#include "loom/optim/optim.h"

using namespace loom;
using core::Tensor;

namespace {

nn::Sequential make_mlp() {
  return nn::Sequential(nn::Flatten(), nn::Linear({.in = 784, .out = 256}), nn::ReLU(),
                        nn::Linear({.in = 256, .out = 128}), nn::ReLU(), nn::Linear({.in = 128, .out = 10}));
}

nn::Sequential make_cnn() {
  return nn::Sequential(nn::Conv2d({.in = 1, .out = 32, .kernel = 5, .padding = 2}), nn::ReLU(), nn::MaxPool2d({.kernel = 2}),
                        nn::Conv2d({.in = 32, .out = 64, .kernel = 5, .padding = 2}), nn::ReLU(),
                        nn::MaxPool2d({.kernel = 2}), nn::Flatten(), nn::Linear({.in = 64 * 7 * 7, .out = 1024}),
                        nn::ReLU(), nn::Linear({.in = 1024, .out = 10}));
}

struct Args {
  std::string model = "mlp";
  int64_t batch = 128;
  int threads = 1;
  int steps = -1;
  int warmup = 3;
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    auto next = [&]() -> std::string {
      LOOM_CHECK(i + 1 < argc, "step_time: {} needs a value", k);
      return argv[++i];
    };
    if (k == "--model") a.model = next();
    else if (k == "--batch") a.batch = std::stoll(next());
    else if (k == "--threads") a.threads = std::stoi(next());
    else if (k == "--steps") a.steps = std::stoi(next());
    else if (k == "--warmup") a.warmup = std::stoi(next());
    else if (k == "--help" || k == "-h") {
      std::printf("usage: step_time --model mlp|cnn [--batch 128] [--threads T] [--steps N] [--warmup W]\n");
      std::exit(0);
    } else {
      throw ValueError(format("step_time: unknown argument '{}' (see --help)", k));
    }
  }
  LOOM_CHECK(a.model == "mlp" || a.model == "cnn", "step_time: --model must be mlp or cnn, got '{}'", a.model);
  if (a.steps < 0) a.steps = a.model == "mlp" ? 200 : 20;
  return a;
}

}  // namespace

int main(int argc, char** argv) try {
  Args args = parse(argc, argv);
  core::set_num_threads(args.threads);
  nn::Sequential model = args.model == "mlp" ? make_mlp() : make_cnn();
  auto opt = optim::sgd(model.parameters(), {.lr = 0.01, .momentum = 0.9});
  core::Generator gen(0);
  Tensor x = ops::randn({args.batch, 1, 28, 28}, gen);
  Tensor y = ops::to_dtype(ops::mul(ops::rand({args.batch}, gen), 10.0), core::DType::I64);

  auto step = [&] {
    opt.zero_grad();
    Tensor loss = ops::cross_entropy(model(x), y);
    autograd::backward(loss);
    opt.step();
  };
  for (int i = 0; i < args.warmup; ++i) step();
  const auto allocs_before = core::cpu_allocator().stats().system_allocs;
  std::vector<double> ms;
  for (int i = 0; i < args.steps; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    step();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  const auto allocs_after = core::cpu_allocator().stats().system_allocs;
  std::sort(ms.begin(), ms.end());
  const double median = ms[ms.size() / 2];
  std::printf("{\"framework\": \"loom\", \"model\": \"%s\", \"batch\": %lld, \"threads\": %d, \"steps\": %d, "
              "\"step_ms\": %.3f, \"p10_ms\": %.3f, \"p90_ms\": %.3f, \"samples_s\": %.1f, "
              "\"system_allocs_during_timed_steps\": %llu}\n",
              args.model.c_str(), static_cast<long long>(args.batch), args.threads, args.steps, median,
              ms[ms.size() / 10], ms[ms.size() * 9 / 10], static_cast<double>(args.batch) / median * 1e3,
              static_cast<unsigned long long>(allocs_after - allocs_before));
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "step_time: %s\n", e.what());
  return 1;
}
