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
// Optional capability (the default says "not offered"): a transport whose
// ranks share memory may all-reduce a buffer over all its ranks itself, with
// a schedule messages cannot express (shm: each rank reduces its slice of
// every rank's block straight from shared memory). The ring all-reduce asks
// first and runs over messages when the answer is false.
//   comm::AllreduceInPlace a{.stream = channel, .data = p, .numel = n, .dtype = t, .op = ReduceOp::Sum};
//   if (!transport.allreduce_in_place(a, deadline)) { /* messages */ }
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "loom/comm/reduce_kernels.h"
#include "loom/core/dtype.h"
#include "loom/core/error.h"

namespace loom::comm {

using Clock = std::chrono::steady_clock;

struct Deadline {
  Clock::time_point at;
  static Deadline in(std::chrono::milliseconds d) { return {Clock::now() + d}; }
  static Deadline never() { return {Clock::time_point::max()}; }
  bool expired() const { return Clock::now() >= at; }
};

// One in-place all-reduce over every rank of a transport (see above).
struct AllreduceInPlace {
  // Calls that may run at the same time (from communicators on different
  // channels) pass different streams; calls on one stream come in the same
  // order on every rank, as collectives do.
  int stream = 0;
  std::byte* data = nullptr;  // numel elements of dtype, contiguous; the result replaces them
  size_t numel = 0;
  core::DType dtype = core::DType::F32;
  ReduceOp op = ReduceOp::Sum;  // Sum, Max or Min (for Avg the caller sums, then divides)
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

  // Optional: all-reduces `a` over all ranks, in place, and returns true; or
  // returns false at once, having done nothing, when this transport does not
  // offer it for these arguments (the default). The answer depends only on
  // the arguments, the transport's configuration and (as everything after a
  // failed collective) earlier calls that threw, so all ranks agree.
  // Errors and deadline as for recv (TimeoutError, PeerLostError, CommError).
  virtual bool allreduce_in_place(const AllreduceInPlace& a, Deadline deadline) { return false; }
};

}  // namespace loom::comm
