// `loom bench allreduce`: all-reduce bus bandwidth, measured the way the
// references (../shared/reference: gloo, Open MPI, nccl-tests) measure it.
// `loom bench ps`: parameter-server push+pull throughput and latency.
//
//   loom bench allreduce --workers 4 --sizes 1M,64M
//   loom bench ps --workers 2 --servers 2 --bytes 4M,64M [--keys 8] [--link-gbit 1]
//
// Both print one JSON line per size (worker 0) and, outside a job, start
// their own (`launch`), re-running the same command line as every worker.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace loom::cli {

struct BenchAllreduceArgs {
  int workers = 2;
  std::vector<std::string> sizes = {"1M", "4M", "16M", "64M"};
  std::string algorithm = "auto";
  std::string transport = "auto";
  bool insecure = false;
  std::vector<std::string> hosts;
  std::vector<std::string> argv;  // re-run by each worker
};

int run_bench_allreduce(const BenchAllreduceArgs& args);

// Each worker pushes and pulls `bytes` of f32 per iteration with one
// KVStore::pushpull call (what ParameterServerStrategy does every step), split into `keys`
// keys of equal size. Keys above `split_bound` elements are cut over all
// servers (placement.h); smaller ones live whole on server key mod S.
struct BenchPsArgs {
  int workers = 1;
  int servers = 1;
  std::vector<std::string> sizes = {"1M", "4M", "16M", "64M"};  // --bytes: per worker, per direction
  std::string type = "dist_sync";
  int keys = 1;
  int iters = 0;                      // timed iterations; 0: from the size (10 to 200)
  int64_t split_bound = 1 << 20;      // elements, as `loom launch --split-bound`
  double link_gbit = 0;               // > 0: also print the link bound for one process per host
  bool insecure = false;
  bool shared_memory = true;          // --no-shm: dense slices over the socket even on one host
  std::vector<std::string> hosts;
  std::vector<std::string> argv;      // re-run by each worker
};

int run_bench_ps(const BenchPsArgs& args);

}  // namespace loom::cli
