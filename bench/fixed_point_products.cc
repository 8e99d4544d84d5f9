// What one step's weight gradient of a linear layer costs in deterministic
// mode, on one thread: the kernel that rounds each atom's g^T x into the
// int64 sums without writing it out (fixed_point::accumulate_products),
// against the path it replaced (oneDNN's g^T x per atom, then
// fixed_point::accumulate of it) and against normal mode's one GEMM over all
// rows (no fixed point). Random factors; the layers of the reference MLP and
// CNN (out x in); a global batch of 128 rows cut into A atoms.
//
//   build/bench/fixed_point_products [--atoms 8] [--repeats 20] [--rounds 3]   (one thread, as train.threads = 1)
//
// Per layer and round one line: milliseconds a call (the mean of --repeats
// calls after one warm-up), and the ratio of each deterministic path to the
// one GEMM. The portable kernel (plain C++, the same bits) is timed too.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "loom/core/parallel.h"
#include "loom/ops/ops.h"
#include "loom/parallel/data_parallel_fixed_point.h"

using namespace loom;
using core::Tensor;
namespace fp = loom::parallel::fixed_point;

int main(int argc, char** argv) {
  int atoms = 8, repeats = 20, rounds = 3;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--atoms") atoms = std::atoi(argv[i + 1]);
    else if (a == "--repeats") repeats = std::atoi(argv[i + 1]);
    else if (a == "--rounds") rounds = std::atoi(argv[i + 1]);
    else { std::fprintf(stderr, "unknown option %s\n", argv[i]); return 2; }
  }
  if (atoms < 1 || 128 % atoms != 0 || repeats < 1 || rounds < 1) {
    std::fprintf(stderr, "--atoms must divide 128; --repeats and --rounds positive\n");
    return 2;
  }
  core::set_num_threads(1);
  const int64_t rows = 128 / atoms;
  core::Generator gen(1);
  const std::vector<std::pair<int64_t, int64_t>> layers = {{256, 784}, {128, 256}, {1024, 3136}};
  std::printf("atoms %d of %ld rows; ms a call, mean of %d\n", atoms, static_cast<long>(rows), repeats);
  std::printf("| layer (out x in) | one GEMM, 128 rows | per atom: GEMM + accumulate | accumulate_products | portable |\n");
  std::printf("|---|---|---|---|---|\n");
  for (int round = 0; round < rounds; ++round) {
    for (const auto& [out, in] : layers) {
      std::vector<Tensor> gs, xs;
      std::vector<fp::Product> terms;
      for (int a = 0; a < atoms; ++a) {
        gs.push_back(ops::mul(ops::randn({rows, out}, gen), 1e-3));
        xs.push_back(ops::randn({rows, in}, gen));
        terms.push_back({gs.back(), xs.back()});
      }
      const Tensor g_all = ops::concat(gs, 0), x_all = ops::concat(xs, 0);
      Tensor acc = ops::zeros({out, in}, core::DType::I64);
      Tensor flat = ops::reshape(acc, {out * in});
      auto time = [&](auto f) {
        f();
        const auto t0 = std::chrono::steady_clock::now();
        for (int i = 0; i < repeats; ++i) f();
        return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / repeats;
      };
      const double gemm = time([&] { Tensor w = ops::matmul(ops::transpose(g_all, 0, 1), x_all); });
      const double per_atom = time([&] {
        for (int a = 0; a < atoms; ++a) {
          Tensor w = ops::reshape(ops::matmul(ops::transpose(gs[a], 0, 1), xs[a]), {out * in});
          (void)fp::accumulate(w, flat, {.mode = a ? fp::Mode::Add : fp::Mode::Assign, .zero_grad = false});
        }
      });
      const double fused = time([&] { (void)fp::accumulate_products(terms, acc, fp::Mode::Assign); });
      const double portable =
          time([&] { (void)fp::accumulate_products(terms, acc, fp::Mode::Assign, fp::Kernel::Portable); });
      std::printf("| %ld x %ld | %.3f | %.3f (%.2fx) | %.3f (%.2fx) | %.3f (%.2fx) |\n", static_cast<long>(out),
                  static_cast<long>(in), gemm, per_atom, per_atom / gemm, fused, fused / gemm, portable,
                  portable / gemm);
    }
  }
  return 0;
}
