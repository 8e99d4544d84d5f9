// The subcommands of `loom`, one function each; main.cc parses the arguments.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace loom::cli {

struct TrainArgs {
  std::string job;
  std::vector<std::string> overrides;
  std::string checkpoint_dir, metrics_out, save_final;
  bool resume = false;
  int workers = 0;  // > 0: overrides [distributed] workers
  std::vector<std::string> argv;  // the original arguments (re-run by each worker)
};
struct CoordinatorArgs {
  std::string bind = "tcp://127.0.0.1:29400";
  int workers = 1, servers = 0;
  bool insecure = false;
  double heartbeat_timeout_s = 10.0;
  bool tolerate_server_loss = false;  // replicated parameter servers: a lost server is not the end of the job
};
struct ServerArgs {
  int replicas = 0;
  int64_t split_bound = 1 << 20;
};
struct EvalArgs {
  std::string job, checkpoint;
  std::vector<std::string> overrides;
};
struct InspectArgs {
  std::vector<std::string> files;
  bool diff = false;
};

int run_train(const TrainArgs& args);
int run_eval(const EvalArgs& args);
int run_inspect(const InspectArgs& args);
int run_coordinator(const CoordinatorArgs& args);
int run_server(const ServerArgs& args);

}  // namespace loom::cli
