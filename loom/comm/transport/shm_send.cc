// The shared-memory transport's sending side: send() copies what fits into
// the ring to the peer and queues the rest in the peer's outbox; the progress
// thread moves queued bytes into the ring as the receiver drains it (and
// keeps this rank's heartbeat fresh).
#include <algorithm>
#include <cstring>
#include <new>

#include "loom/comm/transport/shm_transport_impl.h"

namespace loom::comm {

namespace {

using namespace std::chrono_literals;
using shm::bump;
using shm::futex_wait;
using shm::kMaxMessageBytes;
using shm::kMessageMagic;
using shm::kPollInterval;
using shm::MessageHeader;
using shm::monotonic_ns;
using shm::RankSlot;
using shm::RingHeader;
using shm::WaitingGuard;

void copy_into_ring(std::byte* ring, size_t cap, uint64_t pos, const std::byte* src, size_t n) {
  const size_t off = static_cast<size_t>(pos % cap);
  const size_t first = std::min(n, cap - off);
  std::memcpy(ring + off, src, first);
  if (n > first) std::memcpy(ring, src + first, n - first);
}

}  // namespace

void ShmTransport::Impl::send(int peer, uint64_t tag, std::span<const std::byte> data, const Deadline& deadline) {
  check_rank(peer, "send");
  LOOM_CHECK_T(CommError, data.size() <= kMaxMessageBytes, "shm send: {}-byte message is over the {}-byte limit",
               data.size(), kMaxMessageBytes);
  check_declared(peer);
  if (peer == opt.rank) {
    stash(*inboxes[static_cast<size_t>(peer)], tag, std::vector<std::byte>(data.begin(), data.end()));
    return;
  }
  if (slot(peer)->state.load() == shm::kClosed) check_alive(peer);
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

size_t ShmTransport::Impl::write_some(int peer, std::span<const std::byte> a, std::span<const std::byte> b) {
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

bool ShmTransport::Impl::flush(int peer, Outbox& ob) {
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

void ShmTransport::Impl::recycle(Outbox& ob, Chunk chunk) const {
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

ShmTransport::Impl::Chunk ShmTransport::Impl::take_chunk(Outbox& ob, size_t nbytes) {
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

void ShmTransport::Impl::drop(int peer, Outbox& ob) {
  ob.queue.clear();
  ob.front_off = 0;
  ob.queued = 0;
  ob.pending.store(false);
  ring(opt.rank, peer)->sender_queued.store(0);
  ob.drained.notify_all();
}

void ShmTransport::Impl::run_progress() {
  RankSlot* me = slot(opt.rank);
  const auto beat = std::clamp<std::chrono::milliseconds>(opt.heartbeat_timeout / 5, 10ms, 1000ms);
  const auto idle = segment.heartbeat_ns() > 0 ? std::chrono::nanoseconds(beat) : std::chrono::nanoseconds(1s);
  int64_t next_beat = 0;
  while (!stopping.load()) {
    const uint32_t seq = me->space_bell.load(std::memory_order_seq_cst);
    if (segment.heartbeat_ns() > 0 && monotonic_ns() >= next_beat) {
      segment.beat();
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

}  // namespace loom::comm
