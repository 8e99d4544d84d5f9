// The shared-memory transport's receiving side: recv() reads the ring from
// the peer, straight into the caller's buffer when the next message is the
// one asked for, else into a stash of complete messages by tag. One thread at
// a time reads a given ring; others wait for it to stash what they want.
#include <algorithm>
#include <cstring>
#include <new>

#include "loom/comm/transport/shm_transport_impl.h"

namespace loom::comm {

namespace {

using namespace std::chrono_literals;
using shm::bump;
using shm::cpu_relax;
using shm::futex_wait;
using shm::kMaxMessageBytes;
using shm::kMessageMagic;
using shm::kSpins;
using shm::MessageHeader;
using shm::nap;
using shm::RingHeader;
using shm::WaitingGuard;

void copy_from_ring(const std::byte* ring, size_t cap, uint64_t pos, std::byte* dst, size_t n) {
  const size_t off = static_cast<size_t>(pos % cap);
  const size_t first = std::min(n, cap - off);
  std::memcpy(dst, ring + off, first);
  if (n > first) std::memcpy(dst + first, ring, n - first);
}

}  // namespace

void ShmTransport::Impl::recv(int peer, uint64_t tag, std::span<std::byte> out, const Deadline& deadline) {
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

bool ShmTransport::Impl::read_one(int peer, Inbox& in, uint64_t tag, std::span<std::byte> out,
                                  const Deadline& deadline) {
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

void ShmTransport::Impl::read_bytes(int peer, RingHeader* rh, std::byte* dst, size_t n, size_t& got,
                                    const Deadline& deadline, uint64_t tag) {
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

void ShmTransport::Impl::wait_data(int peer, RingHeader* rh, size_t need, const Deadline& deadline, uint64_t tag) {
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

void ShmTransport::Impl::consumed(int peer, RingHeader* rh, uint64_t new_tail) {
  rh->tail.store(new_tail, std::memory_order_seq_cst);
  if (rh->sender_queued.load(std::memory_order_seq_cst) != 0) {
    bump(slot(peer)->space_bell, slot(peer)->bell_waiting);
  }
}

void ShmTransport::Impl::stash(Inbox& in, uint64_t tag, std::vector<std::byte> msg) {
  {
    std::lock_guard lock(in.mu);
    in.stash[tag].push_back(std::move(msg));
  }
  in.cv.notify_all();
}

}  // namespace loom::comm
