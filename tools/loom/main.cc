// The `loom` command: train, evaluate and inspect.
//
//   loom train examples/fashion_mnist/mlp.toml [--set train.epochs=2] [--checkpoint-dir D] [--resume]
//              [--metrics-out metrics.jsonl] [--save-final model.safetensors]
//   loom eval examples/fashion_mnist/mlp.toml --checkpoint model.safetensors
//   loom inspect ckpt.safetensors          |   loom inspect --diff a.safetensors b.safetensors
//
// Errors become one line on stderr ("loom: ...") and exit status 1; usage
// errors exit with 2.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>
#include <vector>

#include "loom/core/error.h"
#include "tools/loom/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"Loom: train, evaluate and inspect models (C++20 deep-learning training framework)", "loom"};
  app.set_version_flag("--version", std::string("loom ") + LOOM_VERSION);
  app.require_subcommand(1);

  loom::cli::TrainArgs train;
  auto* t = app.add_subcommand("train", "train a model from a TOML job file");
  t->add_option("job", train.job, "job file (TOML)")->required();
  t->add_option("--set", train.overrides, "override a job key, e.g. --set train.epochs=3 (repeatable)");
  t->add_option("--checkpoint-dir", train.checkpoint_dir, "write checkpoints here (overrides [train] checkpoint_dir)");
  t->add_flag("--resume", train.resume, "continue from the newest checkpoint in the checkpoint dir");
  t->add_option("--metrics-out", train.metrics_out, "append one JSON object per epoch to this file");
  t->add_option("--save-final", train.save_final, "write the final weights to this safetensors file");

  loom::cli::EvalArgs eval;
  auto* e = app.add_subcommand("eval", "evaluate a checkpoint on the job's test set");
  e->add_option("job", eval.job, "job file (TOML)")->required();
  e->add_option("--checkpoint", eval.checkpoint, "weights or checkpoint (safetensors)")->required();
  e->add_option("--set", eval.overrides, "override a job key (repeatable)");

  loom::cli::InspectArgs inspect;
  auto* i = app.add_subcommand("inspect", "list a checkpoint's tensors and metadata, or diff two");
  i->add_option("files", inspect.files, "one file, or two with --diff")->required();
  i->add_flag("--diff", inspect.diff, "print the largest absolute and relative difference per tensor");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& err) {
    const int rc = app.exit(err);  // prints help, version or the usage error
    return rc == 0 ? 0 : 2;
  }
  try {
    if (*t) return loom::cli::run_train(train);
    if (*e) return loom::cli::run_eval(eval);
    if (*i) return loom::cli::run_inspect(inspect);
  } catch (const loom::Error& err) {
    std::fprintf(stderr, "loom: %s\n", err.what());
    return 1;
  } catch (const std::exception& err) {
    std::fprintf(stderr, "loom: unexpected error: %s\n", err.what());
    return 1;
  }
  return 2;
}
