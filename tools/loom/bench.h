// `loom bench allreduce`: all-reduce bus bandwidth, measured the way the
// references (../shared/reference: gloo, Open MPI, nccl-tests) measure it.
#pragma once

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

}  // namespace loom::cli
