#include "tools/loom/bench.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>

#include "loom/comm/collectives/collectives.h"
#include "loom/comm/rendezvous/job_env.h"
#include "loom/core/parallel.h"
#include "loom/ops/ops.h"
#include "loom/parallel/process_group.h"
#include "loom/ps/kvstore.h"
#include "loom/ps/placement.h"
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

// The bound a link of `link_gbit` puts on one worker's push+pull of `keys`,
// every process on its own host (GB/s of 2 * bytes): each worker sends and
// receives `bytes` over its own full-duplex link, and each server sends and
// receives W times what it holds; the busiest link sets the time.
double ps_link_bound_GBs(const BenchPsArgs& args, int num_workers, int num_servers, const std::vector<int64_t>& keys,
                         const std::vector<core::Tensor>& values) {
  const ps::PlacementOptions placement{.num_servers = num_servers, .split_bound = args.split_bound};
  std::map<int, double> held;  // bytes per server
  double bytes = 0;
  for (size_t k = 0; k < values.size(); ++k) {
    const double row_bytes = static_cast<double>(values[k].nbytes()) / static_cast<double>(ps::key_rows(values[k].shape()));
    for (const ps::Slice& s : ps::place_key(keys[k], values[k].shape(), placement)) {
      held[s.server] += row_bytes * static_cast<double>(s.num_rows);
    }
    bytes += static_cast<double>(values[k].nbytes());
  }
  double busiest = bytes;
  for (const auto& [server, b] : held) busiest = std::max(busiest, num_workers * b);
  const double link_Bps = args.link_gbit * 1e9 / 8;
  return 2 * bytes / (busiest / link_Bps) / 1e9;
}

double percentile_ms(std::vector<double> seconds, double q) {  // nearest rank
  std::sort(seconds.begin(), seconds.end());
  const auto rank = static_cast<size_t>(std::ceil(q * static_cast<double>(seconds.size())));
  return seconds[std::clamp<size_t>(rank, 1, seconds.size()) - 1] * 1e3;
}

// The part of the payload bytes that went through shared memory (one-host servers).
double shm_fraction(const ps::KVStoreStats& s) {
  const double all = static_cast<double>(s.bytes_sent + s.bytes_received);
  return all > 0 ? static_cast<double>(s.shm_bytes_sent + s.shm_bytes_received) / all : 0.0;
}

int ps_worker(const BenchPsArgs& args, const comm::JobEnv& env) {
  core::set_num_threads(1);
  auto kv = ps::KVStore::create(io::parse_mode(args.type).value(),  // checked by run_bench_ps
                                {.shared_memory = args.shared_memory});
  int64_t next_key = 0;
  for (const auto& s : args.sizes) {
    const int64_t bytes = parse_bytes(s);
    const int64_t key_numel = bytes / 4 / args.keys;
    std::vector<int64_t> keys;
    std::vector<core::Tensor> grads, weights;
    for (int k = 0; k < args.keys; ++k) {
      keys.push_back(next_key++);
      grads.push_back(ops::ones({key_numel}));
      weights.push_back(ops::zeros({key_numel}));
    }
    kv->init(keys, weights);
    for (int i = 0; i < 2; ++i) kv->pushpull(keys, grads, weights);  // warm-up: connections, CURVE handshakes
    const int64_t moved = key_numel * 4 * args.keys;
    // ~1 GB pushed + pulled per worker, 10 to 200 iterations (the same on every worker: dist_sync needs it).
    const int iters = args.iters > 0 ? args.iters
                                     : static_cast<int>(std::clamp<double>(1e9 / (2.0 * static_cast<double>(moved)), 10, 200));
    std::vector<double> latency(static_cast<size_t>(iters));
    kv->barrier();
    const auto t0 = std::chrono::steady_clock::now();
    auto last = t0;
    for (int i = 0; i < iters; ++i) {
      kv->pushpull(keys, grads, weights);
      const auto now = std::chrono::steady_clock::now();
      latency[static_cast<size_t>(i)] = std::chrono::duration<double>(now - last).count();
      last = now;
    }
    const double dt = std::chrono::duration<double>(last - t0).count() / iters;
    kv->barrier();
    if (kv->rank() == 0) {
      const double per_worker = 2.0 * static_cast<double>(moved) / dt / 1e9;
      std::printf("{\"workers\": %d, \"servers\": %d, \"bytes\": %lld, \"keys\": %d, \"type\": \"%s\", "
                  "\"op\": \"pushpull\", \"secure\": %s, \"iters\": %d, \"ms\": %.3f, \"throughput_GBs\": %.3f, "
                  "\"aggregate_GBs\": %.3f, \"p50_ms\": %.3f, \"p90_ms\": %.3f, \"p99_ms\": %.3f, "
                  "\"shm_fraction\": %.3f",
                  kv->num_workers(), env.num_servers, static_cast<long long>(moved), args.keys, args.type.c_str(),
                  env.insecure ? "false" : "true", iters, dt * 1e3, per_worker, per_worker * kv->num_workers(),
                  percentile_ms(latency, 0.5), percentile_ms(latency, 0.9), percentile_ms(latency, 0.99),
                  shm_fraction(kv->stats()));
      if (args.link_gbit > 0) {
        const double bound = ps_link_bound_GBs(args, kv->num_workers(), env.num_servers, keys, grads);
        std::printf(", \"link_gbit\": %g, \"link_bound_GBs\": %.3f, \"of_link_bound\": %.3f", args.link_gbit, bound,
                    per_worker / bound);
      }
      std::printf("}\n");
      std::fflush(stdout);
    }
  }
  kv->close();
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
  LaunchOptions job;  // assigned, not designated: LaunchOptions has more fields than we set
  job.workers = args.workers;
  job.hosts = args.hosts;
  job.insecure = args.insecure;
  return launch(job, command);
}

int run_bench_ps(const BenchPsArgs& args) {
  LOOM_CHECK_T(ConfigError, args.workers >= 1 && args.servers >= 1, "bench ps: needs --workers >= 1 and --servers >= 1");
  LOOM_CHECK_T(ConfigError, args.keys >= 1, "bench ps: --keys must be >= 1, got {}", args.keys);
  const std::optional<io::Mode> type = io::parse_mode(args.type);
  LOOM_CHECK_T(ConfigError, type == io::Mode::DistSync || type == io::Mode::DistAsync,
               "bench ps: --type is dist_sync or dist_async, got '{}'", args.type);
  for (const auto& s : args.sizes) {  // a bad size fails here, before any process starts
    LOOM_CHECK_T(ConfigError, parse_bytes(s) / 4 / args.keys >= 1, "bench ps: {} bytes do not make {} keys of f32", s,
                 args.keys);
  }
  comm::JobEnv env = comm::read_job_env();
  if (env.has_coordinator()) {
    LOOM_CHECK_T(ConfigError, env.num_servers > 0, "bench ps: this job has no parameter servers (LOOM_NUM_SERVERS)");
    return ps_worker(args, env);
  }
  std::vector<std::string> command = {self_executable()};
  for (const auto& a : args.argv) command.push_back(a);
  LaunchOptions job;
  job.workers = args.workers;
  job.servers = args.servers;
  job.hosts = args.hosts;
  job.insecure = args.insecure;
  job.split_bound = args.split_bound;
  return launch(job, command);
}

}  // namespace loom::cli
