// Internal to loom_comm: the answers of the coordinator's state machines
// (membership.h, barriers.h, kv_table.h), collected instead of sent, so the
// machines need no socket and a test reads what they answered.
// coordinator_server.cc sends each one to its routing id, in order.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "loom/comm/rendezvous/coordinator_protocol.h"

namespace loom::comm::coordinator_state {

struct Reply {
  std::string to;  // the client's routing id
  coordinator_protocol::Type type;
  uint64_t request = 0;  // 0 for a notice nobody asked for (Lost)
  std::string body;
};

struct Outbox {
  std::vector<Reply> replies;

  void reply(const std::string& to, coordinator_protocol::Type type, uint64_t request, std::string body = {}) {
    replies.push_back({to, type, request, std::move(body)});
  }
  // The message is cut to what the protocol allows.
  void error(const std::string& to, uint64_t request, coordinator_protocol::ErrorCode code,
             const std::string& message) {
    using namespace coordinator_protocol;
    reply(to, Type::Error, request, encode(ErrorBody{.code = code, .message = message.substr(0, kMaxNameBytes)}));
  }
};

}  // namespace loom::comm::coordinator_state
