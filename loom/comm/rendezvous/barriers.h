// Internal to loom_comm (coordinator_server.cc): named barriers over the
// members of the job (membership.h), for everyone (scope "") or for one role.
// A barrier completes, and every waiter is answered Done, when each member of
// its scope has arrived; one whose scope has a member that left or was lost
// fails at once (kPeerLost), and a waiter past its own deadline is answered
// kTimedOut naming who has not arrived. No socket and no clock: the caller
// passes the time, answers go to an Outbox.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "loom/comm/rendezvous/coordinator_outbox.h"
#include "loom/comm/rendezvous/membership.h"

namespace loom::comm::coordinator_state {

class Barriers {
 public:
  // Process `id` arrives at barrier `b` (refused unless it is a member of
  // b.scope); a retry from the same process replaces its earlier arrival.
  void arrive(const std::string& id, uint64_t request, const coordinator_protocol::BarrierBody& b,
              Clock::time_point now, const MemberTable& members, Outbox& out);
  // Every barrier `role` takes part in fails (kPeerLost, `why`): a member of it left or was lost.
  void fail_role(const std::string& role, const std::string& why, Outbox& out);
  // Waiters past their deadline are answered kTimedOut; a barrier left without waiters is dropped.
  void expire(Clock::time_point now, const MemberTable& members, Outbox& out);

  // Barriers with at least one waiter.
  size_t pending() const { return barriers_.size(); }

 private:
  struct Waiter {
    std::string id;
    uint64_t request = 0;
    Clock::time_point deadline;
  };
  struct Pending {
    std::string scope;
    std::vector<Waiter> waiters;  // one per arrived process
  };

  // "worker 1 on host a, worker 2 on host b" (at most 8, then "and N more").
  static std::string missing_from(const Pending& b, const MemberTable& members);

  std::map<std::string, Pending> barriers_;  // by name
};

}  // namespace loom::comm::coordinator_state
