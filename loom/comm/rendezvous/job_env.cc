#include "loom/comm/rendezvous/job_env.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <charconv>
#include <climits>
#include <cstdint>
#include <optional>

#include "loom/comm/rendezvous/coordinator.h"  // host_name
#include "loom/core/error.h"

extern char** environ;

namespace loom::comm {
namespace {

using Env = std::map<std::string, std::string>;

// Reads variables and remembers which ones the result came from. An empty
// value counts as unset (shells and schedulers export empty variables).
class Reader {
 public:
  Reader(const Env& env, JobEnv& out) : env_(env), out_(out) {}

  bool has(const char* name) const {
    auto it = env_.find(name);
    return it != env_.end() && !it->second.empty();
  }
  std::optional<std::string> take(const char* name) {
    if (!has(name)) return std::nullopt;
    out_.variables.emplace_back(name);
    return env_.at(name);
  }
  std::optional<int> take_int(const char* name, int min, int max) {
    auto text = take(name);
    if (!text) return std::nullopt;
    int value = 0;
    const char* end = text->data() + text->size();
    auto [ptr, ec] = std::from_chars(text->data(), end, value);
    if (ec != std::errc() || ptr != end) throw ConfigError(format("{}={} is not an integer", name, *text));
    if (value < min || value > max) {
      throw ConfigError(format("{}={} is out of range [{}, {}]", name, value, min, max));
    }
    return value;
  }

 private:
  const Env& env_;
  JobEnv& out_;
};

void require_together(const Reader& r, const char* a, const char* b) {
  if (r.has(a) != r.has(b)) {
    throw ConfigError(format("{} is set but {} is not; set both or neither", r.has(a) ? a : b, r.has(a) ? b : a));
  }
}

// "host:port", "[v6]:port", optionally with a "tcp://" prefix.
void parse_host_port(const char* name, const std::string& text, JobEnv& out) {
  std::string s = text;
  if (s.starts_with("tcp://")) s = s.substr(6);
  std::string host, port;
  if (s.starts_with("[")) {
    auto close = s.find(']');
    if (close == std::string::npos || close + 1 >= s.size() || s[close + 1] != ':') {
      throw ConfigError(format("{}={} is not [address]:port", name, text));
    }
    host = s.substr(1, close - 1);
    port = s.substr(close + 2);
  } else {
    auto colon = s.rfind(':');
    if (colon == std::string::npos) throw ConfigError(format("{}={} has no port (expected host:port)", name, text));
    host = s.substr(0, colon);
    port = s.substr(colon + 1);
    if (host.find(':') != std::string::npos) {
      throw ConfigError(format("{}={}: write an IPv6 address in brackets, [address]:port", name, text));
    }
  }
  if (host.empty()) throw ConfigError(format("{}={} has an empty host", name, text));
  for (char c : host) {
    if (c == '/' || c == ' ' || c == '\t' || c == '\n') {
      throw ConfigError(format("{}={} has an invalid host '{}'", name, text, host));
    }
  }
  int value = 0;
  auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (port.empty() || ec != std::errc() || ptr != port.data() + port.size() || value < 1 || value > 65535) {
    throw ConfigError(format("{}={} has an invalid port '{}' (expected 1..65535)", name, text, port));
  }
  out.coordinator_host = host;
  out.coordinator_port = value;
}

void set_port(const char* name, Reader& r, JobEnv& out) { out.coordinator_port = *r.take_int(name, 1, 65535); }

std::optional<std::string> loom_role(Reader& r) {
  auto role = r.take("LOOM_ROLE");
  if (role && *role != "worker" && *role != "server" && *role != "coordinator") {
    throw ConfigError(format("LOOM_ROLE={} is not one of worker, server, coordinator", *role));
  }
  return role;
}

void read_loom(Reader& r, JobEnv& out) {
  out.source = "LOOM";
  if (r.has("LOOM_RANK") && !r.has("LOOM_WORLD_SIZE")) {
    throw ConfigError("LOOM_RANK is set but LOOM_WORLD_SIZE is not");
  }
  out.role = loom_role(r).value_or("worker");
  out.world_size = *r.take_int("LOOM_WORLD_SIZE", 1, INT_MAX);
  out.num_servers = r.take_int("LOOM_NUM_SERVERS", 0, INT_MAX).value_or(0);
  auto rank = r.take_int("LOOM_RANK", -1, INT_MAX);
  if (out.role == "coordinator") {
    out.rank = -1;
  } else if (rank) {
    out.rank = *rank;
  } else if (out.world_size + out.num_servers == 1) {
    out.rank = 0;
  } else if (r.has("LOOM_COORDINATOR")) {
    out.rank = -1;  // the coordinator assigns one
  } else {
    throw ConfigError(
        format("LOOM_WORLD_SIZE={} is set but neither LOOM_RANK nor LOOM_COORDINATOR is", out.world_size));
  }
  if (out.role == "worker" && out.rank >= out.world_size) {
    throw ConfigError(format("LOOM_RANK={} is not below LOOM_WORLD_SIZE={}", out.rank, out.world_size));
  }
  if (out.role == "server" && out.num_servers == 0) {
    throw ConfigError("LOOM_ROLE=server but LOOM_NUM_SERVERS is 0 or unset");
  }
  if (out.role == "server" && out.rank >= out.num_servers) {
    throw ConfigError(
        format("LOOM_RANK={} is not below LOOM_NUM_SERVERS={} (LOOM_ROLE=server)", out.rank, out.num_servers));
  }
  out.local_rank = r.take_int("LOOM_LOCAL_RANK", 0, INT_MAX).value_or(-1);
}

// torchrun, Open MPI and Slurm: one numbering over all processes, split into
// workers and servers by LOOM_NUM_SERVERS.
void read_global(Reader& r, JobEnv& out, const char* source, const char* rank_name, const char* size_name,
                 const char* local_name) {
  out.source = source;
  require_together(r, rank_name, size_name);
  const int size = *r.take_int(size_name, 1, INT_MAX);
  const int rank = *r.take_int(rank_name, 0, INT_MAX);
  if (rank >= size) throw ConfigError(format("{}={} is not below {}={}", rank_name, rank, size_name, size));
  out.local_rank = r.take_int(local_name, 0, INT_MAX).value_or(-1);
  if (out.local_rank >= size) {
    throw ConfigError(format("{}={} is not below {}={}", local_name, out.local_rank, size_name, size));
  }
  out.num_servers = r.take_int("LOOM_NUM_SERVERS", 0, INT_MAX).value_or(0);
  if (out.num_servers >= size) {
    throw ConfigError(
        format("LOOM_NUM_SERVERS={} leaves no workers among {}={} processes", out.num_servers, size_name, size));
  }
  out.world_size = size - out.num_servers;
  out.role = rank < out.world_size ? "worker" : "server";
  out.rank = rank < out.world_size ? rank : rank - out.world_size;
  if (auto role = loom_role(r); role && *role != out.role) {
    throw ConfigError(format("LOOM_ROLE={} disagrees with {}={} and LOOM_NUM_SERVERS={}: that process is a {}", *role,
                             rank_name, rank, out.num_servers, out.role));
  }
}

void read_dmlc(Reader& r, JobEnv& out) {
  out.source = "MXNet";
  for (const char* name : {"DMLC_ROLE", "DMLC_NUM_WORKER", "DMLC_NUM_SERVER"}) {
    if (!r.has(name)) throw ConfigError(format("MXNet variables incomplete: {} is not set", name));
  }
  const std::string role = *r.take("DMLC_ROLE");
  if (role == "scheduler") {
    out.role = "coordinator";
  } else if (role == "worker" || role == "server") {
    out.role = role;
  } else {
    throw ConfigError(format("DMLC_ROLE={} is not one of worker, server, scheduler", role));
  }
  if (auto loom = loom_role(r); loom && *loom != out.role) {
    throw ConfigError(format("LOOM_ROLE={} disagrees with DMLC_ROLE={}", *loom, role));
  }
  out.world_size = *r.take_int("DMLC_NUM_WORKER", 1, INT_MAX);
  out.num_servers = *r.take_int("DMLC_NUM_SERVER", 0, INT_MAX);
  if (out.role == "server" && out.num_servers == 0) {
    throw ConfigError("DMLC_ROLE=server but DMLC_NUM_SERVER=0");
  }
  out.rank = out.role == "coordinator" ? -1 : (out.world_size + out.num_servers == 1 ? 0 : -1);
}

// FNV-1a, 64 bits: stable across processes, compilers and runs (std::hash is not).
uint64_t fnv1a(const std::string& text) {
  uint64_t h = 14695981039346656037ull;
  for (unsigned char c : text) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

// Open MPI with every rank on this host and no address given: loopback, and a
// port from the job's identity (see job_env.h). Leaves the address empty when
// the ranks span hosts or no identity variable is set.
void derive_open_mpi_coordinator(Reader& r, JobEnv& out) {
  const int size = out.world_size + out.num_servers;
  auto local_size = r.take_int("OMPI_COMM_WORLD_LOCAL_SIZE", 1, INT_MAX);
  if (!local_size || *local_size != size) return;
  for (const char* name : {"PMIX_NAMESPACE", "OMPI_MCA_ess_base_jobid", "OMPI_MCA_orte_hnp_uri"}) {
    if (auto id = r.take(name)) {
      out.coordinator_host = "127.0.0.1";
      out.coordinator_port = kDerivedPortBase + static_cast<int>(fnv1a(*id) % kDerivedPortCount);
      return;
    }
  }
}

void read_coordinator(Reader& r, JobEnv& out) {
  if (auto text = r.take("LOOM_COORDINATOR")) {
    parse_host_port("LOOM_COORDINATOR", *text, out);
    return;
  }
  if (out.source == "MXNet") {
    for (const char* name : {"DMLC_PS_ROOT_URI", "DMLC_PS_ROOT_PORT"}) {
      if (!r.has(name)) throw ConfigError(format("MXNet variables incomplete: {} is not set", name));
    }
    out.coordinator_host = *r.take("DMLC_PS_ROOT_URI");
    set_port("DMLC_PS_ROOT_PORT", r, out);
    return;
  }
  if (out.source == "torchrun" || out.source == "Open MPI") {
    require_together(r, "MASTER_ADDR", "MASTER_PORT");
    if (r.has("MASTER_ADDR")) {
      out.coordinator_host = *r.take("MASTER_ADDR");
      set_port("MASTER_PORT", r, out);
      // torchrun's static rendezvous (its default) keeps its own TCPStore
      // listening on MASTER_PORT in the agent; the coordinator takes the next port.
      if (out.source == "torchrun" && r.take("TORCHELASTIC_USE_AGENT_STORE") == "True") {
        out.coordinator_port = out.coordinator_port < 65535 ? out.coordinator_port + 1 : out.coordinator_port - 1;
      }
    } else if (out.source == "Open MPI") {
      derive_open_mpi_coordinator(r, out);
    }
    return;
  }
  if (out.source == "Slurm") {
    if (r.has("MASTER_ADDR")) {
      out.coordinator_host = *r.take("MASTER_ADDR");
    } else if (r.has("SLURM_LAUNCH_NODE_IPADDR")) {
      out.coordinator_host = *r.take("SLURM_LAUNCH_NODE_IPADDR");
    } else {
      return;
    }
    out.coordinator_port = r.take_int("MASTER_PORT", 1, 65535).value_or(kDefaultCoordinatorPort);
  }
}

const char* coordinator_variables(const std::string& source) {
  if (source == "torchrun") return "LOOM_COORDINATOR or MASTER_ADDR and MASTER_PORT";
  if (source == "Open MPI") {
    return "LOOM_COORDINATOR or MASTER_ADDR and MASTER_PORT (mpirun -x MASTER_ADDR=<rank 0's host> -x "
           "MASTER_PORT=<port>; on one host Loom picks them itself when OMPI_COMM_WORLD_LOCAL_SIZE equals "
           "OMPI_COMM_WORLD_SIZE and PMIX_NAMESPACE or OMPI_MCA_ess_base_jobid is set)";
  }
  if (source == "Slurm") return "LOOM_COORDINATOR, MASTER_ADDR or SLURM_LAUNCH_NODE_IPADDR";
  return "LOOM_COORDINATOR";
}

}  // namespace

JobEnv read_job_env(const std::map<std::string, std::string>& env) {
  JobEnv out;
  Reader r(env, out);
  if (r.has("LOOM_RANK") || r.has("LOOM_WORLD_SIZE")) {
    read_loom(r, out);
  } else if (r.has("RANK") || r.has("WORLD_SIZE")) {
    read_global(r, out, "torchrun", "RANK", "WORLD_SIZE", "LOCAL_RANK");
  } else if (r.has("OMPI_COMM_WORLD_RANK") || r.has("OMPI_COMM_WORLD_SIZE")) {
    read_global(r, out, "Open MPI", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK");
  } else if (r.has("SLURM_PROCID") || r.has("SLURM_NTASKS")) {
    read_global(r, out, "Slurm", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID");
  } else if (r.has("DMLC_ROLE") || r.has("DMLC_NUM_WORKER") || r.has("DMLC_NUM_SERVER")) {
    read_dmlc(r, out);
  } else {
    if (auto role = loom_role(r); role && *role != "worker") {
      throw ConfigError(format("LOOM_ROLE={} needs LOOM_WORLD_SIZE (and LOOM_RANK) to say the job's size", *role));
    }
  }
  if (r.has("LOOM_LOCAL_RANK") && out.source != "LOOM") {
    out.local_rank = *r.take_int("LOOM_LOCAL_RANK", 0, INT_MAX);  // LOOM_* comes first, field by field too
  }
  read_coordinator(r, out);
  const bool multi = out.world_size + out.num_servers > 1 || out.role == "coordinator";
  if (multi && !out.has_coordinator()) {
    throw ConfigError(format("{} job with {} workers and {} servers has no coordinator address: set {}", out.source,
                             out.world_size, out.num_servers, coordinator_variables(out.source)));
  }
  if (auto host = r.take("LOOM_HOST"); host && !host->empty()) {
    out.host = *host;
  } else {
    out.host = host_name();
  }
  if (auto secret = r.take("LOOM_JOB_SECRET")) {
    out.secret = *secret;
  } else if (auto file = r.take("LOOM_JOB_SECRET_FILE")) {
    out.secret = read_secret_file(*file);
  }
  if (auto insecure = r.take("LOOM_INSECURE")) {
    if (*insecure == "1" || *insecure == "true") {
      out.insecure = true;
    } else if (*insecure != "0" && *insecure != "false") {
      throw ConfigError(format("LOOM_INSECURE={} is not one of 0, 1, true, false", *insecure));
    }
  }
  return out;
}

JobEnv read_job_env() { return read_job_env(environment_map()); }

void check_job_security(const JobEnv& env) {
  if (env.insecure || !env.secret.empty()) return;
  std::string launcher = env.source, how;
  if (env.source == "Open MPI") {
    launcher = "Open MPI (mpirun)";
    how = "export LOOM_JOB_SECRET=<secret> and run `mpirun -x LOOM_JOB_SECRET ...` (mpirun passes a variable "
          "to ranks on other hosts only with -x)";
  } else if (env.source == "torchrun") {
    how = "export LOOM_JOB_SECRET=<secret> before torchrun (its workers inherit the environment; on several nodes "
          "the same value on each)";
  } else if (env.source == "Slurm") {
    launcher = "Slurm (srun)";
    how = "export LOOM_JOB_SECRET=<secret> in the batch script before srun (srun passes the environment on, as "
          "deploy/slurm/fashion-mnist.sbatch does)";
  } else if (env.source == "MXNet") {
    launcher = "MXNet's launcher (DMLC_ROLE)";
    how = "export LOOM_JOB_SECRET=<secret> for the scheduler, every server and every worker";
  } else {
    how = "set LOOM_JOB_SECRET=<secret> to the same value on every process (`loom launch` makes one itself)";
  }
  const std::string who = env.rank >= 0 ? format("{} {}", env.role, env.rank) : format("this {}", env.role);
  throw ConfigError(format("no job secret: {} was started by {} without LOOM_JOB_SECRET; {}; or point "
                           "LOOM_JOB_SECRET_FILE at a file every process can read, or set LOOM_INSECURE=1 for "
                           "plaintext on a trusted network",
                           who, launcher, how));
}

std::map<std::string, std::string> environment_map() {
  std::map<std::string, std::string> env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    std::string entry(*e);
    auto eq = entry.find('=');
    if (eq == std::string::npos) continue;
    env.emplace(entry.substr(0, eq), entry.substr(eq + 1));
  }
  return env;
}

std::string JobEnv::coordinator_endpoint() const {
  if (!has_coordinator()) return {};
  if (coordinator_host.find(':') != std::string::npos)
    return format("tcp://[{}]:{}", coordinator_host, coordinator_port);
  return format("tcp://{}:{}", coordinator_host, coordinator_port);
}

std::string JobEnv::describe() const {
  std::string s;
  if (role == "coordinator") {
    s = format("coordinator for {} workers", world_size);
  } else if (rank < 0) {
    s = format("{} (rank assigned by the coordinator) of {} workers", role, world_size);
  } else {
    s = format("{} {} of {}", role, rank, role == "server" ? num_servers : world_size);
  }
  if (local_rank >= 0) s += format(" (local rank {})", local_rank);
  if (num_servers > 0 && role != "server") s += format(", {} servers", num_servers);
  if (has_coordinator()) s += format(", coordinator {}", coordinator_endpoint());
  s += format(", from {}", source);
  if (!variables.empty()) {
    s += " (";
    for (size_t i = 0; i < variables.size(); ++i) s += (i ? ", " : "") + variables[i];
    s += ")";
  }
  return s;
}

std::string local_address_towards(const std::string& host, int port) {
  addrinfo hints{}, *res = nullptr;
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_DGRAM;
  if (::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res) != 0 || !res) return "127.0.0.1";
  std::string out = "127.0.0.1";
  int fd = ::socket(AF_INET, SOCK_DGRAM, 0);
  if (fd >= 0 && ::connect(fd, res->ai_addr, res->ai_addrlen) == 0) {
    sockaddr_in local{};
    socklen_t len = sizeof local;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) == 0) {
      char buf[INET_ADDRSTRLEN];
      if (::inet_ntop(AF_INET, &local.sin_addr, buf, sizeof buf)) out = buf;
    }
  }
  if (fd >= 0) ::close(fd);
  ::freeaddrinfo(res);
  return out;
}


}  // namespace loom::comm
