// The shared-memory transport: ranks that are processes (or threads) on one
// host exchange messages through one POSIX shared-memory segment per job.
//
//   // given: int r, int peer, uint64_t tag, std::span<const std::byte> bytes, std::span<std::byte> out
//   comm::ShmTransport t({.job_id = "job42", .rank = r, .size = 4});
//   t.send(peer, tag, bytes, comm::Deadline::in(30s));
//   t.recv(peer, tag, out, comm::Deadline::in(30s));
//
// It keeps the contract in transport.h. How:
// - Rank 0 creates the segment "/loom-<job_id>" (mode 0600, so only this user
//   can attach), replacing a stale one left by a crashed job of the same id;
//   the other ranks wait for it up to `attach_timeout`. The name is unlinked
//   as soon as every rank has attached (the mappings outlive the name), and by
//   rank 0 when it closes earlier, so a segment never outlives its job in
//   /dev/shm unless a rank dies while the job is starting.
// - One single-producer/single-consumer byte ring per ordered pair of ranks
//   (sender -> receiver). A message is a 24-byte header {magic, tag, nbytes}
//   followed by its payload, streamed through the ring, so a message may be
//   far larger than the ring.
// - send() copies into the ring what fits now and queues the rest (one copy);
//   the transport's progress thread moves queued bytes into the ring as the
//   receiver drains it. So send() returns without waiting for the receiver,
//   unless more than `max_queued_nbytes` are already queued for that peer
//   (flow control: it waits, up to its deadline).
// - recv() copies a matching message straight from the ring into `out`;
//   messages with other tags met on the way are stashed until asked for.
//   Sending to oneself goes through a local queue, not a ring.
// - Waiting is a short spin, then a futex (the receiver's counter in the ring,
//   the sender's "space" doorbell in its rank slot), re-checking deadline and
//   peer state every few milliseconds.
// - A peer is lost when fail_peer() says so, when it closed its transport and
//   nothing it sent is left, when its process is gone, or when its heartbeat
//   word (refreshed by the progress thread) is older than `heartbeat_timeout`.
//   Lost means PeerLostError from recv() and send(), and queued bytes for it
//   are dropped.
// - Closing waits up to `linger` for queued bytes to reach the rings.
// - Beside the messages, the segment holds the lanes of the shared-memory
//   all-reduce (lanes(); the "shm" algorithm of collectives.h) for worlds of
//   2 to 16 ranks: two lanes, one per communicator channel 0 and 1, each with
//   two staging blocks per rank and two result blocks of
//   `allreduce_block_nbytes`. Each rank stages its buffer block by block and
//   reduces its slice of every rank's block straight from shared memory
//   (shm_allreduce.h has the schedule); no messages, no copies out of rings.
//
// Files: shm_segment.{h,cc} (layout, create/attach/leave, peer liveness),
// shm_transport_impl.h with shm_transport.cc (construction, closing, peers),
// shm_send.cc (outboxes, progress thread) and shm_recv.cc (reading rings,
// stash), shm_allreduce.{h,cc} (the lanes' all-reduce).
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>

#include "loom/comm/transport/transport.h"

namespace loom::comm {

namespace shm {
class LaneAllreduce;
}

struct ShmOptions {
  std::string job_id;  // [A-Za-z0-9._-], up to 200 characters
  int rank = 0;
  int size = 1;
  std::size_t ring_nbytes = 1 << 20;                   // per ordered pair of ranks (size^2 rings in all)
  std::chrono::milliseconds attach_timeout{30000};     // how long ranks > 0 wait for rank 0's segment
  std::chrono::milliseconds heartbeat_timeout{10000};  // a peer silent this long is lost; 0: no heartbeat
  std::size_t max_queued_nbytes = 64 << 20;            // per peer; one message may always be queued whole
  std::chrono::milliseconds linger{10000};             // how long closing waits for queued bytes to go out
  // Block of one all-reduce round (a multiple of 64); 0: no lanes (no "shm" all-reduce algorithm).
  std::size_t allreduce_block_nbytes = 512 << 10;
};

class ShmTransport final : public Transport {
 public:
  explicit ShmTransport(const ShmOptions& options);
  ~ShmTransport() override;
  ShmTransport(const ShmTransport&) = delete;
  ShmTransport& operator=(const ShmTransport&) = delete;

  int rank() const override;
  int size() const override;
  void send(int peer, uint64_t tag, std::span<const std::byte> data, Deadline deadline) override;
  void recv(int peer, uint64_t tag, std::span<std::byte> out, Deadline deadline) override;
  void fail_peer(int peer, const std::string& why) override;
  const char* kind() const override { return "shm"; }

  // The all-reduce lanes in this transport's segment (shm_allreduce.h), which
  // the "shm" all-reduce algorithm runs on. Lives as long as the transport.
  shm::LaneAllreduce& lanes();

  // "/loom-<job_id>" (checks the id).
  static std::string segment_name(const std::string& job_id);
  // Removes a segment name left behind by a job that crashed while starting;
  // returns whether there was one.
  static bool remove_segment(const std::string& job_id);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace loom::comm
