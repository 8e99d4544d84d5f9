// The `loom` command: train, evaluate and inspect.
//
//   loom train examples/fashion_mnist/mlp.toml [--set train.epochs=2] [--checkpoint-dir D] [--resume]
//              [--metrics-out metrics.jsonl] [--save-final model.safetensors]
//   loom eval examples/fashion_mnist/mlp.toml --checkpoint model.safetensors
//   loom inspect ckpt.safetensors          |   loom inspect --diff a.safetensors b.safetensors
//   loom launch --workers 4 [--servers 2 --replicas 1] -- COMMAND       loom server (a parameter server)
//
// Errors become one line on stderr ("loom: ...") and exit status 1; usage
// errors exit with 2.
#include <CLI/CLI.hpp>
#include <malloc.h>

#include <cstdio>
#include <string>
#include <vector>

#include "loom/core/error.h"
#include "tools/loom/commands.h"
#include "tools/loom/bench.h"
#include "tools/loom/launch.h"

namespace {

using namespace loom::cli;

// loom train JOB [--set k=v] [--checkpoint-dir D] [--resume] ...
CLI::App* add_train(CLI::App& app, TrainArgs& train) {
  CLI::App* t = app.add_subcommand("train", "train a model from a TOML job file");
  t->add_option("job", train.job, "job file (TOML)")->required();
  t->add_option("--set", train.overrides, "override a job key, e.g. --set train.epochs=3 (repeatable)");
  t->add_option("--checkpoint-dir", train.checkpoint_dir, "write checkpoints here (overrides [train] checkpoint_dir)");
  t->add_flag("--resume", train.resume, "continue from the newest checkpoint in the checkpoint dir");
  t->add_option("--metrics-out", train.metrics_out, "append one JSON object per epoch to this file");
  t->add_option("--save-final", train.save_final, "write the final weights to this safetensors file");
  t->add_option("--workers", train.workers, "train with N local worker processes (data parallel, all-reduce)")
      ->check(CLI::PositiveNumber);
  return t;
}

// loom eval JOB --checkpoint FILE
CLI::App* add_eval(CLI::App& app, EvalArgs& eval) {
  CLI::App* e = app.add_subcommand("eval", "evaluate a checkpoint on the job's test set");
  e->add_option("job", eval.job, "job file (TOML)")->required();
  e->add_option("--checkpoint", eval.checkpoint, "weights or checkpoint (safetensors)")->required();
  e->add_option("--set", eval.overrides, "override a job key (repeatable)");
  return e;
}

// loom inspect FILE | --diff A B
CLI::App* add_inspect(CLI::App& app, InspectArgs& inspect) {
  CLI::App* i = app.add_subcommand("inspect", "list a checkpoint's tensors and metadata, or diff two");
  i->add_option("files", inspect.files, "one file, or two with --diff")->required();
  i->add_flag("--diff", inspect.diff, "print the largest absolute and relative difference per tensor");
  return i;
}

// loom launch --workers N [--servers S ...] -- COMMAND
CLI::App* add_launch(CLI::App& app, LaunchOptions& launch, std::vector<std::string>& launch_command) {
  CLI::App* l = app.add_subcommand("launch", "start a coordinator and N worker processes running COMMAND");
  l->add_option("--workers", launch.workers, "number of worker processes")->check(CLI::PositiveNumber);
  l->add_option("--servers", launch.servers, "number of parameter-server processes");
  l->add_option("--hosts", launch.hosts, "placement: localhost:slots or netns:NAME:slots, comma-separated")
      ->delimiter(',');
  l->add_flag("--insecure", launch.insecure, "no CURVE encryption or authentication (trusted networks only)");
  l->add_option("--heartbeat-timeout", launch.heartbeat_timeout_s, "seconds of silence after which a process is lost")
      ->check(CLI::PositiveNumber);
  l->add_option("--replicas", launch.replicas, "parameter servers: backups of each shard");
  l->add_option("--split-bound", launch.split_bound, "parameter servers: split arrays larger than this (elements)");
  l->add_flag("--describe", launch.describe,
              "print where each process would run (and, for `loom train JOB`, where each key lives) and exit");
  l->add_option("command", launch_command, "the program and its arguments (after --)")->required();
  return l;
}

// loom coordinator (started by loom launch)
CLI::App* add_coordinator(CLI::App& app, CoordinatorArgs& coord) {
  CLI::App* c = app.add_subcommand("coordinator", "run a job's coordinator (rendezvous, barriers, heartbeats)");
  c->add_option("--bind", coord.bind, "address to listen on (host:port or tcp://host:port)");
  c->add_option("--workers", coord.workers, "number of workers to expect")->check(CLI::PositiveNumber);
  c->add_option("--servers", coord.servers, "number of parameter servers to expect");
  c->add_flag("--insecure", coord.insecure, "no CURVE encryption or authentication");
  c->add_option("--heartbeat-timeout", coord.heartbeat_timeout_s, "seconds of silence after which a process is lost")
      ->check(CLI::PositiveNumber);
  c->add_flag("--tolerate-server-loss", coord.tolerate_server_loss,
              "a lost parameter server does not end the job (its shards have backups)");
  return c;
}

// loom server (a parameter server)
CLI::App* add_server(CLI::App& app, ServerArgs& server) {
  CLI::App* sv =
      app.add_subcommand("server", "run a parameter server of a job (LOOM_ROLE=server or DMLC_ROLE=server)");
  sv->add_option("--replicas", server.replicas, "backups of each server's shards (as every server of the job)");
  sv->add_option("--split-bound", server.split_bound, "arrays larger than this many elements are split over all servers")
      ->check(CLI::PositiveNumber);
  return sv;
}

// loom bench allreduce ...
CLI::App* add_bench_allreduce(CLI::App& bench, BenchAllreduceArgs& bench_ar) {
  CLI::App* bar = bench.add_subcommand("allreduce", "all-reduce bus bandwidth across worker processes (JSON lines)");
  bar->add_option("--workers", bench_ar.workers, "number of worker processes")->check(CLI::PositiveNumber);
  bar->add_option("--sizes", bench_ar.sizes, "message sizes, e.g. 1M,4M,16M,64M")->delimiter(',');
  bar->add_option("--algo", bench_ar.algorithm, "auto, ring, halving_doubling, tree, hierarchical or shm");
  bar->add_option("--transport", bench_ar.transport, "auto, zmq or shm");
  bar->add_option("--hosts", bench_ar.hosts, "placement, as for launch")->delimiter(',');
  bar->add_flag("--insecure", bench_ar.insecure, "no CURVE encryption (as the plaintext references)");
  return bar;
}

// loom bench ps ...
CLI::App* add_bench_ps(CLI::App& bench, BenchPsArgs& bench_ps) {
  CLI::App* bps =
      bench.add_subcommand("ps", "parameter-server push+pull throughput and latency per worker (JSON lines)");
  bps->add_option("--workers", bench_ps.workers, "number of worker processes")->check(CLI::PositiveNumber);
  bps->add_option("--servers", bench_ps.servers, "number of parameter-server processes")->check(CLI::PositiveNumber);
  bps->add_option("--bytes", bench_ps.sizes, "bytes each worker pushes and pulls per iteration, e.g. 1M,4M,16M,64M")
      ->delimiter(',');
  bps->add_option("--type", bench_ps.type, "dist_sync or dist_async");
  bps->add_option("--keys", bench_ps.keys, "split the bytes into this many keys of equal size (one pushpull call)")
      ->check(CLI::PositiveNumber);
  bps->add_option("--iters", bench_ps.iters, "timed iterations (default: from the size, 10 to 200)")
      ->check(CLI::PositiveNumber);
  bps->add_option("--split-bound", bench_ps.split_bound, "split keys larger than this many elements over all servers")
      ->check(CLI::PositiveNumber);
  bps->add_option("--link-gbit", bench_ps.link_gbit, "link rate (Gbit/s) of one process per host: print the bound")
      ->check(CLI::PositiveNumber);
  bps->add_option("--hosts", bench_ps.hosts, "placement, as for launch (servers after the workers)")->delimiter(',');
  bps->add_flag("--insecure", bench_ps.insecure, "no CURVE encryption");
  bps->add_flag("!--no-shm", bench_ps.shared_memory,
                "send dense slices over the socket even to servers on the worker's host (no shared memory)");
  return bps;
}

}  // namespace

int main(int argc, char** argv) {
  // ZeroMQ allocates a buffer for every message it receives (parameter-server
  // slices, ring chunks, checkpoints' state: 256 KiB to a few MiB, freed soon
  // after). Above 128 KiB glibc gives each its own mmap, which the kernel
  // zeroes page by page on first touch and unmaps on free. A loom process
  // keeps them in its heap instead (up to 32 MiB, glibc's ceiling) and does
  // not hand the heap's top back on every free: about a quarter less CPU per
  // parameter-server push+pull on one host (docs/BENCHMARKS.md).
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 512 << 20);
  CLI::App app{"Loom: train, evaluate and inspect models (C++20 deep-learning training framework)", "loom"};
  app.set_version_flag("--version", std::string("loom ") + LOOM_VERSION);
  app.require_subcommand(1);

  TrainArgs train;
  EvalArgs eval;
  InspectArgs inspect;
  LaunchOptions launch;
  std::vector<std::string> launch_command;
  CoordinatorArgs coord;
  ServerArgs server;
  BenchAllreduceArgs bench_ar;
  BenchPsArgs bench_ps;
  CLI::App* t = add_train(app, train);
  CLI::App* e = add_eval(app, eval);
  CLI::App* i = add_inspect(app, inspect);
  CLI::App* l = add_launch(app, launch, launch_command);
  CLI::App* c = add_coordinator(app, coord);
  CLI::App* sv = add_server(app, server);
  CLI::App* b = app.add_subcommand("bench", "benchmarks");
  b->require_subcommand(1);
  CLI::App* bar = add_bench_allreduce(*b, bench_ar);
  CLI::App* bps = add_bench_ps(*b, bench_ps);

  for (int k = 1; k < argc; ++k) {
    train.argv.emplace_back(argv[k]);
    bench_ar.argv.emplace_back(argv[k]);
    bench_ps.argv.emplace_back(argv[k]);
  }
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
    if (*l) return loom::cli::launch(launch, launch_command);
    if (*c) return loom::cli::run_coordinator(coord);
    if (*sv) return loom::cli::run_server(server);
    if (*bar) return loom::cli::run_bench_allreduce(bench_ar);
    if (*bps) return loom::cli::run_bench_ps(bench_ps);
  } catch (const loom::Error& err) {
    std::fprintf(stderr, "loom: %s\n", err.what());
    return 1;
  } catch (const std::exception& err) {
    std::fprintf(stderr, "loom: unexpected error: %s\n", err.what());
    return 1;
  }
  return 2;
}
