// ZmqTransport's traffic: send() (copied or zero-copy payloads, deadlines,
// resetting a stuck link), recv() from the per-(peer, tag) queues, and the I/O
// thread that validates each incoming message and files it there. The sockets
// themselves are set up and closed in zmq_transport.cc.
#include <zmq.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>

#include "loom/comm/transport/zmq_transport.h"
#include "loom/comm/transport/zmq_transport_impl.h"

namespace loom::comm {

using namespace zmq_detail;

namespace {

constexpr int kMaxMessagesPerWakeup = 256;  // then look at the other sockets again

// Signalled by ZeroMQ when it lets go of a zero-copy payload. notify under
// the lock: the waiter may destroy this object as soon as it sees `done`.
struct Completion {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
};

void release_payload(void* /*data*/, void* hint) {
  auto* c = static_cast<Completion*>(hint);
  std::lock_guard lock(c->mu);
  c->done = true;
  c->cv.notify_all();
}

// ZMQ_SNDTIMEO for the time left: -1 = forever, 0 = do not wait.
int timeout_ms(Deadline d) {
  if (is_never(d)) return -1;
  const auto left = std::chrono::ceil<std::chrono::milliseconds>(d.at - Clock::now()).count();
  return static_cast<int>(std::clamp<int64_t>(left, 0, INT_MAX));
}

// The rank in a routing id "r<rank>", or -1.
int parse_routing_id(std::span<const std::byte> id, int world_size) {
  if (id.size() < 2 || id.size() > 11 || static_cast<char>(id[0]) != 'r') return -1;
  int64_t rank = 0;
  for (size_t i = 1; i < id.size(); ++i) {
    const auto c = static_cast<char>(id[i]);
    if (c < '0' || c > '9') return -1;
    rank = rank * 10 + (c - '0');
  }
  return rank < world_size ? static_cast<int>(rank) : -1;
}

const char* handshake_event_name(int event) {
  switch (event) {
    case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH:
      return "authentication refused";
    case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL:
      return "protocol or CURVE key mismatch";
    default:
      return "handshake failed";
  }
}

}  // namespace

// ---- sending ----

void ZmqTransport::Impl::send_to_self(uint64_t tag, std::span<const std::byte> data) {
  ZmqMessage msg(data.size());
  if (!data.empty()) std::memcpy(msg.data(), data.data(), data.size());
  {
    std::lock_guard lock(mu);
    queues[{rank, tag}].push_back(std::move(msg));
  }
  cv.notify_all();
}

void ZmqTransport::Impl::send(int peer, uint64_t tag, std::span<const std::byte> data, Deadline deadline) {
  check_peer(peer, "send");
  if (peer == rank) return send_to_self(tag, data);
  {
    std::lock_guard lock(mu);
    if (auto it = lost.find(peer); it != lost.end()) {
      throw PeerLostError(it->second);  // fail_peer's reason, verbatim (transport.h)
    }
  }
  auto timeout = [&](const char* what) {
    return TimeoutError(
        format("send: rank {} timed out sending {} bytes to rank {} (tag {}): {}", rank, data.size(), peer, tag, what));
  };
  PeerLink& link = *links[static_cast<size_t>(peer)];
  LinkOwner owner(link, deadline);
  if (!owner.owned()) throw timeout("another thread was still sending to that rank");
  void* dealer = connect_peer(peer, link);

  const wire::HeaderBytes header =
      wire::encode_header({.sender = static_cast<uint32_t>(rank), .tag = tag, .payload_nbytes = data.size()});
  set_int(dealer, ZMQ_SNDTIMEO, timeout_ms(deadline), "ZMQ_SNDTIMEO");
  if (zmq_send(dealer, header.data(), header.size(), ZMQ_SNDMORE) < 0) {
    if (zmq_errno() == EAGAIN) throw timeout("the send queue stayed full (peer slow, or not reachable)");
    throw CommError(format("send: rank {} to rank {}: {}", rank, peer, zmq_error()));
  }

  // The header is queued: the payload frame must follow, or the link is reset
  // (a half-sent message would corrupt the stream).
  if (data.empty() || data.size() < options.zero_copy_min_nbytes) {
    ZmqMessage msg(data.size());
    if (!data.empty()) std::memcpy(msg.data(), data.data(), data.size());
    if (zmq_msg_send(msg.get(), dealer, 0) < 0) {
      const std::string err = zmq_error();
      reset_link(link);
      throw CommError(format("send: rank {} to rank {}: {}", rank, peer, err));
    }
    copied_sends.fetch_add(1, std::memory_order_relaxed);
    return;
  }

  Completion done;
  ZmqMessage msg;
  // ZeroMQ never writes through the pointer of a message it sends.
  zmq_msg_init_data(msg.get(), const_cast<std::byte*>(data.data()), data.size(), release_payload, &done);
  if (zmq_msg_send(msg.get(), dealer, 0) < 0) {
    const std::string err = zmq_error();
    reset_link(link);
    throw CommError(format("send: rank {} to rank {}: {}", rank, peer, err));  // ~msg releases the payload
  }
  zero_copy_sends.fetch_add(1, std::memory_order_relaxed);
  std::unique_lock lock(done.mu);
  // Wait in slices so that a peer declared lost meanwhile (fail_peer) ends the
  // wait at once instead of at the deadline.
  bool peer_lost = false;
  for (;;) {
    const Deadline slice{std::min(deadline.at, Clock::now() + std::chrono::milliseconds(50))};
    if (wait_until(done.cv, lock, slice, [&] { return done.done; })) return;
    peer_lost = link.lost;
    if (peer_lost || deadline.expired()) break;
  }
  // ZeroMQ still holds the caller's bytes. Closing the socket with linger 0
  // makes it let go promptly (no network wait); only then may we return.
  lock.unlock();
  reset_link(link);
  lock.lock();
  done.cv.wait(lock, [&] { return done.done; });
  lock.unlock();
  if (peer_lost) {
    std::lock_guard g(mu);
    auto it = lost.find(peer);
    throw PeerLostError(it != lost.end() ? it->second : format("rank {} lost", peer));
  }
  throw timeout("the payload had not left by the deadline; the connection was reset");
}

// ---- receiving ----

void ZmqTransport::Impl::recv(int peer, uint64_t tag, std::span<std::byte> out, Deadline deadline) {
  check_peer(peer, "recv");
  std::unique_lock lock(mu);
  const std::pair<int, uint64_t> key{peer, tag};
  for (;;) {
    if (auto it = queues.find(key); it != queues.end() && !it->second.empty()) {
      ZmqMessage msg = std::move(it->second.front());
      it->second.pop_front();
      if (it->second.empty()) queues.erase(it);
      lock.unlock();
      LOOM_CHECK_T(CommError, msg.size() == out.size(), "recv: rank {} expected {} bytes from rank {} (tag {}), got {}",
                   rank, out.size(), peer, tag, msg.size());
      if (!out.empty()) std::memcpy(out.data(), msg.data(), out.size());
      return;
    }
    if (auto it = lost.find(peer); it != lost.end()) throw PeerLostError(it->second);
    if (auto it = broken.find(peer); it != broken.end()) {
      throw CommError(format("recv: rank {} cannot trust the stream from rank {}: {}", rank, peer, it->second));
    }
    if (!io_failure.empty()) throw CommError(format("recv: rank {}: the I/O thread stopped: {}", rank, io_failure));
    const bool ready = wait_until(cv, lock, deadline, [&] {
      auto it = queues.find(key);
      return (it != queues.end() && !it->second.empty()) || lost.count(peer) || broken.count(peer) ||
             !io_failure.empty();
    });
    if (!ready) {
      throw TimeoutError(
          format("recv: rank {} timed out waiting for rank {} (tag {}){}", rank, peer, tag, diagnostics(peer)));
    }
  }
}

std::string ZmqTransport::Impl::diagnostics(int peer) const {
  std::string s;
  if (received_from[static_cast<size_t>(peer)] == 0) s += "; nothing has arrived from that rank yet";
  if (const uint64_t failed = handshakes_failed.load(); failed > 0) {
    s += format(
        "; {} incoming connection(s) failed the handshake (last: {}): do all processes use the same "
        "LOOM_JOB_SECRET and the same --insecure setting?",
        failed, last_handshake_failure);
  }
  if (!last_drop.empty()) s += format("; dropped {} malformed message(s), last: {}", dropped.load(), last_drop);
  return s;
}

void ZmqTransport::Impl::fail_peer(int peer, const std::string& why) {
  check_peer(peer, "fail_peer");
  links[static_cast<size_t>(peer)]->lost = true;
  {
    std::lock_guard lock(mu);
    lost[peer] = why;
  }
  cv.notify_all();
}

// ---- the I/O thread ----

void ZmqTransport::Impl::io_loop() {
  try {
    std::vector<zmq_pollitem_t> items = {
        {wake, 0, ZMQ_POLLIN, 0}, {router, 0, ZMQ_POLLIN, 0}, {monitor, 0, ZMQ_POLLIN, 0}};
    if (zap) items.push_back({zap->socket(), 0, ZMQ_POLLIN, 0});
    for (;;) {
      if (zmq_poll(items.data(), static_cast<int>(items.size()), -1) < 0) {
        if (zmq_errno() == EINTR) continue;
        if (zmq_errno() == ETERM) return;
        throw CommError(format("zmq_poll: {}", zmq_error()));
      }
      if (items[0].revents & ZMQ_POLLIN) return;
      if (items[1].revents & ZMQ_POLLIN) receive_ready();
      if (items[2].revents & ZMQ_POLLIN) handle_monitor_event();
      if (items.size() > 3 && (items[3].revents & ZMQ_POLLIN)) zap->handle();
    }
  } catch (const std::exception& e) {
    {
      std::lock_guard lock(mu);
      io_failure = e.what();
    }
    cv.notify_all();
  }
}

void ZmqTransport::Impl::receive_ready() {
  for (int i = 0; i < kMaxMessagesPerWakeup; ++i) {
    // ROUTER delivers a message's frames together: [routing id, header, payload].
    // Frames past the third are read and discarded (the count still refuses them).
    ZmqMessage frames[3];
    ZmqMessage extra;
    size_t count = 0;
    for (bool more = true; more;) {
      ZmqMessage& f = count < 3 ? frames[count] : extra;
      if (zmq_msg_recv(f.get(), router, ZMQ_DONTWAIT) < 0) {
        if (count > 0) break;  // cannot happen (frames arrive together); handle what there is
        if (zmq_errno() == EAGAIN || zmq_errno() == EINTR) return;
        throw CommError(format("zmq_msg_recv: {}", zmq_error()));
      }
      ++count;
      more = f.more();
    }
    handle_message(frames, count);
  }
}

void ZmqTransport::Impl::handle_message(ZmqMessage (&frames)[3], size_t count) {
  const int n = static_cast<int>(endpoints.size());
  const int peer = parse_routing_id(frames[0].bytes(), n);
  if (peer < 0 || peer == rank) {
    drop(format("a message from a connection whose routing id is not a peer rank of world size {}", n));
    return;
  }
  if (count != 3) {
    break_peer(peer, format("sent a message of {} frame(s), expected 2 (header, payload)", count - 1));
    return;
  }
  wire::Header h;
  try {
    h = wire::decode_header(frames[1].bytes(), {.world_size = n, .max_payload_nbytes = options.max_payload_nbytes});
  } catch (const CommError& e) {
    break_peer(peer, e.what());
    return;
  }
  if (h.sender != static_cast<uint32_t>(peer)) {
    break_peer(peer, format("header names sender rank {} on rank {}'s connection", h.sender, peer));
    return;
  }
  if (frames[2].size() != h.payload_nbytes) {
    break_peer(peer, format("payload frame is {} bytes, the header says {}", frames[2].size(), h.payload_nbytes));
    return;
  }
  {
    std::lock_guard lock(mu);
    if (broken.count(peer)) {  // nothing after a broken message can be matched safely
      dropped.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    queues[{peer, h.tag}].push_back(std::move(frames[2]));
    ++received_from[static_cast<size_t>(peer)];
  }
  received.fetch_add(1, std::memory_order_relaxed);
  cv.notify_all();
}

void ZmqTransport::Impl::break_peer(int peer, const std::string& why) {
  dropped.fetch_add(1, std::memory_order_relaxed);
  {
    std::lock_guard lock(mu);
    broken.emplace(peer, format("rank {} {}", peer, why));  // keep the first reason
  }
  cv.notify_all();
}

void ZmqTransport::Impl::drop(const std::string& why) {
  dropped.fetch_add(1, std::memory_order_relaxed);
  std::lock_guard lock(mu);
  last_drop = why;
}

void ZmqTransport::Impl::handle_monitor_event() {
  // A monitor event is two frames: [u16 event, u32 value] and the endpoint.
  for (;;) {
    ZmqMessage event;
    if (zmq_msg_recv(event.get(), monitor, ZMQ_DONTWAIT) < 0) return;
    ZmqMessage address;
    if (event.more()) zmq_msg_recv(address.get(), monitor, ZMQ_DONTWAIT);
    if (event.size() < 6) continue;
    uint16_t id = 0;
    std::memcpy(&id, event.data(), sizeof id);
    if ((id & kHandshakeFailureEvents) == 0) continue;
    handshakes_failed.fetch_add(1, std::memory_order_relaxed);
    std::lock_guard lock(mu);
    last_handshake_failure = format("{} on {}", handshake_event_name(id),
                                    std::string(reinterpret_cast<const char*>(address.data()), address.size()));
  }
}

}  // namespace loom::comm
