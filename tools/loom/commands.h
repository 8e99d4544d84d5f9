// The subcommands of `loom`, one function each; main.cc parses the arguments.
#pragma once

#include <string>
#include <vector>

namespace loom::cli {

struct TrainArgs {
  std::string job;
  std::vector<std::string> overrides;
  std::string checkpoint_dir, metrics_out, save_final;
  bool resume = false;
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

}  // namespace loom::cli
