// Internal to the ZeroMQ transport: the state behind ZmqTransport (sockets,
// peer links, receive queues) and the helpers its two source files share.
// zmq_transport.cc sets up and tears down the sockets and connects to peers;
// zmq_send_recv.cc sends, receives, and runs the I/O thread that files
// incoming messages. Not part of the public API; see zmq_transport.h.
#pragma once

#include <zmq.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "loom/comm/transport/zmq_transport.h"

namespace loom::comm {
namespace zmq_detail {

inline constexpr int kHandshakeFailureEvents =
    ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH;

std::string zmq_error();

void set_int(void* socket, int option, int value, const char* name);

// An owned zmq_msg_t.
class ZmqMessage {
 public:
  ZmqMessage() { zmq_msg_init(&msg_); }
  explicit ZmqMessage(size_t nbytes) {
    if (zmq_msg_init_size(&msg_, nbytes) != 0)
      throw CommError(format("zmq: cannot allocate a {}-byte message", nbytes));
  }
  ZmqMessage(ZmqMessage&& other) noexcept {
    zmq_msg_init(&msg_);
    zmq_msg_move(&msg_, &other.msg_);
  }
  ZmqMessage& operator=(ZmqMessage&& other) noexcept {
    if (this != &other) zmq_msg_move(&msg_, &other.msg_);  // releases what msg_ held
    return *this;
  }
  ZmqMessage(const ZmqMessage&) = delete;
  ZmqMessage& operator=(const ZmqMessage&) = delete;
  ~ZmqMessage() { zmq_msg_close(&msg_); }

  zmq_msg_t* get() { return &msg_; }
  std::byte* data() { return static_cast<std::byte*>(zmq_msg_data(&msg_)); }
  size_t size() const { return zmq_msg_size(&msg_); }
  bool more() const { return zmq_msg_more(&msg_) != 0; }
  std::span<const std::byte> bytes() { return {data(), size()}; }

 private:
  zmq_msg_t msg_;
};

inline bool is_never(Deadline d) { return d.at == Clock::time_point::max(); }

// Waits on `cv` until `ready()` or the deadline; false on timeout.
template <class Lock, class Pred>
bool wait_until(std::condition_variable& cv, Lock& lock, Deadline d, Pred ready) {
  if (is_never(d)) {
    cv.wait(lock, ready);
    return true;
  }
  return cv.wait_until(lock, d.at, ready);
}

}  // namespace zmq_detail

struct ZmqTransport::Impl {
  // The DEALER to one peer. One sender at a time owns it (`busy`); waiting for
  // it honours the deadline, which a plain mutex could not.
  struct PeerLink {
    std::mutex mu;
    std::condition_variable cv;
    bool busy = false;
    void* dealer = nullptr;         // touched only by the owner
    std::atomic<bool> lost{false};  // fail_peer: close without linger
  };
  class LinkOwner {  // RAII ownership of a PeerLink
   public:
    LinkOwner(PeerLink& link, Deadline deadline) : link_(link) {
      std::unique_lock lock(link_.mu);
      owned_ = zmq_detail::wait_until(link_.cv, lock, deadline, [&] { return !link_.busy; });
      if (owned_) link_.busy = true;
    }
    ~LinkOwner() {
      if (!owned_) return;
      {
        std::lock_guard lock(link_.mu);
        link_.busy = false;
      }
      link_.cv.notify_one();
    }
    LinkOwner(const LinkOwner&) = delete;
    LinkOwner& operator=(const LinkOwner&) = delete;
    bool owned() const { return owned_; }

   private:
    PeerLink& link_;
    bool owned_ = false;
  };

  Impl(int rank, std::vector<std::string> endpoints, const SecurityOptions& security, ZmqOptions options);
  ~Impl();
  void close_sockets();

  void send(int peer, uint64_t tag, std::span<const std::byte> data, Deadline deadline);
  void send_to_self(uint64_t tag, std::span<const std::byte> data);
  void recv(int peer, uint64_t tag, std::span<std::byte> out, Deadline deadline);
  void fail_peer(int peer, const std::string& why);

  void io_loop();
  void receive_ready();
  void handle_message(zmq_detail::ZmqMessage (&frames)[3], size_t count);
  void handle_monitor_event();
  void break_peer(int peer, const std::string& why);
  void drop(const std::string& why);
  void* connect_peer(int peer, PeerLink& link);
  void reset_link(PeerLink& link);
  void check_peer(int peer, const char* op) const;
  std::string diagnostics(int peer) const;  // caller holds mu

  int rank;
  std::vector<std::string> endpoints;
  ZmqOptions options;
  bool insecure;
  std::unique_ptr<CurveKeys> keys;  // null when insecure

  void* context = nullptr;
  std::unique_ptr<ZapHandler> zap;  // bound before the ROUTER, so no client slips in unasked
  void* router = nullptr;           // these three belong to the I/O thread while it runs
  void* monitor = nullptr;
  void* wake = nullptr;
  std::vector<std::unique_ptr<PeerLink>> links;
  std::thread io_thread;

  // Received messages and peer states: the I/O thread fills, recv() takes.
  mutable std::mutex mu;
  std::condition_variable cv;
  std::map<std::pair<int, uint64_t>, std::deque<zmq_detail::ZmqMessage>> queues;  // (from, tag) -> payloads in order
  std::map<int, std::string> lost;                                                // fail_peer: PeerLostError
  std::map<int, std::string> broken;                                              // malformed stream: CommError
  std::vector<uint64_t> received_from;                                            // messages per peer, for diagnostics
  std::string last_drop;
  std::string last_handshake_failure;
  std::string io_failure;  // the I/O thread stopped on an error

  std::atomic<uint64_t> received{0}, dropped{0}, handshakes_failed{0}, zero_copy_sends{0}, copied_sends{0};
};

}  // namespace loom::comm
