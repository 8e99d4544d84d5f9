// Internal to loom_comm (coordinator_server.cc): the coordinator's key-value
// store (bootstrap values: rendezvous_keys.h names them). A get of a key not
// set yet waits until a set answers it or its deadline passes (kTimedOut); a
// set overwrites; a proposal sets only a key not set yet (the first wins); a
// try_get never waits. No socket and no clock: the caller passes the time,
// answers go to an Outbox.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "loom/comm/rendezvous/coordinator_outbox.h"
#include "loom/comm/transport/transport.h"  // Clock

namespace loom::comm::coordinator_state {

class KvTable {
 public:
  // Stores the value and answers (Value) every get waiting for the key. The setter's Done is the caller's.
  void set(std::string key, std::string value, Outbox& out);
  // Answers at once if the key is set; otherwise the get waits until `deadline`.
  void get(const std::string& id, uint64_t request, std::string key, Clock::time_point deadline, Outbox& out);
  // Sets the key unless it is set (then answers its waiting gets, as set does)
  // and answers the proposer (Value) with the value the key holds afterwards.
  void propose(const std::string& id, uint64_t request, std::string key, std::string value, Outbox& out);
  // Answers at once (MaybeValue): the value, or none if the key is not set.
  void try_get(const std::string& id, uint64_t request, const std::string& key, Outbox& out);
  // Drops the waiting gets of a process that is gone (unanswered).
  void drop_waiters_of(const std::string& id);
  // Gets past their deadline are answered kTimedOut.
  void expire(Clock::time_point now, Outbox& out);

  size_t waiting() const { return gets_.size(); }

 private:
  struct Waiter {
    std::string id;
    uint64_t request = 0;
    Clock::time_point deadline;
  };

  std::map<std::string, std::string> values_;
  std::multimap<std::string, Waiter> gets_;  // by key, in arrival order
};

}  // namespace loom::comm::coordinator_state
