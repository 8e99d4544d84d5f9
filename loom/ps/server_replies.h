// Internal to the parameter server (server.cc, server_handlers.cc,
// replication.cc): how it sends. Replies to workers and servers go out of
// the ROUTER they came in on; updates to backups out of a DEALER per server
// (replication.h). The counters are what KVServer::stats() reports.
#pragma once

#include <atomic>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "loom/comm/wire/endpoint.h"
#include "loom/ps/protocol.h"
#include "loom/ps/server_slices.h"

namespace loom::ps::detail {

struct ServerCounters {
  std::atomic<uint64_t> requests{0}, errors{0}, updates{0}, bytes_in{0}, bytes_out{0};
};

// Sends [prefix...] [header] [frames...] (frames copied into ZeroMQ), with
// the header's frame count set; returns the payload bytes.
size_t send_message(const comm::Socket& socket, std::span<const MsgPtr> prefix, Header h,
                    std::span<const std::span<const std::byte>> frames);

class Replier {
 public:
  Replier(const comm::ServerEndpoint& endpoint, ServerCounters& counters) : ep_(endpoint), n_(counters) {}

  // A reply to `req` (its header with op Reply, `status` and `flags`).
  void reply(const std::vector<MsgPtr>& route, const Header& req, std::span<const std::span<const std::byte>> frames,
             Status status = Status::Ok, uint16_t flags = 0);
  void reply_error(const std::vector<MsgPtr>& route, const Header& req, const std::string& message);
  // Answers a pull (or pushpull) with the slice's value: in a frame, or
  // written into the worker's staging region (Flag::Shm).
  void reply_value(const Waiting& w, std::span<const std::byte> value);
  // Answers a finished push/init: pushpull gets the slice's value; a slice of
  // a sparse push answers its request once the last slice is done.
  void answer(Entry& e, const Waiting& w);

 private:
  const comm::ServerEndpoint& ep_;
  ServerCounters& n_;
};

}  // namespace loom::ps::detail
