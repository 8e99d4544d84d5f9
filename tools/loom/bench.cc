#include "tools/loom/bench.h"

#include <algorithm>
#include <chrono>
#include <cstdio>

#include "loom/comm/collectives.h"
#include "loom/comm/job_env.h"
#include "loom/core/parallel.h"
#include "loom/ops/ops.h"
#include "loom/parallel/process_group.h"
#include "tools/loom/launch.h"

namespace loom::cli {
namespace {

// "1M" = 1 MiB, "64K", "512", "1G".
int64_t parse_bytes(const std::string& s) {
  LOOM_CHECK_T(ConfigError, !s.empty(), "bench: empty size");
  int64_t mult = 1;
  std::string num = s;
  switch (s.back()) {
    case 'K': case 'k': mult = 1 << 10; num.pop_back(); break;
    case 'M': case 'm': mult = 1 << 20; num.pop_back(); break;
    case 'G': case 'g': mult = int64_t{1} << 30; num.pop_back(); break;
    default: break;
  }
  try {
    size_t used = 0;
    int64_t v = std::stoll(num, &used);
    if (used == num.size() && v >= 0) return v * mult;
  } catch (const std::exception&) {
  }
  throw ConfigError(format("bench: bad size '{}' (e.g. 1M, 64K, 4096)", s));
}

int worker(const BenchAllreduceArgs& args, const comm::JobEnv& env) {
  core::set_num_threads(1);
  auto pg = parallel::ProcessGroup::join(env, {.transport = args.transport});
  comm::Communicator& c = pg->comm();
  const comm::Algorithm algo = comm::algorithm_from_name(args.algorithm);
  for (const auto& s : args.sizes) {
    const int64_t bytes = parse_bytes(s);
    core::Tensor x = ops::ones({bytes / 4});
    for (int i = 0; i < 2; ++i) comm::allreduce(c, x, {.algorithm = algo});
    // As the references: enough iterations for ~2 GB of traffic, 3 to 50.
    const int iters = static_cast<int>(std::clamp<double>(2e9 / (static_cast<double>(bytes) * c.size), 3, 50));
    comm::barrier(c);
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < iters; ++i) comm::allreduce(c, x, {.algorithm = algo});
    comm::barrier(c);
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / iters;
    if (c.rank == 0) {
      const double algbw = static_cast<double>(bytes) / dt / 1e9;
      const double busbw = algbw * 2.0 * (c.size - 1) / c.size;
      std::printf("{\"world\": %d, \"bytes\": %lld, \"ms\": %.3f, \"algbw_GBs\": %.3f, \"busbw_GBs\": %.3f, "
                  "\"algorithm\": \"%s\", \"resolved\": \"%s\", \"transport\": \"%s\"}\n",
                  c.size, static_cast<long long>(bytes), dt * 1e3, algbw, busbw, args.algorithm.c_str(),
                  std::string(comm::name(comm::resolve_algorithm(c, x, {.algorithm = algo}))).c_str(),
                  c.transport->kind());
      std::fflush(stdout);
    }
  }
  pg->finish();
  return 0;
}

}  // namespace

int run_bench_allreduce(const BenchAllreduceArgs& args) {
  comm::JobEnv env = comm::read_job_env();
  if (env.has_coordinator() && env.world_size > 1) return worker(args, env);
  if (args.workers == 1) {
    comm::JobEnv solo;
    return worker(args, solo);
  }
  std::vector<std::string> command = {self_executable()};
  for (const auto& a : args.argv) command.push_back(a);
  return launch({.workers = args.workers, .hosts = args.hosts, .insecure = args.insecure}, command);
}

}  // namespace loom::cli
