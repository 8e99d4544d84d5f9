// Starting a job's processes on this machine: the coordinator and N workers,
// each a child process with LOOM_* variables, their output prefixed by role
// and rank, all stopped if one fails.
//
//   loom launch --workers 4 -- ./my_trainer --flag      (any program)
//   loom train job.toml --workers 4                     (calls the same code)
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace loom::cli {

struct LaunchOptions {
  int workers = 1;
  int servers = 0;
  std::vector<std::string> hosts;   // "localhost:slots" or "netns:NAME:slots" (network namespaces as hosts)
  std::string secret;               // job secret; generated when empty and not insecure
  bool insecure = false;
  std::string coordinator_bind = "127.0.0.1";
  int grace_ms = 5000;              // after a failure: SIGTERM, then SIGKILL after this long
  // Preemption: a SIGTERM, SIGINT or SIGUSR1 sent to the launcher goes to
  // every worker, which finishes its step, checkpoints and exits with
  // core::kExitPreempted (the launcher then too); workers still running this
  // long after the first signal are stopped as after a failure.
  int stop_grace_ms = 120000;
  bool describe = false;            // print the placement and exit
  int replicas = 0;                 // parameter servers: backups per shard (a lost server does not stop the job)
  int64_t split_bound = 1 << 20;    // parameter servers: split arrays larger than this (elements)
  double heartbeat_timeout_s = 10.0;
};

// Runs `command` as every worker (and server) process; returns the exit status for `loom`.
int launch(const LaunchOptions& options, const std::vector<std::string>& command);

// The path of the running `loom` executable (for re-running itself as a worker).
std::string self_executable();

}  // namespace loom::cli
