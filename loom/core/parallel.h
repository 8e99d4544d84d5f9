// Threading for CPU kernels: OpenMP underneath, with one knob.
//
//   // given: int64_t n
//   core::set_num_threads(2);        // kernels and oneDNN use 2 threads
//   core::parallel_for(0, n, 4096, [&](int64_t lo, int64_t hi) { ... });
#pragma once

#include <algorithm>
#include <cstdint>

namespace loom::core {

void set_num_threads(int n);
int get_num_threads();
bool in_parallel_region();

// Splits [begin, end) into chunks of at least `grain` and runs f(lo, hi) on
// them in parallel; runs inline when the range is small or already parallel.
template <class F>
void parallel_for(int64_t begin, int64_t end, int64_t grain, const F& f) {
  int64_t n = end - begin;
  if (n <= 0) return;
  int threads = get_num_threads();
  if (n <= grain || threads == 1 || in_parallel_region()) {
    f(begin, end);
    return;
  }
  int64_t chunks = std::min<int64_t>(threads, (n + grain - 1) / grain);
#pragma omp parallel for num_threads(static_cast<int>(chunks)) schedule(static)
  for (int64_t c = 0; c < chunks; ++c) {
    int64_t lo = begin + n * c / chunks, hi = begin + n * (c + 1) / chunks;
    f(lo, hi);
  }
}

}  // namespace loom::core
