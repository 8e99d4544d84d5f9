#include "loom/comm/shm_transport.h"

#include <fcntl.h>
#include <linux/futex.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <new>
#include <optional>
#include <thread>
#include <vector>

namespace loom::comm {
namespace {

using namespace std::chrono_literals;

constexpr uint64_t kSegmentMagic = 0x314d48534d4f4f4cULL;  // "LOOMSHM1"
constexpr uint32_t kLayoutVersion = 1;
constexpr uint32_t kMessageMagic = 0x47534d4cU;           // "LMSG"
constexpr uint64_t kMaxMessageBytes = uint64_t{1} << 36;  // a larger header is corruption
constexpr size_t kCacheLine = 64;
constexpr size_t kPage = 4096;
constexpr auto kPollInterval = 5ms;  // longest futex sleep between checks of deadline and peer
constexpr int kSpins = 256;

enum SlotState : uint32_t { kAbsent = 0, kAttached = 1, kClosed = 2 };

// The segment: header | one slot per rank | size x size rings, ring (from, to)
// at index from * size + to. Everything is zero when created except what the
// creator writes before it publishes `magic`.
struct SegmentHeader {
  std::atomic<uint64_t> magic;  // stored last by the creator: the segment is ready
  uint32_t version;
  int32_t world_size;
  uint64_t ring_nbytes;
  uint64_t total_nbytes;
  int32_t creator_pid;
  std::atomic<uint32_t> attached;  // ranks that have attached so far
};

struct alignas(kCacheLine) RankSlot {
  std::atomic<uint32_t> state;
  std::atomic<int32_t> pid;
  std::atomic<int64_t> heartbeat_ns;  // CLOCK_MONOTONIC, which all processes of a host share
  std::atomic<uint32_t> space_bell;   // futex word: a receiver freed space this rank's progress thread wants
  std::atomic<uint32_t> bell_waiting;
};

struct RingHeader {
  alignas(kCacheLine) std::atomic<uint64_t> head;  // bytes ever published; stored by the sender only
  std::atomic<uint32_t> data_seq;                  // futex word: bumped after head moves
  std::atomic<uint32_t> reader_waiting;
  alignas(kCacheLine) std::atomic<uint64_t> tail;    // bytes ever consumed; stored by the receiver only
  std::atomic<uint32_t> sender_queued;               // the sender has bytes queued: ring its bell on draining
  alignas(kCacheLine) std::atomic<uint32_t> broken;  // a corrupt header was seen: the stream is unusable
};

struct MessageHeader {
  uint32_t magic;
  uint32_t reserved;
  uint64_t tag;
  uint64_t nbytes;
};

static_assert(sizeof(SegmentHeader) <= 128);
static_assert(sizeof(MessageHeader) == 24);
static_assert(std::atomic<uint64_t>::is_always_lock_free && std::atomic<uint32_t>::is_always_lock_free,
              "shared-memory atomics must be lock-free to work across processes");

constexpr size_t align_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

struct Layout {
  size_t slots_off = 128;
  size_t rings_off = 0;
  size_t ring_stride = 0;
  size_t total = 0;
  Layout(int size, size_t ring_nbytes) {
    rings_off = align_up(slots_off + static_cast<size_t>(size) * sizeof(RankSlot), kPage);
    ring_stride = align_up(sizeof(RingHeader) + ring_nbytes, kCacheLine);
    total = rings_off + static_cast<size_t>(size) * static_cast<size_t>(size) * ring_stride;
  }
};

int64_t monotonic_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

bool pid_alive(int32_t pid) { return pid > 0 && (::kill(pid, 0) == 0 || errno == EPERM); }

void futex_wait(std::atomic<uint32_t>* word, uint32_t expected, std::chrono::nanoseconds timeout) {
  if (timeout <= 0ns) return;
  timespec ts{};
  ts.tv_sec = static_cast<time_t>(timeout.count() / 1000000000);
  ts.tv_nsec = static_cast<long>(timeout.count() % 1000000000);
  // Not FUTEX_PRIVATE: the word is shared between processes.
  ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAIT, expected, &ts, nullptr, 0);
}

void futex_wake_all(std::atomic<uint32_t>* word) {
  ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
}

void bump(std::atomic<uint32_t>& seq, const std::atomic<uint32_t>& waiting) {
  seq.fetch_add(1, std::memory_order_seq_cst);
  if (waiting.load(std::memory_order_seq_cst) != 0) futex_wake_all(&seq);
}

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// Counts a thread as sleeping on a ring's futex for as long as it lives.
class WaitingGuard {
 public:
  explicit WaitingGuard(std::atomic<uint32_t>& w) : w_(w) { w_.fetch_add(1, std::memory_order_seq_cst); }
  ~WaitingGuard() { w_.fetch_sub(1, std::memory_order_seq_cst); }
  WaitingGuard(const WaitingGuard&) = delete;
  WaitingGuard& operator=(const WaitingGuard&) = delete;

 private:
  std::atomic<uint32_t>& w_;
};

std::chrono::nanoseconds nap(const Deadline& deadline) {
  auto left = deadline.at - Clock::now();
  return std::min<std::chrono::nanoseconds>(left, kPollInterval);
}

void copy_into_ring(std::byte* ring, size_t cap, uint64_t pos, const std::byte* src, size_t n) {
  const size_t off = static_cast<size_t>(pos % cap);
  const size_t first = std::min(n, cap - off);
  std::memcpy(ring + off, src, first);
  if (n > first) std::memcpy(ring, src + first, n - first);
}

void copy_from_ring(const std::byte* ring, size_t cap, uint64_t pos, std::byte* dst, size_t n) {
  const size_t off = static_cast<size_t>(pos % cap);
  const size_t first = std::min(n, cap - off);
  std::memcpy(dst, ring + off, first);
  if (n > first) std::memcpy(dst + first, ring, n - first);
}

std::string errno_text() { return std::strerror(errno); }

// Whether `name` refers to the same object as the open descriptor `fd`.
bool name_is(const std::string& name, int fd) {
  struct stat mine {
  }, theirs{};
  if (::fstat(fd, &mine) != 0) return false;
  int other = ::shm_open(name.c_str(), O_RDONLY, 0);
  if (other < 0) return false;
  const bool same = ::fstat(other, &theirs) == 0 && theirs.st_ino == mine.st_ino && theirs.st_dev == mine.st_dev;
  ::close(other);
  return same;
}

}  // namespace

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
  std::string name;
  Layout layout;
  int fd = -1;
  std::byte* base = nullptr;
  bool claimed = false;  // our slot is ours (mark it closed when leaving)
  std::vector<std::unique_ptr<Inbox>> inboxes;
  std::vector<std::unique_ptr<Outbox>> outboxes;
  std::mutex lost_mu;
  std::map<int, std::string> lost;
  std::vector<std::atomic<bool>> lost_flag;  // per peer: fail_peer() was called
  std::thread progress;
  std::atomic<bool> stopping{false};

  explicit Impl(const ShmOptions& o) : opt(o), name(segment_name(o.job_id)), layout(o.size, o.ring_nbytes) {}

  SegmentHeader* header() const { return reinterpret_cast<SegmentHeader*>(base); }
  RankSlot* slot(int r) const { return reinterpret_cast<RankSlot*>(base + layout.slots_off) + r; }
  RingHeader* ring(int from, int to) const {
    const size_t index = static_cast<size_t>(from) * static_cast<size_t>(opt.size) + static_cast<size_t>(to);
    return reinterpret_cast<RingHeader*>(base + layout.rings_off + index * layout.ring_stride);
  }
  std::byte* ring_data(int from, int to) const { return reinterpret_cast<std::byte*>(ring(from, to) + 1); }
  size_t cap() const { return opt.ring_nbytes; }
  int64_t heartbeat_ns() const { return opt.heartbeat_timeout.count() * 1000000; }

  // ---- creating and attaching -------------------------------------------

  // Whether the creator recorded in a mapped first page still runs.
  bool creator_live(const std::byte* page) const {
    auto* s0 = reinterpret_cast<const RankSlot*>(page + layout.slots_off);
    return s0->state.load() == kAttached && pid_alive(s0->pid.load()) &&
           (heartbeat_ns() == 0 || monotonic_ns() - s0->heartbeat_ns.load() < heartbeat_ns());
  }

  // Whether an existing segment under our name belongs to a job that runs.
  bool existing_is_live() {
    int other = ::shm_open(name.c_str(), O_RDONLY, 0);
    if (other < 0) return false;
    struct stat st {};
    bool live = false;
    if (::fstat(other, &st) == 0 && static_cast<size_t>(st.st_size) >= kPage) {
      void* p = ::mmap(nullptr, kPage, PROT_READ, MAP_SHARED, other, 0);
      if (p != MAP_FAILED) {
        live =
            static_cast<SegmentHeader*>(p)->magic.load() == kSegmentMagic && creator_live(static_cast<std::byte*>(p));
        ::munmap(p, kPage);
      }
    }
    ::close(other);
    return live;
  }

  void create() {
    for (int attempt = 0;; ++attempt) {
      fd = ::shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
      if (fd >= 0) break;
      if (errno != EEXIST || attempt == 3) {
        throw CommError(format("shm: rank 0 cannot create segment {}: {}", name, errno_text()));
      }
      if (existing_is_live()) {
        throw CommError(format("shm: segment {} belongs to a running job (is job id '{}' used twice, or two ranks 0?)",
                               name, opt.job_id));
      }
      ::shm_unlink(name.c_str());  // left by a job that crashed while starting
    }
    if (::ftruncate(fd, static_cast<off_t>(layout.total)) != 0) {
      std::string why = errno_text();
      ::shm_unlink(name.c_str());
      throw CommError(format("shm: cannot size segment {} to {} bytes: {}", name, layout.total, why));
    }
    // Reserve the memory now: running out of /dev/shm later would be SIGBUS.
    if (int err = ::posix_fallocate(fd, 0, static_cast<off_t>(layout.total)); err != 0) {
      ::shm_unlink(name.c_str());
      throw CommError(
          format("shm: cannot reserve {} bytes in /dev/shm for {}: {}", layout.total, name, std::strerror(err)));
    }
    map_all();
    auto* h = header();
    h->version = kLayoutVersion;
    h->world_size = opt.size;
    h->ring_nbytes = opt.ring_nbytes;
    h->total_nbytes = layout.total;
    h->creator_pid = static_cast<int32_t>(::getpid());
    for (int r = 0; r < opt.size; ++r) new (slot(r)) RankSlot{};
    for (int from = 0; from < opt.size; ++from) {
      for (int to = 0; to < opt.size; ++to) new (ring(from, to)) RingHeader{};
    }
    claim_slot();
    h->magic.store(kSegmentMagic, std::memory_order_release);
    count_attached();
  }

  void attach() {
    const auto deadline = Clock::now() + opt.attach_timeout;
    auto backoff = 1ms;
    std::string problem;
    while (!try_attach(problem)) {
      if (Clock::now() >= deadline) {
        throw TimeoutError(format("shm: rank {} gave up attaching to {} after {} ms: {}", opt.rank, name,
                                  opt.attach_timeout.count(), problem));
      }
      std::this_thread::sleep_for(backoff);
      backoff = std::min<std::chrono::milliseconds>(backoff * 2, 20ms);
    }
  }

  // One attempt; false (with the reason) when the segment is not there or not ready yet.
  bool try_attach(std::string& problem) {
    int f = ::shm_open(name.c_str(), O_RDWR, 0);
    if (f < 0) {
      if (errno != ENOENT) throw CommError(format("shm: rank {} cannot open {}: {}", opt.rank, name, errno_text()));
      problem = "the segment does not exist (is rank 0 running with the same job id?)";
      return false;
    }
    struct stat st {};
    if (::fstat(f, &st) != 0 || static_cast<size_t>(st.st_size) < kPage) {
      ::close(f);
      problem = "the segment is being created";
      return false;
    }
    void* p = ::mmap(nullptr, kPage, PROT_READ, MAP_SHARED, f, 0);
    if (p == MAP_FAILED) {
      ::close(f);
      throw CommError(format("shm: rank {} cannot map {}: {}", opt.rank, name, errno_text()));
    }
    auto* h = static_cast<SegmentHeader*>(p);
    const bool ready = h->magic.load(std::memory_order_acquire) == kSegmentMagic;
    const bool live = ready && creator_live(static_cast<std::byte*>(p));
    const uint32_t version = h->version;
    const int32_t world = h->world_size;
    const uint64_t ring_nbytes = h->ring_nbytes, total = h->total_nbytes;
    ::munmap(p, kPage);
    if (!ready || !live) {
      ::close(f);
      problem = !ready ? "rank 0 has not finished creating the segment"
                       : "the segment there is stale (its rank 0 is gone; a new rank 0 will replace it)";
      return false;
    }
    if (version != kLayoutVersion || world != opt.size || ring_nbytes != opt.ring_nbytes || total != layout.total ||
        static_cast<uint64_t>(st.st_size) != total) {
      ::close(f);
      throw CommError(
          format("shm: segment {} has layout v{} for {} ranks with {}-byte rings; rank {} expects v{}, "
                 "{} ranks, {}-byte rings",
                 name, version, world, ring_nbytes, opt.rank, kLayoutVersion, opt.size, opt.ring_nbytes));
    }
    fd = f;
    map_all();
    claim_slot();
    count_attached();
    return true;
  }

  void map_all() {
    void* p = ::mmap(nullptr, layout.total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
      throw CommError(format("shm: cannot map {} bytes of {}: {}", layout.total, name, errno_text()));
    }
    base = static_cast<std::byte*>(p);
  }

  void claim_slot() {
    RankSlot* s = slot(opt.rank);
    uint32_t expected = kAbsent;
    if (!s->state.compare_exchange_strong(expected, kAttached)) {
      throw CommError(format("shm: rank {} of job '{}' is already taken (pid {}, {})", opt.rank, opt.job_id,
                             s->pid.load(), expected == kAttached ? "attached" : "closed"));
    }
    s->heartbeat_ns.store(monotonic_ns());
    s->pid.store(static_cast<int32_t>(::getpid()));
    claimed = true;
  }

  // The last rank to attach removes the name: the mappings keep the memory.
  void count_attached() {
    if (header()->attached.fetch_add(1) + 1 == static_cast<uint32_t>(opt.size) && name_is(name, fd)) {
      ::shm_unlink(name.c_str());
    }
  }

  void close() {
    if (progress.joinable()) {
      linger();
      stopping.store(true);
      bump(slot(opt.rank)->space_bell, slot(opt.rank)->bell_waiting);
      progress.join();
    }
    if (base != nullptr) {
      if (claimed) slot(opt.rank)->state.store(kClosed);
      for (int p = 0; p < opt.size; ++p) {  // let waiting peers see it now rather than at their next poll
        if (p == opt.rank) continue;
        bump(ring(opt.rank, p)->data_seq, ring(opt.rank, p)->reader_waiting);
        bump(slot(p)->space_bell, slot(p)->bell_waiting);
      }
      if (opt.rank == 0 && claimed && header()->attached.load() < static_cast<uint32_t>(opt.size) &&
          name_is(name, fd)) {
        ::shm_unlink(name.c_str());
      }
      ::munmap(base, layout.total);
      base = nullptr;
    }
    if (fd >= 0) ::close(fd);
    fd = -1;
  }

  // Gives queued bytes up to `linger` to reach their rings.
  void linger() {
    const auto until = Clock::now() + opt.linger;
    for (int p = 0; p < opt.size; ++p) {
      Outbox& ob = *outboxes[static_cast<size_t>(p)];
      std::unique_lock lock(ob.mu);
      while (!ob.queue.empty() && Clock::now() < until) {
        try {
          check_alive(p);
        } catch (const PeerLostError&) {
          break;
        }
        ob.drained.wait_until(lock, std::min(until, Clock::now() + kPollInterval));
      }
    }
  }

  // ---- peers --------------------------------------------------------------

  void check_rank(int peer, const char* op) const {
    LOOM_CHECK_T(CommError, peer >= 0 && peer < opt.size, "shm {}: peer {} out of range for world size {}", op, peer,
                 opt.size);
  }

  // Cheap (one atomic load): declared lost by fail_peer.
  void check_declared(int peer) {
    if (!lost_flag[static_cast<size_t>(peer)].load(std::memory_order_acquire)) return;
    std::lock_guard lock(lost_mu);
    throw PeerLostError(lost[peer]);  // fail_peer's reason, verbatim
  }

  // Everything, done while waiting.
  void check_alive(int peer) {
    check_declared(peer);
    RankSlot* s = slot(peer);
    const uint32_t state = s->state.load();
    if (state == kClosed) throw PeerLostError(format("rank {} lost: it closed its shared-memory transport", peer));
    if (state != kAttached) return;  // not there yet: it may still come
    const int32_t pid = s->pid.load();
    if (!pid_alive(pid)) throw PeerLostError(format("rank {} lost: its process (pid {}) is gone", peer, pid));
    if (heartbeat_ns() > 0) {
      const int64_t silent_ns = monotonic_ns() - s->heartbeat_ns.load();
      if (silent_ns > heartbeat_ns()) {
        throw PeerLostError(format("rank {} lost: no heartbeat for {} ms (pid {})", peer, silent_ns / 1000000, pid));
      }
    }
  }

  // ---- sending ------------------------------------------------------------

  // Copies as much of a then b as fits into the ring to `peer` and publishes
  // it; returns the bytes written. Never waits. Caller holds the peer's outbox.
  size_t write_some(int peer, std::span<const std::byte> a, std::span<const std::byte> b = {}) {
    RingHeader* rh = ring(opt.rank, peer);
    std::byte* rd = ring_data(opt.rank, peer);
    uint64_t pos = rh->head.load(std::memory_order_relaxed);
    size_t free = cap() - static_cast<size_t>(pos - rh->tail.load(std::memory_order_seq_cst));
    const size_t na = std::min(free, a.size());
    copy_into_ring(rd, cap(), pos, a.data(), na);
    pos += na;
    free -= na;
    const size_t nb = na == a.size() ? std::min(free, b.size()) : 0;
    copy_into_ring(rd, cap(), pos, b.data(), nb);
    pos += nb;
    if (na + nb > 0) {
      rh->head.store(pos, std::memory_order_seq_cst);
      bump(rh->data_seq, rh->reader_waiting);
    }
    return na + nb;
  }

  // Moves queued bytes into the ring; returns whether any moved. Caller holds ob.mu.
  bool flush(int peer, Outbox& ob) {
    bool moved = false;
    while (!ob.queue.empty()) {
      Chunk& front = ob.queue.front();
      const size_t n = write_some(peer, {front.buf.get() + ob.front_off, front.nbytes - ob.front_off});
      if (n == 0) break;
      moved = true;
      ob.front_off += n;
      ob.queued -= n;
      if (ob.front_off == front.nbytes) {
        recycle(ob, std::move(front));
        ob.queue.pop_front();
        ob.front_off = 0;
      }
    }
    if (ob.queue.empty()) {
      ob.pending.store(false);
      ring(opt.rank, peer)->sender_queued.store(0, std::memory_order_seq_cst);
    }
    if (moved) ob.drained.notify_all();
    return moved;
  }

  // Keeps an emptied chunk for reuse: at most kSpareChunks, together at most
  // max_queued_nbytes (the smallest go first). Caller holds ob.mu.
  void recycle(Outbox& ob, Chunk chunk) const {
    ob.spare.push_back(std::move(chunk));
    auto total = [&] {
      size_t sum = 0;
      for (const Chunk& c : ob.spare) sum += c.capacity;
      return sum;
    };
    while (!ob.spare.empty() && (ob.spare.size() > kSpareChunks || total() > opt.max_queued_nbytes)) {
      ob.spare.erase(std::min_element(ob.spare.begin(), ob.spare.end(),
                                      [](const Chunk& x, const Chunk& y) { return x.capacity < y.capacity; }));
    }
  }

  // A chunk for `nbytes`: a spare one that is big enough, else a new one. Caller holds ob.mu.
  static Chunk take_chunk(Outbox& ob, size_t nbytes) {
    auto best = ob.spare.end();
    for (auto it = ob.spare.begin(); it != ob.spare.end(); ++it) {
      if (it->capacity >= nbytes && (best == ob.spare.end() || it->capacity < best->capacity)) best = it;
    }
    Chunk c;
    if (best != ob.spare.end()) {
      c = std::move(*best);
      ob.spare.erase(best);
    } else {
      c.buf.reset(new std::byte[nbytes]);  // uninitialised: it is overwritten at once
      c.capacity = nbytes;
    }
    c.nbytes = nbytes;
    return c;
  }

  // Forgets what was queued for a lost peer. Caller holds ob.mu.
  void drop(int peer, Outbox& ob) {
    ob.queue.clear();
    ob.front_off = 0;
    ob.queued = 0;
    ob.pending.store(false);
    ring(opt.rank, peer)->sender_queued.store(0);
    ob.drained.notify_all();
  }

  void send(int peer, uint64_t tag, std::span<const std::byte> data, const Deadline& deadline) {
    check_rank(peer, "send");
    LOOM_CHECK_T(CommError, data.size() <= kMaxMessageBytes, "shm send: {}-byte message is over the {}-byte limit",
                 data.size(), kMaxMessageBytes);
    check_declared(peer);
    if (peer == opt.rank) {
      stash(*inboxes[static_cast<size_t>(peer)], tag, std::vector<std::byte>(data.begin(), data.end()));
      return;
    }
    if (slot(peer)->state.load() == kClosed) check_alive(peer);
    const MessageHeader mh{kMessageMagic, 0, tag, data.size()};
    const auto head = std::as_bytes(std::span(&mh, 1));
    const size_t total = head.size() + data.size();
    Outbox& ob = *outboxes[static_cast<size_t>(peer)];
    std::unique_lock lock(ob.mu);
    while (ob.queued > 0 && ob.queued + total > opt.max_queued_nbytes) {  // flow control
      check_alive(peer);
      if (deadline.expired()) {
        throw TimeoutError(
            format("shm send: rank {} timed out: {} bytes already queued for rank {}, which is not "
                   "receiving",
                   opt.rank, ob.queued, peer));
      }
      ob.drained.wait_until(lock, std::min(deadline.at, Clock::now() + kPollInterval));
    }
    const size_t written = ob.queue.empty() ? write_some(peer, head, data) : 0;
    if (written == total) return;
    Chunk rest;
    try {
      rest = take_chunk(ob, total - written);
    } catch (const std::bad_alloc&) {
      throw CommError(format("shm send: cannot queue {} bytes for rank {}", total - written, peer));
    }
    size_t at = 0;
    if (written < head.size()) {
      std::memcpy(rest.buf.get(), head.data() + written, head.size() - written);
      at = head.size() - written;
    }
    const size_t data_off = written > head.size() ? written - head.size() : 0;
    if (data.size() > data_off) std::memcpy(rest.buf.get() + at, data.data() + data_off, data.size() - data_off);
    ob.queued += rest.nbytes;
    ob.queue.push_back(std::move(rest));
    ring(opt.rank, peer)->sender_queued.store(1, std::memory_order_seq_cst);
    ob.pending.store(true);
    lock.unlock();
    bump(slot(opt.rank)->space_bell, slot(opt.rank)->bell_waiting);  // wake the progress thread
  }

  // The progress thread: moves queued bytes into rings as receivers drain
  // them (sleeping on this rank's space doorbell) and refreshes the heartbeat.
  void run_progress() {
    RankSlot* me = slot(opt.rank);
    const auto beat = std::clamp<std::chrono::milliseconds>(opt.heartbeat_timeout / 5, 10ms, 1000ms);
    const auto idle = heartbeat_ns() > 0 ? std::chrono::nanoseconds(beat) : std::chrono::nanoseconds(1s);
    int64_t next_beat = 0;
    while (!stopping.load()) {
      const uint32_t seq = me->space_bell.load(std::memory_order_seq_cst);
      if (heartbeat_ns() > 0 && monotonic_ns() >= next_beat) {
        me->heartbeat_ns.store(monotonic_ns(), std::memory_order_relaxed);
        next_beat = monotonic_ns() + std::chrono::nanoseconds(beat).count();
      }
      bool any_pending = false, moved = false;
      for (int p = 0; p < opt.size; ++p) {
        Outbox& ob = *outboxes[static_cast<size_t>(p)];
        if (!ob.pending.load()) continue;
        std::lock_guard lock(ob.mu);
        moved = flush(p, ob) || moved;
        if (ob.queue.empty()) continue;
        try {
          check_alive(p);
          any_pending = true;
        } catch (const PeerLostError&) {
          drop(p, ob);
        }
      }
      if (moved) continue;
      WaitingGuard waiting(me->bell_waiting);
      if (me->space_bell.load(std::memory_order_seq_cst) != seq) continue;
      futex_wait(&me->space_bell, seq, any_pending ? std::chrono::nanoseconds(kPollInterval) : idle);
    }
  }

  // ---- receiving ----------------------------------------------------------

  // After the receiver consumed bytes of the ring from `peer`.
  void consumed(int peer, RingHeader* rh, uint64_t new_tail) {
    rh->tail.store(new_tail, std::memory_order_seq_cst);
    if (rh->sender_queued.load(std::memory_order_seq_cst) != 0) {
      bump(slot(peer)->space_bell, slot(peer)->bell_waiting);
    }
  }

  void wait_data(int peer, RingHeader* rh, size_t need, const Deadline& deadline, uint64_t tag) {
    auto has_data = [&] {
      return rh->head.load(std::memory_order_seq_cst) - rh->tail.load(std::memory_order_relaxed) >= need;
    };
    for (int i = 0; i < kSpins; ++i) {
      if (has_data()) return;
      cpu_relax();
    }
    for (;;) {
      const uint32_t seq = rh->data_seq.load(std::memory_order_seq_cst);
      WaitingGuard waiting(rh->reader_waiting);
      if (has_data()) return;
      check_alive(peer);
      if (deadline.expired()) {
        throw TimeoutError(format("shm recv: rank {} timed out waiting for rank {} (tag {})", opt.rank, peer, tag));
      }
      futex_wait(&rh->data_seq, seq, nap(deadline));
    }
  }

  // Reads n bytes into dst, advancing `got` as it goes (so a timeout leaves it exact).
  void read_bytes(int peer, RingHeader* rh, std::byte* dst, size_t n, size_t& got, const Deadline& deadline,
                  uint64_t tag) {
    const std::byte* rd = ring_data(peer, opt.rank);
    while (got < n) {
      const uint64_t tail = rh->tail.load(std::memory_order_relaxed);
      const uint64_t avail = rh->head.load(std::memory_order_seq_cst) - tail;
      if (avail == 0) {
        wait_data(peer, rh, 1, deadline, tag);
        continue;
      }
      const size_t c = static_cast<size_t>(std::min<uint64_t>(avail, n - got));
      copy_from_ring(rd, cap(), tail, dst + got, c);
      consumed(peer, rh, tail + c);
      got += c;
    }
  }

  void stash(Inbox& in, uint64_t tag, std::vector<std::byte> msg) {
    {
      std::lock_guard lock(in.mu);
      in.stash[tag].push_back(std::move(msg));
    }
    in.cv.notify_all();
  }

  // Reads the next message from `peer`'s ring: straight into `out` when it is
  // the one wanted (returns true), else into the stash (returns false).
  // Called by the one thread that holds `in.reading`, without `in.mu`.
  bool read_one(int peer, Inbox& in, uint64_t tag, std::span<std::byte> out, const Deadline& deadline) {
    RingHeader* rh = ring(peer, opt.rank);
    if (rh->broken.load()) {
      throw CommError(format("shm recv: the stream from rank {} to rank {} is corrupt", peer, opt.rank));
    }
    if (!in.partial) {
      wait_data(peer, rh, sizeof(MessageHeader), deadline, tag);
      MessageHeader mh{};
      const uint64_t tail = rh->tail.load(std::memory_order_relaxed);
      copy_from_ring(ring_data(peer, opt.rank), cap(), tail, reinterpret_cast<std::byte*>(&mh), sizeof mh);
      if (mh.magic != kMessageMagic || mh.nbytes > kMaxMessageBytes) {
        rh->broken.store(1);
        throw CommError(
            format("shm recv: corrupt message header from rank {} (magic {}, {} bytes)", peer, mh.magic, mh.nbytes));
      }
      consumed(peer, rh, tail + sizeof mh);
      const size_t nbytes = static_cast<size_t>(mh.nbytes);
      if (mh.tag == tag && nbytes == out.size()) {
        size_t got = 0;
        try {
          read_bytes(peer, rh, out.data(), nbytes, got, deadline, tag);
        } catch (const CommError&) {  // keep what arrived; the next reader finishes the message
          in.partial.emplace(Inbox::Partial{mh.tag, std::vector<std::byte>(nbytes), got});
          if (got > 0) std::memcpy(in.partial->buf.data(), out.data(), got);
          throw;
        }
        return true;
      }
      try {
        in.partial.emplace(Inbox::Partial{mh.tag, std::vector<std::byte>(nbytes), 0});
      } catch (const std::bad_alloc&) {
        rh->broken.store(1);
        throw CommError(
            format("shm recv: cannot buffer a {}-byte message from rank {} (tag {})", nbytes, peer, mh.tag));
      }
    }
    auto& part = *in.partial;
    read_bytes(peer, rh, part.buf.data(), part.buf.size(), part.got, deadline, tag);
    const uint64_t part_tag = part.tag;
    std::vector<std::byte> msg = std::move(part.buf);
    in.partial.reset();
    stash(in, part_tag, std::move(msg));
    return false;
  }

  void recv(int peer, uint64_t tag, std::span<std::byte> out, const Deadline& deadline) {
    check_rank(peer, "recv");
    Inbox& in = *inboxes[static_cast<size_t>(peer)];
    std::unique_lock lock(in.mu);
    for (;;) {
      if (auto it = in.stash.find(tag); it != in.stash.end()) {
        std::vector<std::byte> msg = std::move(it->second.front());
        it->second.pop_front();
        if (it->second.empty()) in.stash.erase(it);
        LOOM_CHECK_T(CommError, msg.size() == out.size(),
                     "shm recv: rank {} expected {} bytes from rank {} (tag {}), got {}", opt.rank, out.size(), peer,
                     tag, msg.size());
        if (!msg.empty()) std::memcpy(out.data(), msg.data(), msg.size());
        return;
      }
      if (peer != opt.rank && !in.reading) {
        in.reading = true;
        lock.unlock();
        bool delivered = false;
        try {
          delivered = read_one(peer, in, tag, out, deadline);
        } catch (...) {
          lock.lock();
          in.reading = false;
          in.cv.notify_all();
          throw;
        }
        lock.lock();
        in.reading = false;
        in.cv.notify_all();
        if (delivered) return;
        continue;
      }
      // Another thread is reading this peer's ring (or this is a message to
      // ourselves): wait for it to stash something.
      check_declared(peer);
      if (deadline.expired()) {
        throw TimeoutError(format("shm recv: rank {} timed out waiting for rank {} (tag {})", opt.rank, peer, tag));
      }
      in.cv.wait_until(lock, std::min(deadline.at, Clock::now() + 50ms));
    }
  }

  void fail_peer(int peer, const std::string& why) {
    check_rank(peer, "fail_peer");
    {
      std::lock_guard lock(lost_mu);
      lost[peer] = why;
    }
    lost_flag[static_cast<size_t>(peer)].store(true, std::memory_order_release);
    Inbox& in = *inboxes[static_cast<size_t>(peer)];
    { std::lock_guard lock(in.mu); }
    in.cv.notify_all();
    if (peer == opt.rank) return;
    Outbox& ob = *outboxes[static_cast<size_t>(peer)];
    {
      std::lock_guard lock(ob.mu);
      drop(peer, ob);
    }
    futex_wake_all(&ring(peer, opt.rank)->data_seq);  // our own threads waiting on that peer's ring
  }
};

std::string ShmTransport::segment_name(const std::string& job_id) {
  LOOM_CHECK(!job_id.empty() && job_id.size() <= 200, "shm: job id must have 1 to 200 characters, got {}",
             job_id.size());
  for (char c : job_id) {
    const bool ok =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
    LOOM_CHECK(ok, "shm: job id '{}' may only hold letters, digits, '.', '_' and '-'", job_id);
  }
  return "/loom-" + job_id;
}

bool ShmTransport::remove_segment(const std::string& job_id) { return ::shm_unlink(segment_name(job_id).c_str()) == 0; }

ShmTransport::ShmTransport(const ShmOptions& options) {
  LOOM_CHECK(options.size >= 1, "shm: world size must be >= 1, got {}", options.size);
  LOOM_CHECK(options.rank >= 0 && options.rank < options.size, "shm: rank {} out of range for world size {}",
             options.rank, options.size);
  LOOM_CHECK(options.ring_nbytes >= 256 && options.ring_nbytes <= (size_t{1} << 30) && options.ring_nbytes % 64 == 0,
             "shm: ring_nbytes must be a multiple of 64 in [256, 1 GiB], got {}", options.ring_nbytes);
  LOOM_CHECK(options.size <= 4096 && Layout(options.size, options.ring_nbytes).total <= (size_t{1} << 40),
             "shm: {} ranks x {}-byte rings need too much shared memory", options.size, options.ring_nbytes);
  LOOM_CHECK(
      options.linger.count() >= 0 && options.attach_timeout.count() >= 0 && options.heartbeat_timeout.count() >= 0,
      "shm: timeouts must not be negative");
  impl_ = std::make_unique<Impl>(options);
  Impl& m = *impl_;
  for (int r = 0; r < options.size; ++r) {
    m.inboxes.push_back(std::make_unique<Impl::Inbox>());
    m.outboxes.push_back(std::make_unique<Impl::Outbox>());
  }
  m.lost_flag = std::vector<std::atomic<bool>>(m.inboxes.size());
  try {
    if (options.rank == 0) {
      m.create();
    } else {
      m.attach();
    }
    m.progress = std::thread([&m] { m.run_progress(); });
  } catch (...) {
    m.close();
    throw;
  }
}

ShmTransport::~ShmTransport() { impl_->close(); }

int ShmTransport::rank() const { return impl_->opt.rank; }
int ShmTransport::size() const { return impl_->opt.size; }

void ShmTransport::send(int peer, uint64_t tag, std::span<const std::byte> data, Deadline deadline) {
  impl_->send(peer, tag, data, deadline);
}

void ShmTransport::recv(int peer, uint64_t tag, std::span<std::byte> out, Deadline deadline) {
  impl_->recv(peer, tag, out, deadline);
}

void ShmTransport::fail_peer(int peer, const std::string& why) { impl_->fail_peer(peer, why); }

}  // namespace loom::comm
