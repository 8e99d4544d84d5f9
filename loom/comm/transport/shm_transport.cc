// The shared-memory transport: construction, closing, and what it knows
// about its peers. Sending is shm_send.cc, receiving shm_recv.cc, the
// segment shm_segment.cc, the all-reduce lanes shm_allreduce.cc.
#include <sys/mman.h>

#include <algorithm>

#include "loom/comm/transport/shm_transport_impl.h"

namespace loom::comm {

using shm::bump;
using shm::futex_wake_all;
using shm::kPollInterval;

void ShmTransport::Impl::close() {
  if (progress.joinable()) {
    linger();
    stopping.store(true);
    bump(slot(opt.rank)->space_bell, slot(opt.rank)->bell_waiting);
    progress.join();
  }
  segment.leave();
}

void ShmTransport::Impl::linger() {
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

void ShmTransport::Impl::check_rank(int peer, const char* op) const {
  LOOM_CHECK_T(CommError, peer >= 0 && peer < opt.size, "shm {}: peer {} out of range for world size {}", op, peer,
               opt.size);
}

void ShmTransport::Impl::check_declared(int peer) {
  if (!lost_flag[static_cast<size_t>(peer)].load(std::memory_order_acquire)) return;
  std::lock_guard lock(lost_mu);
  throw PeerLostError(lost[peer]);  // fail_peer's reason, verbatim
}

void ShmTransport::Impl::check_alive(int peer) {
  check_declared(peer);
  if (std::string why = segment.peer_problem(peer); !why.empty()) throw PeerLostError(why);
}

void ShmTransport::Impl::fail_peer(int peer, const std::string& why) {
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
  LOOM_CHECK(options.allreduce_block_nbytes % 64 == 0 && options.allreduce_block_nbytes <= (size_t{1} << 28),
             "shm: allreduce_block_nbytes must be a multiple of 64 in [0, 256 MiB], got {}",
             options.allreduce_block_nbytes);
  LOOM_CHECK(options.size <= 4096 &&
                 shm::Layout(options.size, options.ring_nbytes, options.allreduce_block_nbytes).total <=
                     (size_t{1} << 40),
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
      m.segment.create();
    } else {
      m.segment.attach();
    }
    m.lanes = std::make_unique<shm::LaneAllreduce>(
        m.segment, options.rank, options.size, [&m](int peer) { m.check_declared(peer); },
        [&m](int peer) { m.check_alive(peer); });
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

shm::LaneAllreduce& ShmTransport::lanes() { return *impl_->lanes; }

}  // namespace loom::comm
