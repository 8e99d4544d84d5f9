#include "loom/core/parallel.h"

#include <omp.h>

#include "loom/core/error.h"

namespace loom::core {

void set_num_threads(int n) {
  LOOM_CHECK(n >= 1, "set_num_threads: need at least 1 thread, got {}", n);
  omp_set_num_threads(n);
}
int get_num_threads() { return omp_get_max_threads(); }
bool in_parallel_region() { return omp_in_parallel() != 0; }

}  // namespace loom::core
