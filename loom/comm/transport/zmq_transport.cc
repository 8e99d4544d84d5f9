// ZmqTransport's sockets: the context, the ROUTER this rank listens on (with
// its monitor and the I/O thread's wake-up socket), one DEALER per peer,
// connected on first use, and the orderly shutdown; then the public class,
// which forwards to Impl. Sending, receiving and the I/O thread are in
// zmq_send_recv.cc.
#include "loom/comm/transport/zmq_transport.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zmq.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <fstream>
#include <random>

#include "loom/comm/transport/zmq_transport_impl.h"

namespace loom::comm {
namespace zmq_detail {

std::string zmq_error() { return zmq_strerror(zmq_errno()); }

void set_int(void* socket, int option, int value, const char* name) {
  if (zmq_setsockopt(socket, option, &value, sizeof value) != 0) {
    throw CommError(format("zmq: setting {} to {} failed: {}", name, value, zmq_error()));
  }
}

}  // namespace zmq_detail

using namespace zmq_detail;

namespace {

constexpr char kWakeEndpoint[] = "inproc://loom-transport-wake";  // inproc names are per context
constexpr char kMonitorEndpoint[] = "inproc://loom-transport-monitor";

// append, not "r" + std::to_string(rank): inlined here, that operator+ draws
// a false -Wrestrict warning from GCC 12.
std::string routing_id(int rank) { return std::string("r").append(std::to_string(rank)); }

}  // namespace

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

// ---- connecting to peers ----

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
