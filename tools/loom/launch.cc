#include "tools/loom/launch.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <thread>
#include <utility>

#include "loom/core/error.h"
#include "loom/core/stop_signals.h"
#include "loom/io/config.h"
#include "loom/parallel/pipeline/partition.h"
#include "loom/parallel/pipeline/schedule.h"
#include "loom/parallel/strategy_factory.h"
#include "loom/ps/placement.h"
#include "loom/train/trainer.h"

namespace loom::cli {
namespace {

struct Child {
  std::string label;  // "coordinator", "worker 3"
  std::string host = "localhost";
  pid_t pid = -1;
  int out_fd = -1;    // stdout+stderr pipe
  std::string partial;  // an unfinished output line
  bool exited = false;
  int status = 0;
};

struct Placement {
  std::string host;   // "localhost" or a namespace name
  bool netns = false;
  int rank = 0, local_rank = 0;
};

std::vector<Placement> place(const LaunchOptions& o, int count) {
  std::vector<std::pair<std::string, int>> hosts;
  for (const auto& h : o.hosts) {
    std::string spec = h;
    bool netns = spec.rfind("netns:", 0) == 0;
    if (netns) spec = spec.substr(6);
    auto colon = spec.rfind(':');
    int slots = 1;
    std::string name = spec;
    if (colon != std::string::npos) {
      name = spec.substr(0, colon);
      try {
        slots = std::stoi(spec.substr(colon + 1));
      } catch (const std::exception&) {
        throw ConfigError(format("--hosts: bad slot count in '{}' (expected name:slots)", h));
      }
    }
    LOOM_CHECK_T(ConfigError, slots >= 1 && !name.empty(), "--hosts: bad entry '{}' (expected name:slots)", h);
    LOOM_CHECK_T(ConfigError, netns || name == "localhost" || name == "127.0.0.1",
                 "--hosts: '{}' is a remote host; `loom launch` starts processes on this machine only (hosts as "
                 "localhost or netns:NAME). Start remote ranks with your cluster's launcher and LOOM_* variables "
                 "(see deploy/)", name);
    hosts.emplace_back((netns ? "netns:" : "") + name, slots);
  }
  if (hosts.empty()) hosts.emplace_back("localhost", count);
  int total = 0;
  for (auto& [h, s] : hosts) total += s;
  LOOM_CHECK_T(ConfigError, total >= count, "--hosts offer {} slots for {} processes", total, count);
  std::vector<Placement> out;
  for (auto& [h, s] : hosts) {
    for (int l = 0; l < s && static_cast<int>(out.size()) < count; ++l) {
      Placement p;
      p.netns = h.rfind("netns:", 0) == 0;
      p.host = p.netns ? h.substr(6) : h;
      p.rank = static_cast<int>(out.size());
      p.local_rank = l;
      out.push_back(p);
    }
  }
  return out;
}

// Servers take the slots --hosts offers beyond the workers', else they go
// round-robin over the hosts (on localhost: all here).
std::vector<Placement> place_servers(const LaunchOptions& o, int workers) {
  if (o.servers <= 0) return {};
  std::vector<Placement> slots;
  try {
    slots = place(o, workers + o.servers);
  } catch (const ConfigError&) {
    slots = place(o, workers);  // not enough slots: share the workers' hosts
  }
  std::vector<Placement> out;
  for (int s = 0; s < o.servers; ++s) {
    const size_t i = static_cast<size_t>(workers + s);
    Placement p = i < slots.size() ? slots[i] : slots[static_cast<size_t>(s) % slots.size()];
    p.rank = s;
    p.local_rank = s;
    out.push_back(p);
  }
  return out;
}

// The job file and its --set overrides in a `loom train JOB ...` command (no job: an empty path).
std::pair<std::string, std::vector<std::string>> job_of(const std::vector<std::string>& command) {
  std::string path;
  std::vector<std::string> overrides;
  for (size_t i = 0; i < command.size(); ++i) {
    const std::string& a = command[i];
    if (a.size() > 5 && a.substr(a.size() - 5) == ".toml") path = a;
    if (a == "--set" && i + 1 < command.size()) overrides.push_back(command[++i]);
  }
  return {path, overrides};
}

// For `loom train JOB`: where each of the model's parameters (keys, in order) lives.
void describe_keys(const LaunchOptions& o, const std::vector<std::string>& command) {
  const auto [job_path, overrides] = job_of(command);
  // The job's hosts: each --hosts entry without its slot count (none: this one).
  std::set<std::string> hosts;
  for (const std::string& h : o.hosts) hosts.insert(h.substr(0, h.rfind(':')));
  const int num_hosts = std::max<int>(1, static_cast<int>(hosts.size()));
  const ps::PlacementOptions po{.num_servers = o.servers, .replicas = o.replicas, .split_bound = o.split_bound,
                                .slice_elements = ps::slice_elements_for(num_hosts)};
  std::printf("keys: arrays of more than %lld elements are split over all %d servers; replicas %d; slices of at "
              "most %lld elements (%d host%s)\n",
              static_cast<long long>(o.split_bound), o.servers, o.replicas, static_cast<long long>(po.slice_elements),
              num_hosts, num_hosts == 1 ? "" : "s");
  if (job_path.empty()) return;
  train::Trainer trainer(io::load_job_file(job_path, overrides), {.log = nullptr});
  int64_t key = 0;
  for (const auto& [name, p] : trainer.model().named_parameters()) {
    std::printf("  %-20s %s\n", name.c_str(), ps::describe_key(key++, p.shape(), po).c_str());
  }
}

// For a pipeline job: which layers each stage runs, and each rank's actions of one step.
void describe_pipeline(const std::vector<std::string>& command) {
  const auto [path, overrides] = job_of(command);
  if (path.empty()) return;
  const io::JobConfig job = io::load_job_file(path, overrides);
  if (job.distributed.mode != io::Mode::Pipeline) return;
  train::Trainer trainer(job, {.log = nullptr});
  const parallel::PipelineStrategyOptions po = parallel::pipeline_options(job);
  const parallel::pipeline::Plan plan = parallel::pipeline::compile_schedule(
      {.kind = po.schedule, .stages = po.stages, .microbatches = po.microbatches, .virtual_stages = po.virtual_stages,
       .recompute = po.recompute});
  const parallel::pipeline::Layers layers = parallel::pipeline::pipeline_layers(trainer.model());
  if (po.placement.empty() && po.balance == parallel::StageBalance::Time) {
    std::printf("stages: cut at the first step, by each layer's measured time (balance = \"time\")\n%s",
                parallel::pipeline::describe(plan).c_str());
    return;
  }
  const auto chunks = po.placement.empty()
                          ? parallel::pipeline::balance(parallel::pipeline::parameter_costs(layers), plan.num_chunks())
                          : parallel::pipeline::cut_at(po.placement, static_cast<int64_t>(layers.size()));
  std::printf("pipeline: %d stages x %d data-parallel replicas, schedule %s, %d micro-batches, %d chunk%s a stage\n",
              po.stages, po.data_parallel, std::string(io::name(po.schedule)).c_str(), po.microbatches,
              po.virtual_stages, po.virtual_stages == 1 ? "" : "s");
  std::istringstream parts(parallel::pipeline::describe_parts(layers, chunks));  // a line a chunk ("part c: ...")
  std::string line;
  for (int c = 0; std::getline(parts, line); ++c) std::printf("stage %d, %s\n", plan.rank_of(c), line.c_str());
  const int first = plan.rank_of(0), last = plan.rank_of(plan.num_chunks() - 1);
  if (parallel::pipeline::tied_weight(trainer.model()).defined() && first != last) {
    std::printf("tied embedding: stages %d and %d both hold the token table and add its gradients every step\n",
                first, last);
  }
  std::printf("%s", parallel::pipeline::describe(plan).c_str());
}

int free_tcp_port(const std::string& host) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  LOOM_CHECK_T(IoError, fd >= 0, "launch: socket(): {}", std::strerror(errno));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = 0;
  ::inet_pton(AF_INET, host.c_str(), &addr.sin_addr);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    throw IoError(format("launch: cannot bind {}: {}", host, std::strerror(errno)));
  }
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

// The first IPv4 address inside network namespace `ns` (other than loopback).
std::string netns_address(const std::string& ns) {
  std::string cmd = "ip -n '" + ns + "' -4 -o addr show 2>/dev/null";
  std::FILE* p = ::popen(cmd.c_str(), "r");
  LOOM_CHECK_T(IoError, p != nullptr, "launch: cannot run ip: {}", std::strerror(errno));
  char line[512];
  std::string found;
  while (found.empty() && std::fgets(line, sizeof line, p)) {
    const char* inet = std::strstr(line, " inet ");
    if (!inet) continue;
    std::string addr(inet + 6);
    addr = addr.substr(0, addr.find('/'));
    if (addr.rfind("127.", 0) != 0) found = addr;
  }
  ::pclose(p);
  LOOM_CHECK_T(ConfigError, !found.empty(), "launch: network namespace '{}' has no IPv4 address (is it up?)", ns);
  return found;
}

std::string random_secret() {
  std::random_device rd;
  std::string s;
  for (int i = 0; i < 32; ++i) s += "0123456789abcdef"[rd() % 16];
  return s;
}

Child spawn(const std::string& label, const std::vector<std::string>& argv, const std::map<std::string, std::string>& env,
            const Placement* where) {
  int fds[2];
  LOOM_CHECK_T(IoError, ::pipe2(fds, O_CLOEXEC) == 0, "launch: pipe: {}", std::strerror(errno));
  std::vector<std::string> args;
  if (where && where->netns) args = {"ip", "netns", "exec", where->host};
  args.insert(args.end(), argv.begin(), argv.end());
  pid_t pid = ::fork();
  LOOM_CHECK_T(IoError, pid >= 0, "launch: fork: {}", std::strerror(errno));
  if (pid == 0) {
    ::dup2(fds[1], STDOUT_FILENO);
    ::dup2(fds[1], STDERR_FILENO);
    ::setpgid(0, 0);
    for (const auto& [k, v] : env) ::setenv(k.c_str(), v.c_str(), 1);
    std::vector<char*> cargs;
    for (auto& a : args) cargs.push_back(a.data());
    cargs.push_back(nullptr);
    ::execvp(cargs[0], cargs.data());
    std::fprintf(stderr, "loom launch: cannot run '%s': %s\n", cargs[0], std::strerror(errno));
    ::_exit(127);
  }
  ::close(fds[1]);
  Child c;
  c.label = label;
  c.pid = pid;
  c.out_fd = fds[0];
  return c;
}

// Copies complete lines from a child's pipe to our stdout, prefixed.
bool pump(Child& c) {
  char buf[65536];
  ssize_t n = ::read(c.out_fd, buf, sizeof buf);
  if (n <= 0) {
    if (!c.partial.empty()) std::printf("[%s] %s\n", c.label.c_str(), c.partial.c_str());
    c.partial.clear();
    ::close(c.out_fd);
    c.out_fd = -1;
    return false;
  }
  c.partial.append(buf, static_cast<size_t>(n));
  size_t start = 0, nl;
  while ((nl = c.partial.find_first_of("\n\r", start)) != std::string::npos) {
    if (nl > start) std::printf("[%s] %s\n", c.label.c_str(), c.partial.substr(start, nl - start).c_str());
    start = nl + 1;
  }
  c.partial.erase(0, start);
  std::fflush(stdout);
  return true;
}

// Signals the launcher got, and the last one (forwarded to the workers).
volatile sig_atomic_t g_signals = 0;
volatile sig_atomic_t g_last_signal = 0;
void on_signal(int signal) {
  g_last_signal = signal;
  g_signals = g_signals + 1;
}

std::string describe_exit(int status) {
  if (WIFEXITED(status)) return format("exited with status {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return format("was killed by signal {} ({})", WTERMSIG(status), strsignal(WTERMSIG(status)));
  return "stopped";
}

// --describe: where each process would run (and, for `loom train JOB`, where each key lives).
void print_plan(const LaunchOptions& o, const std::vector<Placement>& workers, const std::vector<Placement>& servers,
                const std::vector<std::string>& command) {
  std::printf("coordinator: %s\n", o.coordinator_bind.c_str());
  for (const auto& p : workers) {
    std::printf("worker %d: host %s%s, local rank %d\n", p.rank, p.netns ? "netns:" : "", p.host.c_str(), p.local_rank);
  }
  for (const auto& p : servers) {
    std::printf("server %d: host %s%s\n", p.rank, p.netns ? "netns:" : "", p.host.c_str());
  }
  if (o.servers > 0) describe_keys(o, command);
  describe_pipeline(command);
}

// Where the job's coordinator listens: with network namespaces as hosts, on
// the first one (`where`), else on this machine at coordinator_bind.
struct CoordinatorAddress {
  const Placement* where = nullptr;
  std::string address;  // host:port
};

CoordinatorAddress coordinator_address(const LaunchOptions& o, const std::vector<Placement>& workers) {
  const Placement* where = workers.front().netns ? &workers.front() : nullptr;
  const std::string host = where ? netns_address(where->host) : o.coordinator_bind;
  const int port = where ? 29400 + static_cast<int>(::getpid() % 500) : free_tcp_port(host);
  return {where, format("{}:{}", host, port)};
}

// The variables every process of the job gets.
std::map<std::string, std::string> common_env(const LaunchOptions& o, const std::string& coordinator) {
  const std::string secret = o.insecure ? std::string() : (o.secret.empty() ? random_secret() : o.secret);
  std::map<std::string, std::string> env{{"LOOM_COORDINATOR", coordinator},
                                         {"LOOM_WORLD_SIZE", std::to_string(o.workers)},
                                         {"LOOM_NUM_SERVERS", std::to_string(o.servers)},
                                         {"LOOM_JOB_SECRET", secret},
                                         {"LOOM_INSECURE", o.insecure ? "1" : "0"}};
  // Every process here shares this machine's cores: without a limit each one's
  // OpenMP pool takes all of them and the spinning threads slow everyone down
  // (3x measured with 2 workers + 2 servers on 2 cores). As torchrun does, give
  // each its share unless the user chose.
  if (std::getenv("OMP_NUM_THREADS") == nullptr) {
    const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    env["OMP_NUM_THREADS"] = std::to_string(std::max(1, cores / (o.workers + o.servers)));
  }
  return env;
}

// The coordinator, then the servers, then the workers (running `command`).
std::vector<Child> spawn_job(const LaunchOptions& o, const std::vector<Placement>& workers,
                             const std::vector<Placement>& servers, const std::vector<std::string>& command,
                             const CoordinatorAddress& coordinator) {
  const std::map<std::string, std::string> common = common_env(o, coordinator.address);
  std::vector<Child> children;
  std::vector<std::string> argv = {self_executable(), "coordinator", "--bind", coordinator.address,
                                   "--workers", std::to_string(o.workers), "--servers", std::to_string(o.servers),
                                   "--heartbeat-timeout", format("{}", o.heartbeat_timeout_s)};
  if (o.replicas > 0) argv.push_back("--tolerate-server-loss");
  if (o.insecure) argv.push_back("--insecure");
  children.push_back(spawn("coordinator", argv, common, coordinator.where));
  for (const auto& p : servers) {
    auto env = common;
    env["LOOM_ROLE"] = "server";
    env["LOOM_RANK"] = std::to_string(p.rank);
    env["LOOM_HOST"] = p.netns ? p.host : "localhost";
    const std::vector<std::string> server_argv = {self_executable(), "server", "--replicas",
                                                  std::to_string(o.replicas), "--split-bound",
                                                  std::to_string(o.split_bound)};
    children.push_back(spawn(format("server {}", p.rank), server_argv, env, &p));
    children.back().host = p.host;
  }
  for (const auto& p : workers) {
    auto env = common;
    env["LOOM_ROLE"] = "worker";
    env["LOOM_RANK"] = std::to_string(p.rank);
    env["LOOM_LOCAL_RANK"] = std::to_string(p.local_rank);
    env["LOOM_HOST"] = p.netns ? p.host : "localhost";
    children.push_back(spawn(format("worker {}", p.rank), command, env, &p));
    children.back().host = p.host;
  }
  return children;
}

// Watches a launched job until every child has exited: copies their output,
// and on the first failure (or once the workers are done) stops the others
// with SIGTERM, then SIGKILL after grace_ms. A signal to the launcher goes
// to the workers (preemption: they checkpoint and exit with
// core::kExitPreempted, which is no failure), and to every child again if
// they outlast stop_grace_ms.
class Supervisor {
 public:
  Supervisor(std::vector<Child>& children, const LaunchOptions& o) : children_(children), o_(o) {}

  // The exit status for `loom`: 0, the first failed child's, or
  // core::kExitPreempted when the workers stopped on a signal and saved.
  int run() {
    while (alive() > 0) {
      pump_ready();
      reap();
      forward_signals();
      stop_once_workers_are_done();
      if (stopping_ && Clock::now() > deadline_) kill_all(SIGKILL);
    }
    for (auto& c : children_) {
      while (c.out_fd >= 0 && pump(c)) {
      }
    }
    if (!failure_.empty()) {
      std::fflush(stdout);
      std::fprintf(stderr, "loom launch: %s; stopped the other processes\n", failure_.c_str());
    }
    return result_ == 0 && preempted_ ? core::kExitPreempted : result_;
  }

 private:
  using Clock = std::chrono::steady_clock;

  int alive() const {
    int n = 0;
    for (const auto& c : children_) n += !c.exited;
    return n;
  }

  void kill_all(int sig) {
    for (auto& c : children_) {
      if (!c.exited) ::kill(-c.pid, sig);
    }
  }

  static bool is_worker(const Child& c) { return c.label.rfind("worker", 0) == 0; }

  // Each signal the launcher got goes to the workers (a second one makes
  // them exit at once); servers and the coordinator stay for their
  // checkpoint. Workers past the grace period are stopped like a failure.
  void forward_signals() {
    const int seen = g_signals;
    if (seen > forwarded_) {
      forwarded_ = seen;
      for (auto& c : children_) {
        if (!c.exited && is_worker(c)) ::kill(-c.pid, g_last_signal);
      }
      if (stop_by_ == Clock::time_point::max()) stop_by_ = Clock::now() + std::chrono::milliseconds(o_.stop_grace_ms);
    }
    if (!stopping_ && Clock::now() > stop_by_) {
      stop(format("the workers did not stop within {} s of the signal", o_.stop_grace_ms / 1000), 128 + g_last_signal);
    }
  }

  // SIGTERM to everyone left; `failure` empty for a clean end.
  void stop(std::string failure, int result) {
    failure_ = std::move(failure);
    result_ = result;
    stopping_ = true;
    kill_all(SIGTERM);
    deadline_ = Clock::now() + std::chrono::milliseconds(o_.grace_ms);
  }

  // Copies what the children wrote (waits up to 100 ms for it).
  void pump_ready() {
    std::vector<pollfd> fds;
    std::vector<Child*> owners;
    for (auto& c : children_) {
      if (c.out_fd >= 0) {
        fds.push_back({c.out_fd, POLLIN, 0});
        owners.push_back(&c);
      }
    }
    ::poll(fds.data(), fds.size(), 100);
    for (size_t i = 0; i < fds.size(); ++i) {
      if (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) pump(*owners[i]);
    }
  }

  // Notes the children that exited; the first failure stops the job.
  void reap() {
    for (auto& c : children_) {
      if (c.exited) continue;
      int status = 0;
      if (::waitpid(c.pid, &status, WNOHANG) != c.pid) continue;
      c.exited = true;
      c.status = status;
      const bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
      const bool preempted = WIFEXITED(status) && WEXITSTATUS(status) == core::kExitPreempted && is_worker(c);
      preempted_ = preempted_ || preempted;
      if (ok || preempted || stopping_) continue;  // the coordinator leaves once the workers are done
      if (o_.replicas > 0 && c.label.rfind("server", 0) == 0) {
        // Replicated parameter servers: the backups take over its shards.
        std::fflush(stdout);
        std::fprintf(stderr, "loom launch: %s on host %s (pid %d) %s; its backups take over\n", c.label.c_str(),
                     c.host.c_str(), c.pid, describe_exit(status).c_str());
        continue;
      }
      const int result = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      stop(format("{} on host {} (pid {}) {}", c.label, c.host, c.pid, describe_exit(status)),
           result == 0 ? 1 : result);
    }
  }

  // When every worker is done, servers and the coordinator get a moment to
  // finish on their own (servers print their statistics and leave), then are told to go.
  void stop_once_workers_are_done() {
    bool workers_done = true;
    for (const auto& c : children_) workers_done = workers_done && (!is_worker(c) || c.exited);
    if (!workers_done || stopping_) return;
    const auto now = Clock::now();
    if (workers_done_at_ == Clock::time_point::max()) workers_done_at_ = now;
    if (now - workers_done_at_ > std::chrono::seconds(3)) stop("", 0);
  }

  std::vector<Child>& children_;
  const LaunchOptions& o_;
  bool stopping_ = false;
  bool preempted_ = false;  // a worker exited with core::kExitPreempted
  int forwarded_ = 0;       // signals passed on to the workers
  Clock::time_point stop_by_ = Clock::time_point::max();  // the first signal + stop_grace_ms
  Clock::time_point deadline_ = Clock::time_point::max();
  Clock::time_point workers_done_at_ = Clock::time_point::max();
  std::string failure_;
  int result_ = 0;
};

}  // namespace

std::string self_executable() {
  char buf[4096];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  LOOM_CHECK_T(IoError, n > 0, "cannot find the loom executable: {}", std::strerror(errno));
  return std::string(buf, static_cast<size_t>(n));
}

int launch(const LaunchOptions& o, const std::vector<std::string>& command) {
  LOOM_CHECK_T(ConfigError, o.workers >= 1, "launch: --workers must be >= 1, got {}", o.workers);
  LOOM_CHECK_T(ConfigError, o.servers >= 0, "launch: --servers must be >= 0, got {}", o.servers);
  LOOM_CHECK_T(ConfigError, !command.empty(), "launch: no command given (use: loom launch --workers N -- COMMAND)");
  std::vector<Placement> workers = place(o, o.workers);
  std::vector<Placement> servers = place_servers(o, o.workers);
  if (o.servers > 0) ps::check_placement({.num_servers = o.servers, .replicas = o.replicas, .split_bound = o.split_bound});
  if (o.describe) {
    print_plan(o, workers, servers, command);
    return 0;
  }
  const CoordinatorAddress coordinator = coordinator_address(o, workers);

  struct sigaction sa{};
  sa.sa_handler = on_signal;
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  ::sigaction(SIGUSR1, &sa, nullptr);

  std::vector<Child> children = spawn_job(o, workers, servers, command, coordinator);
  return Supervisor(children, o).run();
}

}  // namespace loom::cli
