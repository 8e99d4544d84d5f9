// Helpers for the tests of the coordinator's state machines (membership,
// barriers, kv_table, liveness): reading an Outbox and forming a job without
// a socket.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

#include "loom/comm/rendezvous/coordinator_outbox.h"
#include "loom/comm/rendezvous/coordinator_protocol.h"
#include "loom/comm/rendezvous/membership.h"

namespace loom::comm::coordinator_state::testing {

using namespace std::chrono_literals;
using coordinator_protocol::Type;

inline const Clock::time_point t0 = Clock::time_point{} + std::chrono::hours(1);

// The replies of the outbox, which is emptied.
inline std::vector<Reply> take(Outbox& out) {
  std::vector<Reply> r = std::move(out.replies);
  out.replies.clear();
  return r;
}

// The one reply in the outbox (emptied), which must be an error.
inline coordinator_protocol::ErrorBody only_error(Outbox& out) {
  auto r = take(out);
  EXPECT_EQ(r.size(), 1u);
  if (r.size() != 1 || r[0].type != Type::Error) {
    ADD_FAILURE() << "expected one error";
    return {};
  }
  return coordinator_protocol::decode_error(r[0].body);
}

inline coordinator_protocol::RegisterBody asking(std::string role, std::string host, int rank = -1,
                                                 std::chrono::milliseconds timeout = 10s) {
  return {.role = std::move(role), .host = std::move(host), .rank = rank, .endpoint = "tcp://" + host,
          .timeout = timeout};
}

using Joiners = std::vector<std::pair<std::string, coordinator_protocol::RegisterBody>>;  // (routing id, request)

// Hello and register each in order; the outbox keeps the answers.
inline void join(MemberTable& members, const Joiners& who, Outbox& out, Clock::time_point now = t0) {
  uint64_t request = 1;
  for (const auto& [id, reg] : who) {
    members.hello(id, 100 + static_cast<int64_t>(request));
    members.register_process(id, request++, reg, now, out);
  }
}

}  // namespace loom::comm::coordinator_state::testing
