#include "tools/loom/commands.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include <csignal>
#include <optional>
#include <set>
#include <thread>

#include "loom/comm/collectives/collectives.h"
#include "loom/comm/rendezvous/coordinator.h"
#include "loom/comm/rendezvous/job_env.h"
#include "loom/core/stop_signals.h"
#include "loom/io/safetensors.h"
#include "loom/parallel/strategy_factory.h"
#include "loom/ps/kvstore.h"
#include "loom/ps/server_process.h"
#include "tools/loom/launch.h"
#include "loom/ops/ops.h"
#include "loom/train/trainer.h"

namespace loom::cli {

namespace {

int train_here(const TrainArgs& args, const io::JobConfig& job, std::shared_ptr<train::Strategy> strategy) {
  train::Trainer trainer(job, {.checkpoint_dir = args.checkpoint_dir, .metrics_out = args.metrics_out}, strategy);
  const bool main = strategy->is_main();
  if (args.resume) {
    if (trainer.resume_from_latest()) {
      if (main) std::fprintf(stderr, "resuming at step %lld\n", static_cast<long long>(trainer.step()));
    } else if (main) {
      std::fprintf(stderr, "no checkpoint to resume from; starting fresh\n");
    }
  }
  train::EpochReport last = trainer.fit();
  if (last.preempted) {
    strategy->finish();
    // Resumable only if it saved (on the main rank; the others follow its checkpoint dir).
    const bool saved = !args.checkpoint_dir.empty() || !job.train.checkpoint_dir.empty();
    return saved ? core::kExitPreempted : 128 + (core::stop_signal() > 0 ? core::stop_signal() : SIGTERM);
  }
  if (main && !args.save_final.empty()) {
    trainer.save_model(args.save_final);
    std::fprintf(stderr, "saved final weights to %s\n", args.save_final.c_str());
  }
  if (main && last.test) std::printf("%s\n", last.test->to_json().c_str());
  if (main && last.validation) std::printf("%s\n", last.validation->to_json().c_str());
  strategy->finish();
  return 0;
}

// Starts the job's processes: this same command as every worker, beside a
// coordinator (and the parameter servers).
int launch_job(const TrainArgs& args, const io::JobConfig& job, const parallel::ProcessRole& role) {
  std::vector<std::string> command = {self_executable()};
  for (const auto& a : args.argv) command.push_back(a);
  // The workers end themselves stop_grace_s after a stop signal; the launcher gives them 10 s more.
  const int stop_grace_ms = static_cast<int>(job.train.stop_grace_s * 1000) + 10000;
  if (!io::uses_servers(role.mode)) {
    return launch({.workers = role.workers, .insecure = false, .stop_grace_ms = stop_grace_ms}, command);
  }
  const auto& d = job.distributed;
  return launch({.workers = role.workers, .servers = role.servers, .stop_grace_ms = stop_grace_ms,
                 .replicas = static_cast<int>(d.replicas), .split_bound = d.split_bound,
                 .heartbeat_timeout_s = d.heartbeat_timeout_s},
                command);
}

}  // namespace

int run_server(const ServerArgs& args) {
  comm::JobEnv env = comm::read_job_env();
  LOOM_CHECK_T(ConfigError, env.role == "server",
               "loom server: this process is not a server of a job (set LOOM_ROLE=server or DMLC_ROLE=server, with "
               "the coordinator's address); `loom launch --servers S` and `loom train` start servers themselves");
  return ps::run_server(env, {.replicas = args.replicas, .split_bound = args.split_bound});
}

int run_train(const TrainArgs& args) {
  io::JobConfig job = io::load_job_file(args.job, args.overrides);
  const comm::JobEnv env = comm::read_job_env();
  const parallel::ProcessRole role = parallel::choose_role(job, env, {.workers = args.workers});
  const auto& d = job.distributed;
  switch (role.role) {
    case parallel::Role::Launch: return launch_job(args, job, role);
    case parallel::Role::Server:
      return ps::run_server(env, {.replicas = static_cast<int>(d.replicas), .split_bound = d.split_bound});
    case parallel::Role::Coordinator:
      comm::check_job_security(env);  // MXNet's scheduler: says how to pass a secret
      return run_coordinator({.bind = format("tcp://*:{}", env.coordinator_port), .workers = env.world_size,
                              .servers = env.num_servers, .insecure = env.insecure,
                              .heartbeat_timeout_s = d.heartbeat_timeout_s, .tolerate_server_loss = d.replicas > 0});
    case parallel::Role::Train: {
      // Preemption: the first stop signal finishes the step and checkpoints
      // (Trainer::fit). Before the strategy starts its threads, so that they
      // inherit the blocked signals (core/stop_signals.h).
      std::optional<core::StopSignals> stop_signals;
      if (!job.train.stop_signals.empty()) {
        stop_signals.emplace(job.train.stop_signals,
                             std::chrono::milliseconds(static_cast<int64_t>(job.train.stop_grace_s * 1000)));
      }
      return train_here(args, job, parallel::make_strategy(role, job, env));
    }
  }
  return 1;
}

int run_eval(const EvalArgs& args) {
  io::JobConfig job = io::load_job_file(args.job, args.overrides);
  train::Trainer trainer(job, {.log = nullptr});
  trainer.load_model(args.checkpoint);
  if (trainer.task() == train::Task::LanguageModel) {
    std::printf("%s\n", trainer.evaluate_language_model().to_json().c_str());
  } else {
    std::printf("%s\n", trainer.evaluate().to_json().c_str());
  }
  return 0;
}

namespace {

void print_header(const std::string& path) {
  io::SafetensorsHeader h = io::read_safetensors_header(path);
  std::printf("%s: %zu tensors, %llu bytes of data\n", path.c_str(), h.tensors.size(),
              static_cast<unsigned long long>(h.data_nbytes));
  size_t width = 4;
  for (const auto& t : h.tensors) width = std::max(width, t.name.size());
  uint64_t params = 0;
  for (const auto& t : h.tensors) {
    std::printf("  %-*s  %-4s  %s\n", static_cast<int>(width), t.name.c_str(),
                std::string(io::safetensors_dtype_name(t.dtype)).c_str(), core::to_string(t.shape).c_str());
    params += static_cast<uint64_t>(core::numel(t.shape));
  }
  std::printf("  total elements: %llu\n", static_cast<unsigned long long>(params));
  if (!h.metadata.empty()) {
    std::printf("metadata:\n");
    for (const auto& [k, v] : h.metadata) std::printf("  %s = %s\n", k.c_str(), v.c_str());
  }
}

int print_diff(const std::string& a_path, const std::string& b_path) {
  io::SafetensorsFile a = io::read_safetensors(a_path), b = io::read_safetensors(b_path);
  double max_abs = 0, max_rel = 0;
  int differing = 0;
  // max_rel_diff: max |a - b| / max(|a|, |b|) over the tensor.
  std::printf("%-40s %14s %14s\n", "tensor", "max_abs_diff", "max_rel_diff");
  for (const auto& [name, ta] : a.tensors) {
    const core::Tensor* tb = b.find(name);
    if (!tb) {
      std::printf("%-40s only in %s\n", name.c_str(), a_path.c_str());
      ++differing;
      continue;
    }
    if (ta.shape() != tb->shape()) {
      std::printf("%-40s shapes differ: %s vs %s\n", name.c_str(), core::to_string(ta.shape()).c_str(),
                  core::to_string(tb->shape()).c_str());
      ++differing;
      continue;
    }
    auto va = ta.to_vector<double>(), vb = tb->to_vector<double>();
    // Relative to the tensor's scale (its largest magnitude), so that elements
    // near zero do not turn rounding noise into huge ratios.
    double t_abs = 0, scale = 0;
    for (size_t i = 0; i < va.size(); ++i) {
      t_abs = std::max(t_abs, std::abs(va[i] - vb[i]));
      scale = std::max({scale, std::abs(va[i]), std::abs(vb[i])});
    }
    const double t_rel = scale > 0 ? t_abs / scale : 0.0;
    std::printf("%-40s %14.6g %14.6g\n", name.c_str(), t_abs, t_rel);
    max_abs = std::max(max_abs, t_abs);
    max_rel = std::max(max_rel, t_rel);
  }
  for (const auto& [name, tb] : b.tensors) {
    if (!a.find(name)) {
      std::printf("%-40s only in %s\n", name.c_str(), b_path.c_str());
      ++differing;
    }
  }
  std::printf("%-40s %14.6g %14.6g\n", "overall", max_abs, max_rel);
  std::printf("{\"max_abs_diff\": %.17g, \"max_rel_diff\": %.17g, \"mismatched_tensors\": %d}\n", max_abs, max_rel,
              differing);
  return 0;
}

}  // namespace

int run_coordinator(const CoordinatorArgs& args) {
  comm::SecurityOptions security = comm::security_from_env(args.insecure);
  comm::check_security(security);
  std::string bind = args.bind.rfind("tcp://", 0) == 0 ? args.bind : "tcp://" + args.bind;
  comm::Coordinator coordinator(
      {.bind = bind, .num_workers = args.workers, .num_servers = args.servers, .security = security,
       .heartbeat_timeout = std::chrono::milliseconds(static_cast<int64_t>(args.heartbeat_timeout_s * 1000))});
  std::fprintf(stderr, "coordinator listening on %s for %d workers and %d servers\n", coordinator.endpoint().c_str(),
               args.workers, args.servers);
  // Runs until every process has left, or until SIGTERM/SIGINT.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::set<int> reported;
  for (;;) {
    if (coordinator.wait_finished(std::chrono::milliseconds(200))) return 0;
    timespec zero{0, 0};
    if (sigtimedwait(&set, nullptr, &zero) > 0) return 0;
    for (const auto& lost : coordinator.lost()) {
      // With replicated parameter servers a lost server is survivable: its backups take over.
      if (args.tolerate_server_loss && lost.role == "server") {
        if (reported.insert(lost.rank).second) {
          std::fprintf(stderr, "coordinator: %s; its backups take over\n", lost.describe().c_str());
        }
        continue;
      }
      std::fprintf(stderr, "coordinator: %s\n", lost.describe().c_str());
      return 1;
    }
  }
}

int run_inspect(const InspectArgs& args) {
  if (args.diff) {
    LOOM_CHECK(args.files.size() == 2, "inspect --diff needs exactly two files, got {}", args.files.size());
    return print_diff(args.files[0], args.files[1]);
  }
  LOOM_CHECK(args.files.size() == 1, "inspect takes one file (or two with --diff), got {}", args.files.size());
  print_header(args.files[0]);
  return 0;
}

}  // namespace loom::cli
