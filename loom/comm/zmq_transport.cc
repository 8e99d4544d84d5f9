#include "loom/comm/zmq_transport.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zmq.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <thread>

namespace loom::comm {
namespace {

constexpr char kWakeEndpoint[] = "inproc://loom-transport-wake";  // inproc names are per context
constexpr char kMonitorEndpoint[] = "inproc://loom-transport-monitor";
constexpr int kHandshakeFailureEvents =
    ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH;
constexpr int kMaxMessagesPerWakeup = 256;  // then look at the other sockets again

std::string zmq_error() { return zmq_strerror(zmq_errno()); }

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

bool is_never(Deadline d) { return d.at == Clock::time_point::max(); }

// Waits on `cv` until `ready()` or the deadline; false on timeout.
template <class Lock, class Pred>
bool wait_until(std::condition_variable& cv, Lock& lock, Deadline d, Pred ready) {
  if (is_never(d)) {
    cv.wait(lock, ready);
    return true;
  }
  return cv.wait_until(lock, d.at, ready);
}

// ZMQ_SNDTIMEO for the time left: -1 = forever, 0 = do not wait.
int timeout_ms(Deadline d) {
  if (is_never(d)) return -1;
  const auto left = std::chrono::ceil<std::chrono::milliseconds>(d.at - Clock::now()).count();
  return static_cast<int>(std::clamp<int64_t>(left, 0, INT_MAX));
}

void set_int(void* socket, int option, int value, const char* name) {
  if (zmq_setsockopt(socket, option, &value, sizeof value) != 0) {
    throw CommError(format("zmq: setting {} to {} failed: {}", name, value, zmq_error()));
  }
}

std::string routing_id(int rank) { return "r" + std::to_string(rank); }

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
      owned_ = wait_until(link_.cv, lock, deadline, [&] { return !link_.busy; });
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
  void handle_message(ZmqMessage (&frames)[3], size_t count);
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
  std::map<std::pair<int, uint64_t>, std::deque<ZmqMessage>> queues;  // (from, tag) -> payloads in order
  std::map<int, std::string> lost;                                    // fail_peer: PeerLostError
  std::map<int, std::string> broken;                                  // malformed stream: CommError
  std::vector<uint64_t> received_from;                                // messages per peer, for diagnostics
  std::string last_drop;
  std::string last_handshake_failure;
  std::string io_failure;  // the I/O thread stopped on an error

  std::atomic<uint64_t> received{0}, dropped{0}, handshakes_failed{0}, zero_copy_sends{0}, copied_sends{0};
};

ZmqTransport::Impl::Impl(int rank_, std::vector<std::string> endpoints_, const SecurityOptions& security,
                         ZmqOptions options_)
    : rank(rank_), endpoints(std::move(endpoints_)), options(options_), insecure(security.insecure) {
  const int n = static_cast<int>(endpoints.size());
  LOOM_CHECK(n >= 1, "ZmqTransport: no endpoints given (one per rank)");
  LOOM_CHECK(rank >= 0 && rank < n, "ZmqTransport: rank {} out of range for {} endpoints", rank, n);
  for (int r = 0; r < n; ++r) {
    const std::string& e = endpoints[static_cast<size_t>(r)];
    LOOM_CHECK(e.starts_with("tcp://") || e.starts_with("ipc://"),
               "ZmqTransport: endpoint of rank {} is \"{}\", expected tcp://host:port or ipc:///path", r, e);
  }
  LOOM_CHECK(options.io_threads >= 1, "ZmqTransport: io_threads must be >= 1, got {}", options.io_threads);
  LOOM_CHECK(options.send_queue_messages >= 0, "ZmqTransport: send_queue_messages must be >= 0, got {}",
             options.send_queue_messages);
  LOOM_CHECK(options.linger.count() >= 0, "ZmqTransport: linger must be >= 0 ms, got {}", options.linger.count());
  check_security(security);
  if (!insecure) keys = std::make_unique<CurveKeys>(derive_curve_keys(security.secret));
  received_from.assign(static_cast<size_t>(n), 0);
  for (int r = 0; r < n; ++r) links.push_back(std::make_unique<PeerLink>());

  context = zmq_ctx_new();
  if (context == nullptr) throw CommError(format("zmq: cannot create a context: {}", zmq_error()));
  try {
    zmq_ctx_set(context, ZMQ_IO_THREADS, options.io_threads);
    zmq_ctx_set(context, ZMQ_MAX_SOCKETS, std::max(ZMQ_MAX_SOCKETS_DFLT, n + 16));
    if (!insecure) zap = std::make_unique<ZapHandler>(context, *keys);

    router = zmq_socket(context, ZMQ_ROUTER);
    if (router == nullptr) throw CommError(format("zmq: cannot create a socket: {}", zmq_error()));
    set_int(router, ZMQ_LINGER, 0, "ZMQ_LINGER");
    set_int(router, ZMQ_ROUTER_HANDOVER, 1, "ZMQ_ROUTER_HANDOVER");  // a peer that reconnects replaces its old pipe
    const uint64_t max_frame = std::max<uint64_t>(options.max_payload_nbytes, wire::kHeaderBytes);
    const int64_t max_msg = max_frame > static_cast<uint64_t>(INT64_MAX) ? -1 : static_cast<int64_t>(max_frame);
    if (zmq_setsockopt(router, ZMQ_MAXMSGSIZE, &max_msg, sizeof max_msg) != 0) {
      throw CommError(format("zmq: setting ZMQ_MAXMSGSIZE failed: {}", zmq_error()));
    }
    if (options.socket_buffer_nbytes > 0) {
      set_int(router, ZMQ_RCVBUF, options.socket_buffer_nbytes, "ZMQ_RCVBUF");
      set_int(router, ZMQ_SNDBUF, options.socket_buffer_nbytes, "ZMQ_SNDBUF");
    }
    if (!insecure) make_curve_server(router, *keys);

    if (zmq_socket_monitor(router, kMonitorEndpoint, kHandshakeFailureEvents) != 0) {
      throw CommError(format("zmq: cannot monitor the ROUTER: {}", zmq_error()));
    }
    monitor = zmq_socket(context, ZMQ_PAIR);
    if (monitor == nullptr || zmq_connect(monitor, kMonitorEndpoint) != 0) {
      throw CommError(format("zmq: cannot connect the monitor: {}", zmq_error()));
    }
    set_int(monitor, ZMQ_LINGER, 0, "ZMQ_LINGER");
    wake = zmq_socket(context, ZMQ_PAIR);
    if (wake == nullptr || zmq_bind(wake, kWakeEndpoint) != 0) {
      throw CommError(format("zmq: cannot bind the wake-up socket: {}", zmq_error()));
    }
    set_int(wake, ZMQ_LINGER, 0, "ZMQ_LINGER");

    const std::string& own = endpoints[static_cast<size_t>(rank)];
    if (zmq_bind(router, own.c_str()) != 0) {
      throw CommError(format("ZmqTransport: rank {} cannot listen on {}: {}", rank, own, zmq_error()));
    }
    io_thread = std::thread([this] { io_loop(); });
  } catch (...) {
    close_sockets();
    throw;
  }
}

ZmqTransport::Impl::~Impl() {
  if (io_thread.joinable()) {
    // Tell the I/O thread to stop; it returns from zmq_poll at once.
    void* stop = zmq_socket(context, ZMQ_PAIR);
    bool sent = false;
    if (stop != nullptr) {
      const int zero = 0;
      zmq_setsockopt(stop, ZMQ_LINGER, &zero, sizeof zero);
      sent = zmq_connect(stop, kWakeEndpoint) == 0 && zmq_send(stop, "", 0, 0) == 0;
      zmq_close(stop);
    }
    if (!sent) zmq_ctx_shutdown(context);  // makes zmq_poll return ETERM instead
    io_thread.join();
  }
  close_sockets();
}

void ZmqTransport::Impl::close_sockets() {
  for (void** s : {&router, &monitor, &wake}) {
    if (*s != nullptr) zmq_close(*s);
    *s = nullptr;
  }
  zap.reset();
  const int linger = static_cast<int>(std::min<int64_t>(options.linger.count(), INT_MAX));
  for (auto& link : links) {
    if (link->dealer == nullptr) continue;
    // Messages still queued to a live peer may leave for up to `linger`;
    // those to a lost peer are dropped.
    const int l = link->lost ? 0 : linger;
    zmq_setsockopt(link->dealer, ZMQ_LINGER, &l, sizeof l);
    zmq_close(link->dealer);
    link->dealer = nullptr;
  }
  if (context != nullptr) {
    while (zmq_ctx_term(context) != 0 && zmq_errno() == EINTR) {
    }
    context = nullptr;
  }
}

void ZmqTransport::Impl::check_peer(int peer, const char* op) const {
  LOOM_CHECK_T(CommError, peer >= 0 && peer < static_cast<int>(endpoints.size()),
               "{}: peer {} out of range for world size {}", op, peer, endpoints.size());
}

// ---- sending ----

void* ZmqTransport::Impl::connect_peer(int peer, PeerLink& link) {
  if (link.dealer != nullptr) return link.dealer;
  void* s = zmq_socket(context, ZMQ_DEALER);
  if (s == nullptr) throw CommError(format("zmq: cannot create a socket: {}", zmq_error()));
  try {
    const std::string id = routing_id(rank);
    if (zmq_setsockopt(s, ZMQ_ROUTING_ID, id.data(), id.size()) != 0) {
      throw CommError(format("zmq: setting ZMQ_ROUTING_ID failed: {}", zmq_error()));
    }
    set_int(s, ZMQ_LINGER, 0, "ZMQ_LINGER");  // the destructor sets the real linger
    set_int(s, ZMQ_SNDHWM, options.send_queue_messages, "ZMQ_SNDHWM");
    if (options.socket_buffer_nbytes > 0) {
      set_int(s, ZMQ_SNDBUF, options.socket_buffer_nbytes, "ZMQ_SNDBUF");
      set_int(s, ZMQ_RCVBUF, options.socket_buffer_nbytes, "ZMQ_RCVBUF");
    }
    if (!insecure) make_curve_client(s, *keys);
    const std::string& e = endpoints[static_cast<size_t>(peer)];
    if (zmq_connect(s, e.c_str()) != 0) {
      throw CommError(format("ZmqTransport: rank {} cannot connect to rank {} at {}: {}", rank, peer, e, zmq_error()));
    }
  } catch (...) {
    zmq_close(s);
    throw;
  }
  link.dealer = s;
  return s;
}

void ZmqTransport::Impl::reset_link(PeerLink& link) {
  if (link.dealer == nullptr) return;
  const int zero = 0;
  zmq_setsockopt(link.dealer, ZMQ_LINGER, &zero, sizeof zero);
  zmq_close(link.dealer);
  link.dealer = nullptr;
}

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

// ---- the public class ----

ZmqTransport::ZmqTransport(int rank, std::vector<std::string> endpoints, const SecurityOptions& security,
                           ZmqOptions options)
    : impl_(std::make_unique<Impl>(rank, std::move(endpoints), security, options)) {}

ZmqTransport::~ZmqTransport() = default;

int ZmqTransport::rank() const { return impl_->rank; }
int ZmqTransport::size() const { return static_cast<int>(impl_->endpoints.size()); }
bool ZmqTransport::secure() const { return !impl_->insecure; }

void ZmqTransport::send(int peer, uint64_t tag, std::span<const std::byte> data, Deadline deadline) {
  impl_->send(peer, tag, data, deadline);
}
void ZmqTransport::recv(int peer, uint64_t tag, std::span<std::byte> out, Deadline deadline) {
  impl_->recv(peer, tag, out, deadline);
}
void ZmqTransport::fail_peer(int peer, const std::string& why) { impl_->fail_peer(peer, why); }

ZmqStats ZmqTransport::stats() const {
  return {.messages_received = impl_->received.load(),
          .messages_dropped = impl_->dropped.load(),
          .handshakes_failed = impl_->handshakes_failed.load(),
          .zero_copy_sends = impl_->zero_copy_sends.load(),
          .copied_sends = impl_->copied_sends.load()};
}

// ---- test helper ----

std::string pick_free_tcp_endpoint(const std::string& host) {
  in_addr addr{};
  LOOM_CHECK(inet_pton(AF_INET, host.c_str(), &addr) == 1, "pick_free_tcp_endpoint: \"{}\" is not an IPv4 address",
             host);
  // Can `port` be listened on? Port 0 asks the kernel for one; the answer is returned.
  auto try_port = [&](int port) -> int {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    const int on = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);  // as ZeroMQ does when it binds
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr = addr;
    sa.sin_port = htons(static_cast<uint16_t>(port));
    int result = -1;
    socklen_t len = sizeof sa;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0 && ::listen(fd, 1) == 0 &&
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len) == 0) {
      result = ntohs(sa.sin_port);
    }
    ::close(fd);
    return result;
  };
  // Below the ephemeral range no outgoing connection takes the port meanwhile.
  int ephemeral_low = 32768;
  if (std::ifstream range("/proc/sys/net/ipv4/ip_local_port_range"); range) range >> ephemeral_low;
  if (ephemeral_low > 12000) {
    std::mt19937 rng(std::random_device{}() ^ static_cast<unsigned>(::getpid()));
    std::uniform_int_distribution<int> pick(10000, ephemeral_low - 1);
    for (int attempt = 0; attempt < 64; ++attempt) {
      if (const int port = try_port(pick(rng)); port > 0) return format("tcp://{}:{}", host, port);
    }
  }
  const int port = try_port(0);
  if (port <= 0) throw CommError(format("pick_free_tcp_endpoint: no free port on {}", host));
  return format("tcp://{}:{}", host, port);
}

}  // namespace loom::comm
