// Internal to the shared-memory transport (shm_transport.h is its public
// face): the layout of the job's one POSIX shared-memory segment, and
// creating, attaching to and leaving it.
//
//   // given: comm::ShmOptions options, int from, int to, int r, int stream, int p
//   using namespace comm;
//   shm::Segment seg(options);                 // names and sizes it; maps nothing yet
//   options.rank == 0 ? seg.create() : seg.attach();
//   seg.ring(from, to); seg.slot(r); seg.lane(stream);
//   seg.peer_problem(p);                       // "" while p's process looks alive
//   seg.leave();                               // our slot closed, peers woken, unmapped
//
// The segment: header | one slot per rank | size x size message rings, ring
// (from, to) at index from * size + to | the all-reduce lanes (shm_allreduce.h).
// Everything is zero when created except what the creator writes before it
// publishes `magic`.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

#include "loom/comm/transport/shm_transport.h"

namespace loom::comm::shm {

inline constexpr uint64_t kSegmentMagic = 0x314d48534d4f4f4cULL;  // "LOOMSHM1"
inline constexpr uint32_t kLayoutVersion = 2;                     // 2: all-reduce lanes
inline constexpr size_t kCacheLine = 64;
inline constexpr size_t kPage = 4096;
inline constexpr auto kPollInterval = std::chrono::milliseconds(5);  // longest futex sleep between checks
inline constexpr int kSpins = 256;

enum SlotState : uint32_t { kAbsent = 0, kAttached = 1, kClosed = 2 };

struct SegmentHeader {
  std::atomic<uint64_t> magic;  // stored last by the creator: the segment is ready
  uint32_t version;
  int32_t world_size;
  uint64_t ring_nbytes;
  uint64_t total_nbytes;
  int32_t creator_pid;
  std::atomic<uint32_t> attached;  // ranks that have attached so far
  uint64_t lane_block_nbytes;      // 0: no all-reduce lanes
};

struct alignas(kCacheLine) RankSlot {
  std::atomic<uint32_t> state;
  std::atomic<int32_t> pid;
  std::atomic<int64_t> heartbeat_ns;  // CLOCK_MONOTONIC, which all processes of a host share
  std::atomic<uint32_t> space_bell;   // futex word: a receiver freed space this rank's progress thread wants
  std::atomic<uint32_t> bell_waiting;
};

// A single-producer/single-consumer byte ring; its data follows the header.
struct RingHeader {
  alignas(kCacheLine) std::atomic<uint64_t> head;  // bytes ever published; stored by the sender only
  std::atomic<uint32_t> data_seq;                  // futex word: bumped after head moves
  std::atomic<uint32_t> reader_waiting;
  alignas(kCacheLine) std::atomic<uint64_t> tail;    // bytes ever consumed; stored by the receiver only
  std::atomic<uint32_t> sender_queued;               // the sender has bytes queued: ring its bell on draining
  alignas(kCacheLine) std::atomic<uint32_t> broken;  // a corrupt header was seen: the stream is unusable
};

// The head of one all-reduce lane (see shm_allreduce.h); a RankProgress per
// rank follows, then the lane's blocks.
struct LaneHeader {
  alignas(kCacheLine) std::atomic<uint32_t> bell;  // futex word: bumped after any rank's progress moves
  std::atomic<uint32_t> waiting;                   // threads asleep on `bell`
  std::atomic<uint32_t> broken;                    // a call failed half way: the lane is out of use
};

struct alignas(kCacheLine) RankProgress {
  std::atomic<uint64_t> staged;     // rounds whose input block this rank has staged
  std::atomic<uint64_t> reduced;    // rounds whose slice this rank has reduced
  std::atomic<uint64_t> call_numel;  // what this rank's current call reduces, to check
  std::atomic<uint32_t> call_kind;   // that all ranks agree: dtype << 8 | op
};

static_assert(sizeof(SegmentHeader) <= 128);
static_assert(std::atomic<uint64_t>::is_always_lock_free && std::atomic<uint32_t>::is_always_lock_free,
              "shared-memory atomics must be lock-free to work across processes");

constexpr size_t align_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

// Where everything lies in the segment.
struct Layout {
  size_t slots_off = 128;
  size_t rings_off = 0;
  size_t ring_stride = 0;
  size_t lanes_off = 0;
  size_t lane_blocks_off = 0;  // from the start of a lane
  size_t lane_stride = 0;      // 0: no lanes
  size_t block_nbytes = 0;
  size_t total = 0;
  Layout(int size, size_t ring_nbytes, size_t block_nbytes);
  // Blocks per lane: two staging blocks per rank, then two result blocks.
  static size_t blocks_per_lane(int size) { return 2 * (static_cast<size_t>(size) + 1); }
};

// Lanes in a segment, one per concurrent stream (communicator channel).
inline constexpr int kLanes = 2;
// Worlds larger than this get no lanes (their memory grows with the size).
inline constexpr int kMaxLaneRanks = 16;

// ---- waiting ------------------------------------------------------------

int64_t monotonic_ns();
bool pid_alive(int32_t pid);
// Sleeps while *word == expected, at most `timeout` (not FUTEX_PRIVATE: the word is shared between processes).
void futex_wait(std::atomic<uint32_t>* word, uint32_t expected, std::chrono::nanoseconds timeout);
void futex_wake_all(std::atomic<uint32_t>* word);
// Advances a futex word and wakes its sleepers, if `waiting` says there are any.
void bump(std::atomic<uint32_t>& seq, const std::atomic<uint32_t>& waiting);

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// Counts a thread as sleeping on a futex word for as long as it lives.
class WaitingGuard {
 public:
  explicit WaitingGuard(std::atomic<uint32_t>& w) : w_(w) { w_.fetch_add(1, std::memory_order_seq_cst); }
  ~WaitingGuard() { w_.fetch_sub(1, std::memory_order_seq_cst); }
  WaitingGuard(const WaitingGuard&) = delete;
  WaitingGuard& operator=(const WaitingGuard&) = delete;

 private:
  std::atomic<uint32_t>& w_;
};

// The next sleep: until the deadline, at most kPollInterval.
std::chrono::nanoseconds nap(const Deadline& deadline);

// ---- the segment ----------------------------------------------------------

class Segment {
 public:
  explicit Segment(const ShmOptions& options);
  ~Segment() { leave(); }
  Segment(const Segment&) = delete;
  Segment& operator=(const Segment&) = delete;

  // Rank 0: creates the segment, replacing a stale one of the same name.
  void create();
  // Other ranks: waits up to attach_timeout for rank 0's segment and maps it.
  void attach();
  // Marks this rank's slot closed, wakes whoever waits on it, removes the
  // name if rank 0 leaves before everyone attached, unmaps. Idempotent.
  void leave();

  const std::string& name() const { return name_; }
  const Layout& layout() const { return layout_; }
  bool mapped() const { return base_ != nullptr; }
  SegmentHeader* header() const { return reinterpret_cast<SegmentHeader*>(base_); }
  RankSlot* slot(int r) const { return reinterpret_cast<RankSlot*>(base_ + layout_.slots_off) + r; }
  RingHeader* ring(int from, int to) const {
    const size_t index = static_cast<size_t>(from) * static_cast<size_t>(size_) + static_cast<size_t>(to);
    return reinterpret_cast<RingHeader*>(base_ + layout_.rings_off + index * layout_.ring_stride);
  }
  std::byte* ring_data(int from, int to) const { return reinterpret_cast<std::byte*>(ring(from, to) + 1); }
  bool has_lanes() const { return layout_.lane_stride != 0; }
  std::byte* lane(int stream) const {
    return base_ + layout_.lanes_off + static_cast<size_t>(stream) * layout_.lane_stride;
  }

  // Why `peer` is lost judging by its slot (it closed, its process is gone,
  // its heartbeat is too old), or "" when it is not (or not there yet).
  std::string peer_problem(int peer) const;
  // Refreshes this rank's heartbeat word.
  void beat() const;
  int64_t heartbeat_ns() const { return heartbeat_ns_; }

 private:
  bool creator_live(const std::byte* page) const;
  bool existing_is_live() const;
  bool try_attach(std::string& problem);
  void map_all();
  void claim_slot();
  void count_attached();

  std::string job_id_;
  std::string name_;
  int rank_;
  int size_;
  size_t ring_nbytes_;
  std::chrono::milliseconds attach_timeout_;
  int64_t heartbeat_ns_;
  Layout layout_;
  int fd_ = -1;
  std::byte* base_ = nullptr;
  bool claimed_ = false;  // our slot is ours (mark it closed when leaving)
};

}  // namespace loom::comm::shm
