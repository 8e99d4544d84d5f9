// Point-to-point messaging between the ranks of one job: the one interface
// every transport implements (in-process for tests, shared memory within a
// host, ZeroMQ between hosts) and every collective is written against.
//
//   // given: int rank, int peer, uint64_t tag, std::span<const std::byte> bytes, std::span<std::byte> out_bytes
//   comm::InProcHub hub(4);                         // 4 ranks as threads (tests)
//   auto t = hub.transport(rank);                   // std::shared_ptr<Transport>
//   t->send(peer, tag, bytes, comm::Deadline::in(30s));
//   t->recv(peer, tag, out_bytes, comm::Deadline::in(30s));
//
// Semantics, for every transport:
// - Messages between one pair of ranks with one tag arrive in send order;
//   messages with different tags may be received in any order (a receiver
//   waiting for tag B keeps an early tag-A message until someone asks for it).
// - send() never waits for the matching recv(): a rank can send to its right
//   neighbour and then receive from its left without deadlock. It may block for
//   flow control (a bounded queue that drains as the peer receives), but never
//   past the deadline (TimeoutError). When send() returns, the caller may reuse
//   or free `data`.
// - recv() needs `out` to be exactly the message's size (CommError otherwise)
//   and throws TimeoutError at the deadline, PeerLostError once the peer is
//   known to be gone (see fail_peer), never hangs.
// - Transports are thread-safe: several threads may send and receive at once.
//
// Transports move bytes and know nothing of reductions: an all-reduce is an
// algorithm of the collectives (collectives.h), written over send and recv,
// or over what one transport alone offers (the shared-memory all-reduce,
// shm_allreduce.h, reached through ShmTransport).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "loom/core/error.h"

namespace loom::comm {

using Clock = std::chrono::steady_clock;

struct Deadline {
  Clock::time_point at;
  static Deadline in(std::chrono::milliseconds d) { return {Clock::now() + d}; }
  static Deadline never() { return {Clock::time_point::max()}; }
  bool expired() const { return Clock::now() >= at; }
};

class Transport {
 public:
  virtual ~Transport() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;

  virtual void send(int peer, uint64_t tag, std::span<const std::byte> data, Deadline deadline) = 0;
  virtual void recv(int peer, uint64_t tag, std::span<std::byte> out, Deadline deadline) = 0;

  // Declares `peer` gone (the heartbeat monitor calls this): pending and
  // future recv() from it throw PeerLostError whose message is `why`, verbatim
  // (so `why` names the lost process and its host: "worker 2 on host a7 lost: ...").
  virtual void fail_peer(int peer, const std::string& why) = 0;
  // A short name for messages and benchmarks: "inproc", "shm", "zmq".
  virtual const char* kind() const = 0;
};

}  // namespace loom::comm
