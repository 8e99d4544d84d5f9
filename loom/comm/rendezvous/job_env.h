// Where this process sits in a job, read from the environment the launcher set,
// so that `loom launch`, torchrun, mpirun, srun and MXNet's launchers all start
// Loom processes unchanged.
//
//   comm::JobEnv env = comm::read_job_env();           // from environ
//   if (env.role == "worker") { ... }                  // env.rank, env.world_size, env.coordinator_endpoint()
//   std::puts(env.describe().c_str());                 // says which launcher's variables it used
//
// Sources, tried in this order; the first whose rank variables are present
// gives role, rank, world size and local rank (the others are ignored):
//
//   LOOM       LOOM_ROLE (worker | server | coordinator; default worker),
//              LOOM_RANK (rank within the role), LOOM_WORLD_SIZE (number of
//              workers), LOOM_NUM_SERVERS (default 0), LOOM_LOCAL_RANK
//   torchrun   RANK, WORLD_SIZE, LOCAL_RANK
//   Open MPI   OMPI_COMM_WORLD_RANK, OMPI_COMM_WORLD_SIZE, OMPI_COMM_WORLD_LOCAL_RANK
//   Slurm      SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID
//   MXNet      DMLC_ROLE (worker | server | scheduler), DMLC_NUM_WORKER,
//              DMLC_NUM_SERVER, DMLC_PS_ROOT_URI, DMLC_PS_ROOT_PORT
//              (no rank: the coordinator assigns one, rank = -1)
//   none       a single process: worker 0 of 1
//
// torchrun, Open MPI and Slurm number all processes of a job together. When
// LOOM_NUM_SERVERS = S > 0 the last S of those ranks are parameter servers
// (server rank = global rank - number of workers) and the others are workers;
// LOOM_ROLE, if set as well, has to agree.
//
// The coordinator address is LOOM_COORDINATOR ("host:port", "[v6]:port" or
// "tcp://host:port") when set; otherwise the source's own: MASTER_ADDR +
// MASTER_PORT (torchrun; also read for Open MPI and Slurm), SLURM_LAUNCH_NODE_IPADDR
// (+ MASTER_PORT, else kDefaultCoordinatorPort) for Slurm, DMLC_PS_ROOT_URI +
// DMLC_PS_ROOT_PORT for MXNet. A job of more than one process needs one.
//
// torchrun's default (static) rendezvous keeps its agent's TCPStore on
// MASTER_PORT and says so with TORCHELASTIC_USE_AGENT_STORE=True; then the
// coordinator listens on MASTER_PORT + 1 (MASTER_PORT - 1 for 65535) on
// MASTER_ADDR. With --standalone or --rdzv_backend=c10d, MASTER_PORT is free.
//
// Open MPI on one host needs no address: when neither LOOM_COORDINATOR nor
// MASTER_ADDR/MASTER_PORT is set and OMPI_COMM_WORLD_LOCAL_SIZE equals
// OMPI_COMM_WORLD_SIZE (every rank on this host), the coordinator is
// 127.0.0.1 on a port derived from the job's identity, which every rank of
// one mpirun sees alike and two mpiruns do not: PMIX_NAMESPACE, else
// OMPI_MCA_ess_base_jobid, else OMPI_MCA_orte_hnp_uri (the first one set;
// Open MPI 4 sets all three, 5 the first). The port is
// kDerivedPortBase + FNV-1a(value) mod kDerivedPortCount, below Linux's
// ephemeral range; if something else holds it, rank 0 cannot bind and says
// so, and MASTER_PORT picks another. So `mpirun -np 4 -x LOOM_JOB_SECRET
// loom train job.toml` runs as it is; across hosts set MASTER_ADDR and
// MASTER_PORT (mpirun -x MASTER_ADDR=<rank 0's host> -x MASTER_PORT=29500).
//
// The job secret is LOOM_JOB_SECRET, else the contents of LOOM_JOB_SECRET_FILE
// (as security_from_env reads them); LOOM_INSECURE=1 asks for plaintext.
// check_job_security() refuses a job with neither, and says how to pass a
// secret through the launcher that started the process: export it, and with
// mpirun also name it (`mpirun -x LOOM_JOB_SECRET ...`: only -x variables
// reach ranks on other hosts); torchrun, srun and MXNet's launchers pass the
// environment on.
//
// Partial or inconsistent variables (a rank without a world size, rank >=
// world size, a port that is not a number, ...) throw ConfigError naming them.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "loom/comm/wire/security.h"

namespace loom::comm {

// Used for Slurm's launch node when no port is given anywhere.
inline constexpr int kDefaultCoordinatorPort = 29400;
// Ports derived for Open MPI on one host: [kDerivedPortBase, + kDerivedPortCount).
inline constexpr int kDerivedPortBase = 20000;
inline constexpr int kDerivedPortCount = 12000;

struct JobEnv {
  std::string source = "none";  // "LOOM", "torchrun", "Open MPI", "Slurm", "MXNet" or "none"
  std::string role = "worker";  // "worker", "server" or "coordinator"
  int rank = 0;                 // within the role; -1: the coordinator assigns it
  int world_size = 1;           // number of workers
  int num_servers = 0;
  int local_rank = -1;           // among the processes on this host; -1: not given
  std::string coordinator_host;  // empty: no coordinator (single process)
  int coordinator_port = 0;
  // What the launcher calls this host (LOOM_HOST: network namespaces share one
  // kernel host name), else comm::host_name(). Processes register under it.
  std::string host;
  std::string secret;                  // LOOM_JOB_SECRET or LOOM_JOB_SECRET_FILE's contents; never logged
  bool insecure = false;               // LOOM_INSECURE=1
  std::vector<std::string> variables;  // the variables this was read from, in reading order

  bool has_coordinator() const { return !coordinator_host.empty(); }
  SecurityOptions security() const { return {.secret = secret, .insecure = insecure}; }
  // "tcp://host:port" ("tcp://[v6]:port"); empty without a coordinator.
  std::string coordinator_endpoint() const;
  // One line for logs: "worker 3 of 8 (local rank 1), coordinator tcp://10.77.0.2:29400, from torchrun".
  std::string describe() const;
};

JobEnv read_job_env(const std::map<std::string, std::string>& env);
// Reads this process's environment.
JobEnv read_job_env();
// The local IPv4 address this host uses to reach `host` (no packet is sent);
// "127.0.0.1" if it cannot tell. What a process binds its data endpoint to.
std::string local_address_towards(const std::string& host, int port);
// This process's environment as a map.
std::map<std::string, std::string> environment_map();

// ConfigError unless `env` has a secret or asks for plaintext (LOOM_INSECURE=1).
// The message is one line naming the launcher env.source says started this
// process and how to pass a secret with it (e.g. `mpirun -x LOOM_JOB_SECRET`).
// Call it before anything connects.
void check_job_security(const JobEnv& env);

}  // namespace loom::comm
