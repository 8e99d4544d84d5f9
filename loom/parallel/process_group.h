// Joining a distributed job: read the launcher's variables, meet the others at
// the coordinator, open the data transport, and turn a lost peer into
// PeerLostError on every rank.
//
//   // given: Tensor t
//   auto pg = parallel::ProcessGroup::join({.timeout = 60s});   // LOOM_*, torchrun, Open MPI, Slurm, MXNet
//   comm::Communicator& comm = pg->comm();                       // rank, size, topology
//   comm::allreduce(comm, t);
//   pg->finish();                                                // a clean goodbye (others are not told "lost")
//
// With a foreign launcher (torchrun, Open MPI, Slurm, Kubernetes) nobody has
// started a coordinator: rank 0 starts one in-process at the advertised
// address (MASTER_ADDR:MASTER_PORT), as torchrun's rank 0 hosts its store.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "loom/comm/collectives/communicator.h"
#include "loom/comm/rendezvous/coordinator.h"
#include "loom/comm/rendezvous/job_env.h"

namespace loom::parallel {

struct ProcessGroupOptions {
  std::chrono::milliseconds timeout{120000};             // rendezvous
  std::chrono::milliseconds collective_timeout{60000};   // each collective call
  std::chrono::milliseconds heartbeat_timeout{10000};    // a silent peer is lost after this
  std::string transport = "auto";                        // auto | zmq | shm (shm: all ranks on one host)
};

class ProcessGroup {
 public:
  // Joins the job the environment describes (see comm::read_job_env). Throws
  // ConfigError when the variables are missing or inconsistent or there is no
  // job secret (comm::check_job_security), TimeoutError / AuthError /
  // PeerLostError when the rendezvous fails. A failed join leaves nothing
  // behind and tells the others nothing but that this process is gone.
  static std::unique_ptr<ProcessGroup> join(const ProcessGroupOptions& options = {});
  static std::unique_ptr<ProcessGroup> join(const comm::JobEnv& env, const ProcessGroupOptions& options);
  // Without finish(): the peers are told this process ended on an error
  // (PeerLostError on their side), nothing waits for them.
  ~ProcessGroup();

  comm::Communicator& comm() { return comm_; }
  const comm::Membership& membership() const { return membership_; }
  const comm::JobEnv& env() const { return env_; }
  int rank() const { return comm_.rank; }
  int size() const { return comm_.size; }
  std::string host() const;

  // Leaves cleanly (after a final barrier): the coordinator does not report
  // this process lost. Call it when the work succeeded; the destructor does
  // not (an error unwinding must not wait for peers at a barrier).
  void finish();

 private:
  ProcessGroup() = default;
  comm::JobEnv env_;
  std::unique_ptr<comm::Coordinator> coordinator_;  // rank 0 under a foreign launcher
  std::shared_ptr<comm::CoordinatorClient> client_;
  comm::Membership membership_;
  comm::Communicator comm_;
  bool joined_ = false;    // the rendezvous completed: finish() has someone to say goodbye to
  bool finished_ = false;
};

}  // namespace loom::parallel
