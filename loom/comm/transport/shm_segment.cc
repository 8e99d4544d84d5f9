#include "loom/comm/transport/shm_segment.h"

#include <fcntl.h>
#include <linux/futex.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <new>
#include <thread>

namespace loom::comm::shm {

using namespace std::chrono_literals;

namespace {

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

Layout::Layout(int size, size_t ring_nbytes, size_t block) {
  const auto n = static_cast<size_t>(size);
  rings_off = align_up(slots_off + n * sizeof(RankSlot), kPage);
  ring_stride = align_up(sizeof(RingHeader) + ring_nbytes, kCacheLine);
  lanes_off = align_up(rings_off + n * n * ring_stride, kPage);
  total = lanes_off;
  if (block > 0 && size > 1 && size <= kMaxLaneRanks) {
    block_nbytes = block;
    lane_blocks_off = align_up(sizeof(LaneHeader) + n * sizeof(RankProgress), kPage);
    lane_stride = align_up(lane_blocks_off + blocks_per_lane(size) * block, kPage);
    total += kLanes * lane_stride;
  }
}

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
  ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAIT, expected, &ts, nullptr, 0);
}

void futex_wake_all(std::atomic<uint32_t>* word) {
  ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
}

void bump(std::atomic<uint32_t>& seq, const std::atomic<uint32_t>& waiting) {
  seq.fetch_add(1, std::memory_order_seq_cst);
  if (waiting.load(std::memory_order_seq_cst) != 0) futex_wake_all(&seq);
}

std::chrono::nanoseconds nap(const Deadline& deadline) {
  auto left = deadline.at - Clock::now();
  return std::min<std::chrono::nanoseconds>(left, kPollInterval);
}

Segment::Segment(const ShmOptions& o)
    : job_id_(o.job_id),
      name_(ShmTransport::segment_name(o.job_id)),
      rank_(o.rank),
      size_(o.size),
      ring_nbytes_(o.ring_nbytes),
      attach_timeout_(o.attach_timeout),
      heartbeat_ns_(o.heartbeat_timeout.count() * 1000000),
      layout_(o.size, o.ring_nbytes, o.allreduce_block_nbytes) {}

// ---- creating and attaching ---------------------------------------------

// Whether the creator recorded in a mapped first page still runs.
bool Segment::creator_live(const std::byte* page) const {
  auto* s0 = reinterpret_cast<const RankSlot*>(page + layout_.slots_off);
  return s0->state.load() == kAttached && pid_alive(s0->pid.load()) &&
         (heartbeat_ns_ == 0 || monotonic_ns() - s0->heartbeat_ns.load() < heartbeat_ns_);
}

// Whether an existing segment under our name belongs to a job that runs.
bool Segment::existing_is_live() const {
  int other = ::shm_open(name_.c_str(), O_RDONLY, 0);
  if (other < 0) return false;
  struct stat st {};
  bool live = false;
  if (::fstat(other, &st) == 0 && static_cast<size_t>(st.st_size) >= kPage) {
    void* p = ::mmap(nullptr, kPage, PROT_READ, MAP_SHARED, other, 0);
    if (p != MAP_FAILED) {
      live = static_cast<SegmentHeader*>(p)->magic.load() == kSegmentMagic && creator_live(static_cast<std::byte*>(p));
      ::munmap(p, kPage);
    }
  }
  ::close(other);
  return live;
}

void Segment::create() {
  for (int attempt = 0;; ++attempt) {
    fd_ = ::shm_open(name_.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
    if (fd_ >= 0) break;
    if (errno != EEXIST || attempt == 3) {
      throw CommError(format("shm: rank 0 cannot create segment {}: {}", name_, errno_text()));
    }
    if (existing_is_live()) {
      throw CommError(format("shm: segment {} belongs to a running job (is job id '{}' used twice, or two ranks 0?)",
                             name_, job_id_));
    }
    ::shm_unlink(name_.c_str());  // left by a job that crashed while starting
  }
  if (::ftruncate(fd_, static_cast<off_t>(layout_.total)) != 0) {
    std::string why = errno_text();
    ::shm_unlink(name_.c_str());
    throw CommError(format("shm: cannot size segment {} to {} bytes: {}", name_, layout_.total, why));
  }
  // Reserve the memory now: running out of /dev/shm later would be SIGBUS.
  if (int err = ::posix_fallocate(fd_, 0, static_cast<off_t>(layout_.total)); err != 0) {
    ::shm_unlink(name_.c_str());
    throw CommError(
        format("shm: cannot reserve {} bytes in /dev/shm for {}: {}", layout_.total, name_, std::strerror(err)));
  }
  map_all();
  auto* h = header();
  h->version = kLayoutVersion;
  h->world_size = size_;
  h->ring_nbytes = ring_nbytes_;
  h->total_nbytes = layout_.total;
  h->creator_pid = static_cast<int32_t>(::getpid());
  h->lane_block_nbytes = layout_.block_nbytes;
  for (int r = 0; r < size_; ++r) new (slot(r)) RankSlot{};
  for (int from = 0; from < size_; ++from) {
    for (int to = 0; to < size_; ++to) new (ring(from, to)) RingHeader{};
  }
  for (int s = 0; has_lanes() && s < kLanes; ++s) {
    new (lane(s)) LaneHeader{};
    auto* progress = reinterpret_cast<RankProgress*>(lane(s) + sizeof(LaneHeader));
    for (int r = 0; r < size_; ++r) new (progress + r) RankProgress{};
  }
  claim_slot();
  h->magic.store(kSegmentMagic, std::memory_order_release);
  count_attached();
}

void Segment::attach() {
  const auto deadline = Clock::now() + attach_timeout_;
  auto backoff = 1ms;
  std::string problem;
  while (!try_attach(problem)) {
    if (Clock::now() >= deadline) {
      throw TimeoutError(format("shm: rank {} gave up attaching to {} after {} ms: {}", rank_, name_,
                                attach_timeout_.count(), problem));
    }
    std::this_thread::sleep_for(backoff);
    backoff = std::min<std::chrono::milliseconds>(backoff * 2, 20ms);
  }
}

// One attempt; false (with the reason) when the segment is not there or not ready yet.
bool Segment::try_attach(std::string& problem) {
  int f = ::shm_open(name_.c_str(), O_RDWR, 0);
  if (f < 0) {
    if (errno != ENOENT) throw CommError(format("shm: rank {} cannot open {}: {}", rank_, name_, errno_text()));
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
    throw CommError(format("shm: rank {} cannot map {}: {}", rank_, name_, errno_text()));
  }
  auto* h = static_cast<SegmentHeader*>(p);
  const bool ready = h->magic.load(std::memory_order_acquire) == kSegmentMagic;
  const bool live = ready && creator_live(static_cast<std::byte*>(p));
  const uint32_t version = h->version;
  const int32_t world = h->world_size;
  const uint64_t ring_nbytes = h->ring_nbytes, total = h->total_nbytes, block = h->lane_block_nbytes;
  ::munmap(p, kPage);
  if (!ready || !live) {
    ::close(f);
    problem = !ready ? "rank 0 has not finished creating the segment"
                     : "the segment there is stale (its rank 0 is gone; a new rank 0 will replace it)";
    return false;
  }
  if (version != kLayoutVersion || world != size_ || ring_nbytes != ring_nbytes_ || total != layout_.total ||
      block != layout_.block_nbytes || static_cast<uint64_t>(st.st_size) != total) {
    ::close(f);
    throw CommError(
        format("shm: segment {} has layout v{} for {} ranks with {}-byte rings and {}-byte all-reduce blocks; "
               "rank {} expects v{}, {} ranks, {}-byte rings, {}-byte blocks",
               name_, version, world, ring_nbytes, block, rank_, kLayoutVersion, size_, ring_nbytes_,
               layout_.block_nbytes));
  }
  fd_ = f;
  map_all();
  claim_slot();
  count_attached();
  return true;
}

void Segment::map_all() {
  void* p = ::mmap(nullptr, layout_.total, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
  if (p == MAP_FAILED) {
    throw CommError(format("shm: cannot map {} bytes of {}: {}", layout_.total, name_, errno_text()));
  }
  base_ = static_cast<std::byte*>(p);
}

void Segment::claim_slot() {
  RankSlot* s = slot(rank_);
  uint32_t expected = kAbsent;
  if (!s->state.compare_exchange_strong(expected, kAttached)) {
    throw CommError(format("shm: rank {} of job '{}' is already taken (pid {}, {})", rank_, job_id_, s->pid.load(),
                           expected == kAttached ? "attached" : "closed"));
  }
  s->heartbeat_ns.store(monotonic_ns());
  s->pid.store(static_cast<int32_t>(::getpid()));
  claimed_ = true;
}

// The last rank to attach removes the name: the mappings keep the memory.
void Segment::count_attached() {
  if (header()->attached.fetch_add(1) + 1 == static_cast<uint32_t>(size_) && name_is(name_, fd_)) {
    ::shm_unlink(name_.c_str());
  }
}

void Segment::leave() {
  if (base_ != nullptr) {
    if (claimed_) slot(rank_)->state.store(kClosed);
    for (int p = 0; p < size_; ++p) {  // let waiting peers see it now rather than at their next poll
      if (p == rank_) continue;
      bump(ring(rank_, p)->data_seq, ring(rank_, p)->reader_waiting);
      bump(slot(p)->space_bell, slot(p)->bell_waiting);
    }
    for (int s = 0; has_lanes() && s < kLanes; ++s) {
      auto* lh = reinterpret_cast<LaneHeader*>(lane(s));
      bump(lh->bell, lh->waiting);
    }
    if (rank_ == 0 && claimed_ && header()->attached.load() < static_cast<uint32_t>(size_) && name_is(name_, fd_)) {
      ::shm_unlink(name_.c_str());
    }
    ::munmap(base_, layout_.total);
    base_ = nullptr;
  }
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

// ---- peers --------------------------------------------------------------

std::string Segment::peer_problem(int peer) const {
  RankSlot* s = slot(peer);
  const uint32_t state = s->state.load();
  if (state == kClosed) return format("rank {} lost: it closed its shared-memory transport", peer);
  if (state != kAttached) return "";  // not there yet: it may still come
  const int32_t pid = s->pid.load();
  // claim_slot takes the slot (state) before it writes pid and heartbeat: a
  // rank seen attached with pid 0 is attaching right now.
  if (pid <= 0) return "";
  if (!pid_alive(pid)) return format("rank {} lost: its process (pid {}) is gone", peer, pid);
  if (heartbeat_ns_ > 0) {
    const int64_t silent_ns = monotonic_ns() - s->heartbeat_ns.load();
    if (silent_ns > heartbeat_ns_) {
      return format("rank {} lost: no heartbeat for {} ms (pid {})", peer, silent_ns / 1000000, pid);
    }
  }
  return "";
}

void Segment::beat() const { slot(rank_)->heartbeat_ns.store(monotonic_ns(), std::memory_order_relaxed); }

}  // namespace loom::comm::shm
