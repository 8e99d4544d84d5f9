// Per-op dispatch overhead: the time for ops::add on two one-element f32
// tensors (argument checks, output allocation, kernel-table call), with and
// without autograd recording. Prints one JSON line.
//
//   build/bench/dispatch_overhead [--iters N]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "loom/core/parallel.h"
#include "loom/ops/ops.h"

using namespace loom;

namespace {

template <class F>
double median_ns_per_call(int64_t iters, const F& f) {
  std::vector<double> runs;
  for (int r = 0; r < 7; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < iters; ++i) f();
    auto t1 = std::chrono::steady_clock::now();
    runs.push_back(std::chrono::duration<double, std::nano>(t1 - t0).count() / static_cast<double>(iters));
  }
  std::sort(runs.begin(), runs.end());
  return runs[runs.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  int64_t iters = 200000;
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], "--iters") == 0) iters = std::stoll(argv[i + 1]);
  }
  core::set_num_threads(1);
  core::Tensor a = ops::ones({1}), b = ops::ones({1});
  core::Tensor sink;
  double plain = median_ns_per_call(iters, [&] { sink = ops::add(a, b); });
  core::Tensor pa = ops::ones({1});
  pa.set_requires_grad(true);
  double recorded = median_ns_per_call(iters, [&] { sink = ops::add(pa, b); });
  std::printf("{\"bench\": \"dispatch_overhead\", \"op\": \"add 1-element f32\", \"ns_per_op\": %.1f, "
              "\"ns_per_op_with_autograd\": %.1f, \"iters\": %lld}\n",
              plain, recorded, static_cast<long long>(iters));
  return 0;
}
