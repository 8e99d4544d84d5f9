#include "loom/comm/rendezvous/job_env.h"

#include <gtest/gtest.h>

#include <cstdio>

#include "loom/comm/rendezvous/coordinator.h"
#include "loom/core/error.h"

namespace loom::comm {
namespace {

using Env = std::map<std::string, std::string>;

// Expects ConfigError whose message mentions every one of `names`.
void expect_config_error(const Env& env, std::initializer_list<const char*> names) {
  try {
    read_job_env(env);
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    for (const char* name : names) EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
  }
}

TEST(JobEnv, NothingSetIsOneLocalWorker) {
  JobEnv env = read_job_env(Env{{"PATH", "/bin"}, {"HOME", "/root"}});
  EXPECT_EQ(env.source, "none");
  EXPECT_EQ(env.role, "worker");
  EXPECT_EQ(env.rank, 0);
  EXPECT_EQ(env.world_size, 1);
  EXPECT_EQ(env.num_servers, 0);
  EXPECT_FALSE(env.has_coordinator());
  EXPECT_EQ(env.coordinator_endpoint(), "");
  EXPECT_TRUE(env.variables.empty());
}

// LOOM_HOST names the host (network namespaces share one kernel host name);
// JobEnv is the one place that reads it.
TEST(JobEnv, HostFromLauncherElseHostName) {
  JobEnv named = read_job_env(Env{{"LOOM_HOST", "ns1"}});
  EXPECT_EQ(named.host, "ns1");
  EXPECT_EQ(read_job_env(Env{}).host, comm::host_name());
  EXPECT_EQ(read_job_env(Env{{"LOOM_HOST", ""}}).host, comm::host_name());  // empty counts as unset
}

TEST(JobEnv, LoomVariables) {
  JobEnv env = read_job_env(Env{{"LOOM_RANK", "2"},
                                {"LOOM_WORLD_SIZE", "4"},
                                {"LOOM_LOCAL_RANK", "0"},
                                {"LOOM_NUM_SERVERS", "2"},
                                {"LOOM_COORDINATOR", "10.77.0.3:29401"},
                                {"LOOM_JOB_SECRET", "s3cret"}});
  EXPECT_EQ(env.source, "LOOM");
  EXPECT_EQ(env.role, "worker");
  EXPECT_EQ(env.rank, 2);
  EXPECT_EQ(env.world_size, 4);
  EXPECT_EQ(env.num_servers, 2);
  EXPECT_EQ(env.local_rank, 0);
  EXPECT_EQ(env.coordinator_host, "10.77.0.3");
  EXPECT_EQ(env.coordinator_port, 29401);
  EXPECT_EQ(env.coordinator_endpoint(), "tcp://10.77.0.3:29401");
  EXPECT_EQ(env.secret, "s3cret");
  EXPECT_FALSE(env.insecure);
  EXPECT_NE(env.describe().find("worker 2 of 4"), std::string::npos) << env.describe();
  EXPECT_NE(env.describe().find("LOOM_RANK"), std::string::npos) << env.describe();
}

TEST(JobEnv, LoomServerAndCoordinatorRoles) {
  JobEnv server = read_job_env(Env{{"LOOM_ROLE", "server"},
                                   {"LOOM_RANK", "1"},
                                   {"LOOM_WORLD_SIZE", "4"},
                                   {"LOOM_NUM_SERVERS", "2"},
                                   {"LOOM_COORDINATOR", "tcp://127.0.0.1:5000"},
                                   {"LOOM_INSECURE", "1"}});
  EXPECT_EQ(server.role, "server");
  EXPECT_EQ(server.rank, 1);
  EXPECT_TRUE(server.insecure);
  EXPECT_EQ(server.coordinator_endpoint(), "tcp://127.0.0.1:5000");

  JobEnv coord =
      read_job_env(Env{{"LOOM_ROLE", "coordinator"}, {"LOOM_WORLD_SIZE", "8"}, {"LOOM_COORDINATOR", "[::1]:7000"}});
  EXPECT_EQ(coord.role, "coordinator");
  EXPECT_EQ(coord.rank, -1);
  EXPECT_EQ(coord.coordinator_host, "::1");
  EXPECT_EQ(coord.coordinator_endpoint(), "tcp://[::1]:7000");

  // Without LOOM_RANK the coordinator assigns one.
  JobEnv unranked = read_job_env(Env{{"LOOM_WORLD_SIZE", "3"}, {"LOOM_COORDINATOR", "127.0.0.1:5000"}});
  EXPECT_EQ(unranked.rank, -1);
}

TEST(JobEnv, Torchrun) {
  JobEnv env = read_job_env(Env{
      {"RANK", "5"}, {"WORLD_SIZE", "8"}, {"LOCAL_RANK", "1"}, {"MASTER_ADDR", "10.77.0.1"}, {"MASTER_PORT", "29500"}});
  EXPECT_EQ(env.source, "torchrun");
  EXPECT_EQ(env.role, "worker");
  EXPECT_EQ(env.rank, 5);
  EXPECT_EQ(env.world_size, 8);
  EXPECT_EQ(env.local_rank, 1);
  EXPECT_EQ(env.coordinator_endpoint(), "tcp://10.77.0.1:29500");
}

TEST(JobEnv, GlobalRanksSplitIntoWorkersAndServers) {
  Env base{{"RANK", "6"},
           {"WORLD_SIZE", "8"},
           {"LOCAL_RANK", "2"},
           {"MASTER_ADDR", "10.77.0.1"},
           {"MASTER_PORT", "29500"},
           {"LOOM_NUM_SERVERS", "2"}};
  JobEnv env = read_job_env(base);
  EXPECT_EQ(env.role, "server");
  EXPECT_EQ(env.rank, 0);
  EXPECT_EQ(env.world_size, 6);
  EXPECT_EQ(env.num_servers, 2);

  base["RANK"] = "5";
  env = read_job_env(base);
  EXPECT_EQ(env.role, "worker");
  EXPECT_EQ(env.rank, 5);

  base["LOOM_ROLE"] = "server";  // disagrees: rank 5 is a worker
  expect_config_error(base, {"LOOM_ROLE", "RANK", "LOOM_NUM_SERVERS"});
  base.erase("LOOM_ROLE");
  base["LOOM_NUM_SERVERS"] = "8";
  expect_config_error(base, {"LOOM_NUM_SERVERS", "WORLD_SIZE"});
}

TEST(JobEnv, OpenMpi) {
  JobEnv env = read_job_env(Env{{"OMPI_COMM_WORLD_RANK", "3"},
                                {"OMPI_COMM_WORLD_SIZE", "4"},
                                {"OMPI_COMM_WORLD_LOCAL_RANK", "3"},
                                {"LOOM_COORDINATOR", "10.77.0.9:4000"}});
  EXPECT_EQ(env.source, "Open MPI");
  EXPECT_EQ(env.rank, 3);
  EXPECT_EQ(env.world_size, 4);
  EXPECT_EQ(env.local_rank, 3);
  EXPECT_EQ(env.coordinator_endpoint(), "tcp://10.77.0.9:4000");

  JobEnv via_master = read_job_env(Env{{"OMPI_COMM_WORLD_RANK", "0"},
                                       {"OMPI_COMM_WORLD_SIZE", "2"},
                                       {"MASTER_ADDR", "10.77.0.2"},
                                       {"MASTER_PORT", "4001"}});
  EXPECT_EQ(via_master.coordinator_endpoint(), "tcp://10.77.0.2:4001");
  EXPECT_EQ(via_master.local_rank, -1);
}

// mpirun on one host: no MASTER_ADDR/PORT needed. What Debian's Open MPI 4.1
// sets (`mpirun -np 2 env`): the same PMIX_NAMESPACE and OMPI_MCA_ess_base_jobid
// on every rank, a new one for every mpirun.
Env mpirun_rank(int rank, int size, int local_size) {
  return {{"OMPI_COMM_WORLD_RANK", std::to_string(rank)},
          {"OMPI_COMM_WORLD_SIZE", std::to_string(size)},
          {"OMPI_COMM_WORLD_LOCAL_RANK", std::to_string(rank % local_size)},
          {"OMPI_COMM_WORLD_LOCAL_SIZE", std::to_string(local_size)},
          {"PMIX_NAMESPACE", "1088618497"},
          {"OMPI_MCA_ess_base_jobid", "1088618497"},
          {"OMPI_MCA_orte_hnp_uri", "1088618496.0;tcp://192.0.2.2:35715;tcp6://[fd00::2]:53447"}};
}

TEST(JobEnv, OpenMpiOnOneHostDerivesTheCoordinator) {
  JobEnv r0 = read_job_env(mpirun_rank(0, 2, 2));
  JobEnv r1 = read_job_env(mpirun_rank(1, 2, 2));
  EXPECT_EQ(r0.coordinator_host, "127.0.0.1");
  // FNV-1a("1088618497") mod 12000 + 20000: pinned, every Loom version must agree.
  EXPECT_EQ(r0.coordinator_port, 21541);
  EXPECT_EQ(r1.coordinator_endpoint(), r0.coordinator_endpoint());
  EXPECT_GE(r0.coordinator_port, kDerivedPortBase);
  EXPECT_LT(r0.coordinator_port, kDerivedPortBase + kDerivedPortCount);
  EXPECT_NE(r0.describe().find("PMIX_NAMESPACE"), std::string::npos) << r0.describe();

  Env next = mpirun_rank(0, 2, 2);  // the next mpirun: another job id, another port
  next["PMIX_NAMESPACE"] = next["OMPI_MCA_ess_base_jobid"] = "1088618498";
  EXPECT_NE(read_job_env(next).coordinator_port, r0.coordinator_port);

  Env v4 = mpirun_rank(0, 2, 2);  // without PMIx: the job id, then the HNP URI
  v4.erase("PMIX_NAMESPACE");
  EXPECT_EQ(read_job_env(v4).coordinator_port, 21541);
  v4.erase("OMPI_MCA_ess_base_jobid");
  EXPECT_EQ(read_job_env(v4).coordinator_port, 28766);
  v4.erase("OMPI_MCA_orte_hnp_uri");
  expect_config_error(v4, {"MASTER_ADDR", "MASTER_PORT"});

  Env given = mpirun_rank(1, 2, 2);  // an address given wins
  given["MASTER_ADDR"] = "10.77.0.2";
  given["MASTER_PORT"] = "4001";
  EXPECT_EQ(read_job_env(given).coordinator_endpoint(), "tcp://10.77.0.2:4001");
  given.erase("MASTER_ADDR");
  given.erase("MASTER_PORT");
  given["LOOM_COORDINATOR"] = "10.77.0.3:4002";
  EXPECT_EQ(read_job_env(given).coordinator_endpoint(), "tcp://10.77.0.3:4002");
  given.erase("LOOM_COORDINATOR");
  given["MASTER_ADDR"] = "10.77.0.2";  // half an address is still an error
  expect_config_error(given, {"MASTER_ADDR", "MASTER_PORT"});

  // Parameter servers among the ranks: all still on this host.
  Env ps = mpirun_rank(3, 4, 4);
  ps["LOOM_NUM_SERVERS"] = "1";
  JobEnv server = read_job_env(ps);
  EXPECT_EQ(server.role, "server");
  EXPECT_EQ(server.coordinator_endpoint(), r0.coordinator_endpoint());
}

TEST(JobEnv, OpenMpiAcrossHostsNeedsAnAddress) {
  // 4 ranks, 2 per host: loopback would not reach rank 0.
  expect_config_error(mpirun_rank(2, 4, 2), {"MASTER_ADDR", "MASTER_PORT", "mpirun -x"});
  Env no_local_size = mpirun_rank(0, 2, 2);
  no_local_size.erase("OMPI_COMM_WORLD_LOCAL_SIZE");
  expect_config_error(no_local_size, {"MASTER_ADDR"});
}

// Without a secret, the refusal says how to pass one with the launcher that
// started the process (issue 10: mpirun ranks crashed silently instead).
std::string security_error(const Env& env) {
  try {
    check_job_security(read_job_env(env));
  } catch (const ConfigError& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected ConfigError";
  return {};
}

TEST(JobEnv, MissingSecretNamesTheLauncher) {
  const std::string mpi = security_error(mpirun_rank(1, 2, 2));
  for (const char* part : {"no job secret", "worker 1", "Open MPI (mpirun)", "-x LOOM_JOB_SECRET", "LOOM_JOB_SECRET_FILE",
                           "LOOM_INSECURE=1"}) {
    EXPECT_NE(mpi.find(part), std::string::npos) << part << " in: " << mpi;
  }
  EXPECT_EQ(mpi.find('\n'), std::string::npos) << "one line: " << mpi;

  const std::string torch =
      security_error({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "1"}});
  EXPECT_NE(torch.find("torchrun"), std::string::npos) << torch;
  EXPECT_EQ(torch.find("mpirun"), std::string::npos) << torch;
  const std::string slurm = security_error({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "2"}, {"MASTER_ADDR", "h"}});
  EXPECT_NE(slurm.find("srun"), std::string::npos) << slurm;
  const std::string mxnet = security_error({{"DMLC_ROLE", "server"},
                                            {"DMLC_NUM_WORKER", "2"},
                                            {"DMLC_NUM_SERVER", "1"},
                                            {"DMLC_PS_ROOT_URI", "h"},
                                            {"DMLC_PS_ROOT_PORT", "1"}});
  EXPECT_NE(mxnet.find("MXNet"), std::string::npos) << mxnet;
  EXPECT_NE(mxnet.find("scheduler"), std::string::npos) << mxnet;

  Env with_secret = mpirun_rank(1, 2, 2);
  with_secret["LOOM_JOB_SECRET"] = "s";
  EXPECT_NO_THROW(check_job_security(read_job_env(with_secret)));
  Env insecure = mpirun_rank(1, 2, 2);
  insecure["LOOM_INSECURE"] = "1";
  EXPECT_NO_THROW(check_job_security(read_job_env(insecure)));
}

// What `torchrun --nproc_per_node 2` (torch 1.13, static rendezvous) gives
// its workers: its agent's store holds MASTER_PORT.
TEST(JobEnv, TorchrunAgentStoreKeepsMasterPort) {
  Env env{{"RANK", "1"},        {"WORLD_SIZE", "2"},           {"LOCAL_RANK", "1"},
          {"MASTER_ADDR", "127.0.0.1"}, {"MASTER_PORT", "29500"}, {"TORCHELASTIC_USE_AGENT_STORE", "True"}};
  EXPECT_EQ(read_job_env(env).coordinator_endpoint(), "tcp://127.0.0.1:29501");
  env["MASTER_PORT"] = "65535";
  EXPECT_EQ(read_job_env(env).coordinator_port, 65534);
  env["TORCHELASTIC_USE_AGENT_STORE"] = "False";  // --standalone / c10d: the port is free
  EXPECT_EQ(read_job_env(env).coordinator_port, 65535);
  env.erase("MASTER_ADDR");
  env.erase("MASTER_PORT");
  env["LOOM_COORDINATOR"] = "10.0.0.1:7000";  // an explicit address is taken as it is
  env["TORCHELASTIC_USE_AGENT_STORE"] = "True";
  EXPECT_EQ(read_job_env(env).coordinator_port, 7000);
}

TEST(JobEnv, Slurm) {
  JobEnv env = read_job_env(Env{{"SLURM_PROCID", "7"},
                                {"SLURM_NTASKS", "16"},
                                {"SLURM_LOCALID", "3"},
                                {"SLURM_LAUNCH_NODE_IPADDR", "10.77.0.5"}});
  EXPECT_EQ(env.source, "Slurm");
  EXPECT_EQ(env.rank, 7);
  EXPECT_EQ(env.world_size, 16);
  EXPECT_EQ(env.local_rank, 3);
  EXPECT_EQ(env.coordinator_host, "10.77.0.5");
  EXPECT_EQ(env.coordinator_port, kDefaultCoordinatorPort);

  JobEnv with_master = read_job_env(Env{{"SLURM_PROCID", "0"},
                                        {"SLURM_NTASKS", "2"},
                                        {"SLURM_LAUNCH_NODE_IPADDR", "10.77.0.5"},
                                        {"MASTER_ADDR", "10.77.0.6"},
                                        {"MASTER_PORT", "1234"}});
  EXPECT_EQ(with_master.coordinator_endpoint(), "tcp://10.77.0.6:1234");
}

TEST(JobEnv, Mxnet) {
  Env base{{"DMLC_ROLE", "worker"},
           {"DMLC_PS_ROOT_URI", "10.77.0.4"},
           {"DMLC_PS_ROOT_PORT", "9091"},
           {"DMLC_NUM_WORKER", "4"},
           {"DMLC_NUM_SERVER", "2"}};
  JobEnv env = read_job_env(base);
  EXPECT_EQ(env.source, "MXNet");
  EXPECT_EQ(env.role, "worker");
  EXPECT_EQ(env.rank, -1);  // ps-lite assigns ranks at rendezvous; so does the coordinator
  EXPECT_EQ(env.world_size, 4);
  EXPECT_EQ(env.num_servers, 2);
  EXPECT_EQ(env.coordinator_endpoint(), "tcp://10.77.0.4:9091");

  base["DMLC_ROLE"] = "scheduler";
  EXPECT_EQ(read_job_env(base).role, "coordinator");
  base["DMLC_ROLE"] = "server";
  EXPECT_EQ(read_job_env(base).role, "server");
  base["DMLC_ROLE"] = "boss";
  expect_config_error(base, {"DMLC_ROLE", "boss"});
  base["DMLC_ROLE"] = "worker";
  base.erase("DMLC_PS_ROOT_PORT");
  expect_config_error(base, {"DMLC_PS_ROOT_PORT"});
  base["LOOM_COORDINATOR"] = "10.77.0.8:9000";  // LOOM_COORDINATOR comes first
  EXPECT_EQ(read_job_env(base).coordinator_endpoint(), "tcp://10.77.0.8:9000");
  base.erase("DMLC_NUM_SERVER");
  expect_config_error(base, {"DMLC_NUM_SERVER"});
}

TEST(JobEnv, Precedence) {
  Env env{{"LOOM_RANK", "1"},
          {"LOOM_WORLD_SIZE", "2"},
          {"LOOM_COORDINATOR", "127.0.0.1:7000"},
          {"RANK", "9"},
          {"WORLD_SIZE", "10"},
          {"MASTER_ADDR", "10.77.0.1"},
          {"MASTER_PORT", "29500"},
          {"OMPI_COMM_WORLD_RANK", "3"},
          {"OMPI_COMM_WORLD_SIZE", "4"},
          {"SLURM_PROCID", "5"},
          {"SLURM_NTASKS", "6"},
          {"DMLC_ROLE", "server"}};
  JobEnv a = read_job_env(env);
  EXPECT_EQ(a.source, "LOOM");
  EXPECT_EQ(a.rank, 1);
  EXPECT_EQ(a.coordinator_endpoint(), "tcp://127.0.0.1:7000");

  env.erase("LOOM_RANK");
  env.erase("LOOM_WORLD_SIZE");
  JobEnv b = read_job_env(env);
  EXPECT_EQ(b.source, "torchrun");
  EXPECT_EQ(b.rank, 9);
  EXPECT_EQ(b.coordinator_endpoint(), "tcp://127.0.0.1:7000");  // LOOM_COORDINATOR before MASTER_*

  env.erase("RANK");
  env.erase("WORLD_SIZE");
  EXPECT_EQ(read_job_env(env).source, "Open MPI");
  env.erase("OMPI_COMM_WORLD_RANK");
  env.erase("OMPI_COMM_WORLD_SIZE");
  JobEnv d = read_job_env(env);
  EXPECT_EQ(d.source, "Slurm");
  EXPECT_EQ(d.rank, 5);

  // LOOM_LOCAL_RANK overrides the launcher's local rank.
  env["SLURM_LOCALID"] = "1";
  env["LOOM_LOCAL_RANK"] = "4";
  EXPECT_EQ(read_job_env(env).local_rank, 4);

  // Empty variables count as unset.
  JobEnv e = read_job_env(Env{{"RANK", ""}, {"WORLD_SIZE", ""}});
  EXPECT_EQ(e.source, "none");
}

TEST(JobEnv, PartialAndInconsistentVariablesAreNamed) {
  expect_config_error({{"LOOM_RANK", "0"}}, {"LOOM_RANK", "LOOM_WORLD_SIZE"});
  expect_config_error({{"LOOM_RANK", "4"}, {"LOOM_WORLD_SIZE", "4"}, {"LOOM_COORDINATOR", "h:1"}},
                      {"LOOM_RANK=4", "LOOM_WORLD_SIZE=4"});
  expect_config_error({{"LOOM_WORLD_SIZE", "4"}}, {"LOOM_WORLD_SIZE", "LOOM_RANK", "LOOM_COORDINATOR"});
  expect_config_error({{"LOOM_RANK", "0"}, {"LOOM_WORLD_SIZE", "2"}}, {"LOOM_COORDINATOR"});
  expect_config_error({{"LOOM_RANK", "x"}, {"LOOM_WORLD_SIZE", "2"}}, {"LOOM_RANK=x", "not an integer"});
  expect_config_error({{"LOOM_RANK", "1"}, {"LOOM_WORLD_SIZE", "2"}, {"LOOM_COORDINATOR", "host"}},
                      {"LOOM_COORDINATOR", "port"});
  expect_config_error({{"LOOM_RANK", "1"}, {"LOOM_WORLD_SIZE", "2"}, {"LOOM_COORDINATOR", "host:99999"}},
                      {"LOOM_COORDINATOR", "99999"});
  expect_config_error({{"LOOM_RANK", "1"}, {"LOOM_WORLD_SIZE", "2"}, {"LOOM_COORDINATOR", "::1:80"}},
                      {"LOOM_COORDINATOR", "brackets"});
  expect_config_error(
      {{"LOOM_ROLE", "server"}, {"LOOM_RANK", "0"}, {"LOOM_WORLD_SIZE", "2"}, {"LOOM_COORDINATOR", "h:1"}},
      {"LOOM_NUM_SERVERS"});
  expect_config_error({{"LOOM_ROLE", "boss"}, {"LOOM_RANK", "0"}, {"LOOM_WORLD_SIZE", "1"}}, {"LOOM_ROLE=boss"});
  expect_config_error({{"RANK", "0"}}, {"RANK", "WORLD_SIZE"});
  expect_config_error({{"WORLD_SIZE", "2"}}, {"RANK", "WORLD_SIZE"});
  expect_config_error({{"RANK", "2"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "a"}, {"MASTER_PORT", "1"}},
                      {"RANK=2", "WORLD_SIZE=2"});
  expect_config_error({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "10.77.0.1"}},
                      {"MASTER_ADDR", "MASTER_PORT"});
  expect_config_error({{"RANK", "0"}, {"WORLD_SIZE", "2"}}, {"LOOM_COORDINATOR", "MASTER_ADDR"});
  expect_config_error({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "a"}, {"MASTER_PORT", "http"}},
                      {"MASTER_PORT=http"});
  expect_config_error({{"OMPI_COMM_WORLD_SIZE", "2"}}, {"OMPI_COMM_WORLD_RANK"});
  expect_config_error({{"OMPI_COMM_WORLD_RANK", "0"},
                       {"OMPI_COMM_WORLD_SIZE", "2"},
                       {"OMPI_COMM_WORLD_LOCAL_RANK", "-1"},
                       {"LOOM_COORDINATOR", "h:1"}},
                      {"OMPI_COMM_WORLD_LOCAL_RANK"});
  expect_config_error({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "2"}}, {"SLURM_LAUNCH_NODE_IPADDR"});
  expect_config_error({{"SLURM_PROCID", "1"}}, {"SLURM_NTASKS"});
  expect_config_error({{"DMLC_NUM_WORKER", "2"}}, {"DMLC_ROLE"});
  expect_config_error({{"LOOM_ROLE", "server"}}, {"LOOM_ROLE=server", "LOOM_WORLD_SIZE"});
  expect_config_error({{"LOOM_INSECURE", "maybe"}}, {"LOOM_INSECURE=maybe"});
}

TEST(JobEnv, SecretFromAFile) {
  const std::string path = ::testing::TempDir() + "/loom_job_env_secret";
  {
    std::FILE* f = std::fopen(path.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fputs("from-file\n", f);
    std::fclose(f);
  }
  JobEnv env = read_job_env(Env{{"LOOM_JOB_SECRET_FILE", path}});
  EXPECT_EQ(env.secret, "from-file");
  EXPECT_EQ(env.security().secret, "from-file");
  EXPECT_FALSE(env.security().insecure);
  EXPECT_EQ(read_job_env(Env{{"LOOM_JOB_SECRET_FILE", path}, {"LOOM_JOB_SECRET", "direct"}}).secret, "direct");
  EXPECT_EQ(env.describe().find("from-file"), std::string::npos);  // never printed
  std::remove(path.c_str());
  EXPECT_THROW(read_job_env(Env{{"LOOM_JOB_SECRET_FILE", path}}), IoError);
}

TEST(JobEnv, ReadsTheProcessEnvironment) {
  ::setenv("LOOM_JOB_ENV_TEST_PROBE", "x=y", 1);
  auto env = environment_map();
  EXPECT_EQ(env.at("LOOM_JOB_ENV_TEST_PROBE"), "x=y");
  ::unsetenv("LOOM_JOB_ENV_TEST_PROBE");
}

}  // namespace
}  // namespace loom::comm
