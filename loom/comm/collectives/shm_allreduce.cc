#include "loom/comm/collectives/shm_allreduce.h"

#include <algorithm>
#include <cstring>
#include <thread>
#include <vector>

#include "loom/comm/collectives/collectives.h"

namespace loom::comm::shm {

namespace {

// reduce_many writes a slice in pieces this long, each copied into the
// caller's buffer while it is still in L1.
constexpr size_t kPieceBytes = size_t{16} << 10;

// "f32, sum" for a call's dtype << 8 | op.
std::string describe(uint32_t kind) {
  return format("{}, {}", core::name(static_cast<core::DType>(kind >> 8)), name(static_cast<ReduceOp>(kind & 0xff)));
}

}  // namespace

LaneAllreduce::LaneAllreduce(const Segment& segment, int rank, int size, std::function<void(int)> check_declared,
                             std::function<void(int)> check_alive)
    : segment_(segment),
      rank_(rank),
      size_(size),
      check_declared_(std::move(check_declared)),
      check_alive_(std::move(check_alive)) {
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  spins_ = static_cast<unsigned>(size) <= cores ? 4 * kSpins : kSpins / 8;
  if (!segment_.has_lanes()) return;
  const Layout& l = segment_.layout();
  for (int s = 0; s < kLanes; ++s) {
    std::byte* base = segment_.lane(s);
    lanes_[static_cast<size_t>(s)].header = reinterpret_cast<LaneHeader*>(base);
    lanes_[static_cast<size_t>(s)].progress = reinterpret_cast<RankProgress*>(base + sizeof(LaneHeader));
    lanes_[static_cast<size_t>(s)].blocks = base + l.lane_blocks_off;
  }
}

std::string LaneAllreduce::missing_lane(int stream) const {
  if (size_ < 2 || size_ > kMaxLaneRanks) {
    return format("the shared-memory all-reduce has lanes for worlds of 2 to {} ranks, this one has {}",
                  kMaxLaneRanks, size_);
  }
  if (!segment_.has_lanes()) return "the shared-memory transport was opened without all-reduce lanes "
                                    "(allreduce_block_nbytes = 0)";
  if (stream < 0 || stream >= kLanes) {
    return format("the shared-memory all-reduce has lanes for channels 0 to {}, not {}", kLanes - 1, stream);
  }
  return "";
}

bool LaneAllreduce::broken(int stream) const {
  LOOM_ASSERT(missing_lane(stream).empty());
  return lanes_[static_cast<size_t>(stream)].header->broken.load() != 0;
}

uint64_t LaneAllreduce::rounds(int stream) {
  LOOM_ASSERT(missing_lane(stream).empty());
  Lane& lane = lanes_[static_cast<size_t>(stream)];
  std::lock_guard lock(lane.mu);
  return lane.rounds;
}

std::byte* LaneAllreduce::staging(const Lane& lane, int rank, uint64_t round) const {
  return lane.blocks + (2 * static_cast<size_t>(rank) + (round & 1)) * segment_.layout().block_nbytes;
}

std::byte* LaneAllreduce::result(const Lane& lane, uint64_t round) const {
  return lane.blocks + (2 * static_cast<size_t>(size_) + (round & 1)) * segment_.layout().block_nbytes;
}

void LaneAllreduce::publish(Lane& lane, std::atomic<uint64_t> RankProgress::*field, uint64_t value) const {
  (lane.progress[rank_].*field).store(value, std::memory_order_seq_cst);
  bump(lane.header->bell, lane.header->waiting);
}

void LaneAllreduce::wait_all(Lane& lane, std::atomic<uint64_t> RankProgress::*field, uint64_t target,
                             const Deadline& deadline, const char* what) const {
  int behind = 0;  // the first rank not there yet
  auto all_there = [&] {
    for (; behind < size_; ++behind) {
      if ((lane.progress[behind].*field).load(std::memory_order_acquire) < target) return false;
    }
    return true;
  };
  for (int i = 0; i < spins_; ++i) {
    if (all_there()) return;
    cpu_relax();
  }
  for (;;) {
    const uint32_t seq = lane.header->bell.load(std::memory_order_seq_cst);
    WaitingGuard waiting(lane.header->waiting);
    if (all_there()) return;
    for (int j = behind; j < size_; ++j) {
      if ((lane.progress[j].*field).load(std::memory_order_acquire) < target) check_alive_(j);
    }
    if (deadline.expired()) {
      throw TimeoutError(
          format("shm all-reduce: rank {} timed out waiting for rank {} to {} its block", rank_, behind, what));
    }
    futex_wait(&lane.header->bell, seq, nap(deadline));
  }
}

void LaneAllreduce::check_same_call(const Lane& lane, size_t numel, uint32_t kind) const {
  for (int j = 0; j < size_; ++j) {
    const uint64_t their_numel = lane.progress[j].call_numel.load(std::memory_order_relaxed);
    const uint32_t their_kind = lane.progress[j].call_kind.load(std::memory_order_relaxed);
    if (their_numel != numel || their_kind != kind) {
      throw CommError(format("shm all-reduce: rank {} reduces {} elements ({}, {}) but rank {} reduces {} ({}, {})",
                             rank_, numel, describe(kind), j, their_numel, describe(their_kind)));
    }
  }
}

void LaneAllreduce::run(const LaneCall& a, const Deadline& deadline) {
  if (std::string why = missing_lane(a.stream); !why.empty()) throw CommError(format("shm all-reduce: {}", why));
  LOOM_CHECK(a.op != ReduceOp::Avg, "shm all-reduce: Avg is the caller's Sum, then a division");
  check_reducible(a.dtype, "shm all-reduce");
  for (int p = 0; p < size_; ++p) check_declared_(p);
  Lane& lane = lanes_[static_cast<size_t>(a.stream)];
  std::unique_lock lock(lane.mu, std::defer_lock);
  if (!lock.try_lock_until(deadline.at)) {
    throw TimeoutError(format("shm all-reduce: rank {} timed out waiting for another thread's call on stream {}",
                              rank_, a.stream));
  }
  if (lane.header->broken.load() != 0) {
    throw CommError(format("shm all-reduce: the lane of stream {} is out of use since a call on it failed half way; "
                           "use an algorithm over messages (e.g. ring)",
                           a.stream));
  }
  if (a.numel == 0) return;
  try {
    run_rounds(lane, a, deadline);
  } catch (...) {
    lane.header->broken.store(1);
    bump(lane.header->bell, lane.header->waiting);
    throw;
  }
}

void LaneAllreduce::run_rounds(Lane& lane, const LaneCall& a, const Deadline& deadline) {
  const size_t item = core::itemsize(a.dtype);
  const size_t block_numel = segment_.layout().block_nbytes / item;
  const size_t nrounds = (a.numel - 1) / block_numel + 1;
  const uint64_t first = lane.rounds;
  // Round k of this call covers elements [k * block_numel, ...) of a.data;
  // `mine` is the slice of it this rank reduces.
  struct Round {
    std::byte* data;
    size_t numel;
    ElementRange mine;
  };
  auto round_of = [&](size_t k) {
    const size_t offset = k * block_numel;
    const size_t numel = std::min(block_numel, a.numel - offset);
    return Round{a.data + offset * item, numel, reduce_scatter_range(numel, size_, rank_)};
  };
  // Copies everything but `mine` between the buffer and a block (same offsets).
  auto copy_others = [&](std::byte* to, const std::byte* from, const Round& r) {
    const size_t before = r.mine.offset * item, after = (r.mine.offset + r.mine.numel) * item;
    std::memcpy(to, from, before);
    std::memcpy(to + after, from + after, r.numel * item - after);
  };
  std::vector<const void*> srcs(static_cast<size_t>(size_));
  const size_t piece = std::max<size_t>(1, kPieceBytes / item);

  const uint32_t kind = static_cast<uint32_t>(a.dtype) << 8 | static_cast<uint32_t>(a.op);
  lane.progress[rank_].call_numel.store(a.numel, std::memory_order_relaxed);
  lane.progress[rank_].call_kind.store(kind, std::memory_order_relaxed);

  for (size_t k = 0; k < nrounds; ++k) {
    const uint64_t g = first + k;
    const Round r = round_of(k);
    std::byte* mine = r.data + r.mine.offset * item;
    copy_others(staging(lane, rank_, g), r.data, r);
    publish(lane, &RankProgress::staged, g + 1);
    wait_all(lane, &RankProgress::staged, g + 1, deadline, "stage");
    // Nobody can start its next call before this rank has reduced this
    // round, so every rank's call_* still describe this call here.
    if (k == 0) check_same_call(lane, a.numel, kind);
    std::byte* out = result(lane, g) + r.mine.offset * item;
    for (int j = 0; j < size_; ++j) {
      srcs[static_cast<size_t>(j)] = j == rank_ ? mine : staging(lane, j, g) + r.mine.offset * item;
    }
    for (size_t done = 0; done < r.mine.numel; done += piece) {
      const size_t n = std::min(piece, r.mine.numel - done);
      reduce_many(a.dtype, a.op, srcs, out + done * item, n);
      std::memcpy(mine + done * item, out + done * item, n * item);
      for (auto& s : srcs) s = static_cast<const std::byte*>(s) + n * item;
    }
    publish(lane, &RankProgress::reduced, g + 1);
    if (k > 0) copy_others(round_of(k - 1).data, result(lane, g - 1), round_of(k - 1));
  }
  const uint64_t last = first + nrounds - 1;
  wait_all(lane, &RankProgress::reduced, last + 1, deadline, "reduce");
  copy_others(round_of(nrounds - 1).data, result(lane, last), round_of(nrounds - 1));
  lane.rounds = last + 1;
}

}  // namespace loom::comm::shm
