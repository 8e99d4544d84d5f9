// Internal to the shared-memory transport: the state behind ShmTransport.
// Its functions live by what they do: shm_transport.cc (construction,
// closing, peers), shm_send.cc (outboxes and the progress thread that drains
// them into the rings), shm_recv.cc (reading the rings, the stash of messages
// with other tags). The segment is shm_segment.h; the all-reduce,
// shm_allreduce.h.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "loom/comm/collectives/shm_allreduce.h"
#include "loom/comm/transport/shm_segment.h"
#include "loom/comm/transport/shm_transport.h"

namespace loom::comm {

namespace shm {

inline constexpr uint32_t kMessageMagic = 0x47534d4cU;           // "LMSG"
inline constexpr uint64_t kMaxMessageBytes = uint64_t{1} << 36;  // a larger header is corruption

// What precedes each message's payload in a ring.
struct MessageHeader {
  uint32_t magic;
  uint32_t reserved;
  uint64_t tag;
  uint64_t nbytes;
};
static_assert(sizeof(MessageHeader) == 24);

}  // namespace shm

struct ShmTransport::Impl {
  struct Inbox {  // what this rank receives from one peer
    std::mutex mu;
    std::condition_variable cv;
    bool reading = false;  // a thread is reading the ring; only it touches `partial`
    std::map<uint64_t, std::deque<std::vector<std::byte>>> stash;  // tag -> complete messages
    struct Partial {
      uint64_t tag = 0;
      std::vector<std::byte> buf;
      size_t got = 0;
    };
    std::optional<Partial> partial;  // a message half read when its reader gave up
  };
  struct Chunk {  // queued bytes; the buffer is reused (no allocation per step in steady state)
    std::unique_ptr<std::byte[]> buf;
    size_t capacity = 0;
    size_t nbytes = 0;
  };
  struct Outbox {  // what this rank sends to one peer that did not fit in the ring yet
    std::mutex mu;
    std::condition_variable drained;  // queued bytes went out (or were dropped)
    std::deque<Chunk> queue;          // the byte stream's continuation, in order
    std::vector<Chunk> spare;         // emptied chunks, kept for reuse
    size_t front_off = 0;             // bytes of queue.front() already in the ring
    size_t queued = 0;                // bytes queued and not yet in the ring
    std::atomic<bool> pending{false};
  };
  static constexpr size_t kSpareChunks = 4;

  ShmOptions opt;
  shm::Segment segment;
  std::vector<std::unique_ptr<Inbox>> inboxes;
  std::vector<std::unique_ptr<Outbox>> outboxes;
  std::mutex lost_mu;
  std::map<int, std::string> lost;
  std::vector<std::atomic<bool>> lost_flag;  // per peer: fail_peer() was called
  std::unique_ptr<shm::LaneAllreduce> lanes;
  std::thread progress;
  std::atomic<bool> stopping{false};

  explicit Impl(const ShmOptions& o) : opt(o), segment(o) {}

  shm::RankSlot* slot(int r) const { return segment.slot(r); }
  shm::RingHeader* ring(int from, int to) const { return segment.ring(from, to); }
  std::byte* ring_data(int from, int to) const { return segment.ring_data(from, to); }
  size_t cap() const { return opt.ring_nbytes; }

  // ---- lifetime and peers (shm_transport.cc) ------------------------------

  // Stops the progress thread (after up to `linger` for queued bytes) and leaves the segment.
  void close();

  // Gives queued bytes up to `linger` to reach their rings.
  void linger();

  void check_rank(int peer, const char* op) const;

  // Cheap (one atomic load): declared lost by fail_peer.
  void check_declared(int peer);

  // Everything, done while waiting.
  void check_alive(int peer);

  void fail_peer(int peer, const std::string& why);

  // ---- sending (shm_send.cc) ----------------------------------------------

  void send(int peer, uint64_t tag, std::span<const std::byte> data, const Deadline& deadline);

  // Copies as much of a then b as fits into the ring to `peer` and publishes
  // it; returns the bytes written. Never waits. Caller holds the peer's outbox.
  size_t write_some(int peer, std::span<const std::byte> a, std::span<const std::byte> b = {});

  // Moves queued bytes into the ring; returns whether any moved. Caller holds ob.mu.
  bool flush(int peer, Outbox& ob);

  // Keeps an emptied chunk for reuse: at most kSpareChunks, together at most
  // max_queued_nbytes (the smallest go first). Caller holds ob.mu.
  void recycle(Outbox& ob, Chunk chunk) const;

  // A chunk for `nbytes`: a spare one that is big enough, else a new one. Caller holds ob.mu.
  static Chunk take_chunk(Outbox& ob, size_t nbytes);

  // Forgets what was queued for a lost peer. Caller holds ob.mu.
  void drop(int peer, Outbox& ob);

  // The progress thread: moves queued bytes into rings as receivers drain
  // them (sleeping on this rank's space doorbell) and refreshes the heartbeat.
  void run_progress();

  // ---- receiving (shm_recv.cc) --------------------------------------------

  void recv(int peer, uint64_t tag, std::span<std::byte> out, const Deadline& deadline);

  // Reads the next message from `peer`'s ring: straight into `out` when it is
  // the one wanted (returns true), else into the stash (returns false).
  // Called by the one thread that holds `in.reading`, without `in.mu`.
  bool read_one(int peer, Inbox& in, uint64_t tag, std::span<std::byte> out, const Deadline& deadline);

  // Reads n bytes into dst, advancing `got` as it goes (so a timeout leaves it exact).
  void read_bytes(int peer, shm::RingHeader* rh, std::byte* dst, size_t n, size_t& got, const Deadline& deadline,
                  uint64_t tag);

  void wait_data(int peer, shm::RingHeader* rh, size_t need, const Deadline& deadline, uint64_t tag);

  // After the receiver consumed bytes of the ring from `peer`.
  void consumed(int peer, shm::RingHeader* rh, uint64_t new_tail);

  void stash(Inbox& in, uint64_t tag, std::vector<std::byte> msg);
};

}  // namespace loom::comm
