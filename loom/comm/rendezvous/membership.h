// Internal to loom_comm (coordinator_server.cc): the job's processes by
// routing id, from hello to member to left or lost. Registration with its
// checks and deadline; ranks given out once the last expected process has
// registered (asked-for ranks first, the rest by host, then arrival, so one
// host's ranks are contiguous); the list of processes lost. No socket and no
// clock: the caller passes the time, answers go to an Outbox.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "loom/comm/rendezvous/coordinator.h"
#include "loom/comm/rendezvous/coordinator_outbox.h"
#include "loom/comm/transport/transport.h"  // Clock

namespace loom::comm::coordinator_state {

enum class ProcessState { Connected, Registering, Member, Left, Lost };

struct Process {
  ProcessState state = ProcessState::Connected;
  std::string role, host, endpoint;
  int64_t pid = 0;
  int preferred = -1;  // the rank asked for, -1 for any
  int rank = -1;
  uint64_t order = 0;  // of arrival at registration
  uint64_t register_request = 0;
  Clock::time_point register_deadline;

  // Connected, registering or a member: its silence makes it lost (or forgotten).
  bool watched() const {
    return state == ProcessState::Connected || state == ProcessState::Registering || state == ProcessState::Member;
  }
};

class MemberTable {
 public:
  MemberTable(int num_workers, int num_servers) : num_workers_(num_workers), num_servers_(num_servers) {}

  // Hello: a new client is Connected; one seen before keeps its state. False
  // (and nothing changes) for a process declared lost.
  bool hello(const std::string& id, int64_t pid);
  Process* find(const std::string& id);
  const Process* find(const std::string& id) const;

  // Register: refused (kRefused) for an unknown role, a second registration,
  // a formed job, a role the job has none of, a rank out of range or taken,
  // or a full role; otherwise it waits until `now + reg.timeout`. The last
  // expected one forms the job: every registered process is answered.
  void register_process(const std::string& id, uint64_t request, coordinator_protocol::RegisterBody reg,
                        Clock::time_point now, Outbox& out);
  // Registrations past their deadline are answered kTimedOut with who has
  // registered so far; their slots are free again.
  void expire_registrations(Clock::time_point now, Outbox& out);

  // A member that left cleanly.
  void mark_left(const std::string& id);
  // Marks a member lost, records it and sends a Lost notice to every other
  // watched process.
  LostPeer declare_lost(const std::string& id, const std::string& reason, Outbox& out);
  // Forgets a process that is not part of the job (its slot is free again).
  void forget(const std::string& id) { procs_.erase(id); }

  int expected(const std::string& role) const { return role == "worker" ? num_workers_ : num_servers_; }
  const std::map<std::string, Process>& processes() const { return procs_; }
  bool formed() const { return formed_; }
  const std::vector<LostPeer>& lost() const { return lost_; }
  // Formed, and every member left or was lost.
  bool finished() const;

 private:
  void try_form(Outbox& out);

  int num_workers_, num_servers_;
  std::map<std::string, Process> procs_;  // by routing id
  uint64_t next_order_ = 0;
  bool formed_ = false;
  std::vector<LostPeer> lost_;
};

}  // namespace loom::comm::coordinator_state
