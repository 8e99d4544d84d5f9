// The one request/reply endpoint over ZeroMQ, used by the coordinator (client
// and server) and both sides of the parameter servers. ROUTER on the serving
// side, one DEALER per peer on the calling side, CURVE keys and the ZAP check
// from the job secret. A caller whose socket belongs to a thread of its own
// (the coordinator client: heartbeats, replies and unasked 'peer lost'
// notices on one DEALER) builds on the same parts: ZmqContext, Socket, poll().
//
//   // given: comm::SecurityOptions sec, std::vector<std::string> server_endpoints, comm::RequestIds ids, std::vector<std::byte> header, std::span<const std::byte> tensor_bytes, std::shared_ptr<const void> tensor_owner, int primary, int backup
//   // Serving: a ROUTER (and the ZAP handler) on one thread.
//   comm::ServerEndpoint server({.bind = "tcp://127.0.0.1:0", .security = sec});
//   server.poll(20ms, [&](const comm::Route& from, std::vector<comm::FramePtr>& frames) {
//     server.reply(from, {comm::OutFrame::copy(frames[0]->bytes())});   // answers with the request's header
//   });
//
//   // Calling: requests with ids, one deadline per call, re-sent to the next
//   // live peer of their list when one is lost.
//   comm::RequestClient client({.peers = server_endpoints, .security = sec, .ids = ids});
//   std::vector<comm::Call> calls(1);
//   calls[0].header = header;                  // the endpoint writes the request id into it (ids.stamp)
//   calls[0].payload = {comm::OutFrame::lend(tensor_bytes, tensor_owner)};   // zero-copy, owned
//   calls[0].peers = {primary, backup};
//   calls[0].on_reply = [&](std::span<const comm::FramePtr> reply) { ... };  // header + payload frames
//   client.call(calls, {.timeout = 30s});      // TimeoutError naming the peer, never a hang
//   client.peer_lost(primary, "server 0 lost");  // thread-safe; unanswered calls go to the backup
//
//   // A socket of one's own thread: one DEALER polled with a timeout, and told
//   // when the peer refuses our keys.
//   comm::ZmqContext ctx(sec, /*serves=*/false);
//   comm::Socket refusals;
//   comm::Socket dealer = comm::Socket::dealer(ctx, server_endpoints[0], {.linger_ms = 500}, &refusals);
//   dealer.send({comm::OutFrame::borrow(header)}, /*dontwait=*/true);   // 0: not queued now, try again
//   comm::PollItem items[2] = {{.socket = &dealer}, {.socket = &refusals}};
//   comm::poll(items, 20ms);                   // 0 ready at the timeout
//   std::vector<comm::FramePtr> frames;
//   while (dealer.recv(frames)) { ... }
//   if (items[1].ready && !comm::handshake_refused(refusals).empty()) { ... }   // the wrong job secret
//
// Zero-copy payloads: a frame of at least kZeroCopyBytes that carries an owner
// goes to ZeroMQ without a copy; ZeroMQ holds the owner (a shared_ptr) until its
// I/O thread is done with the bytes, so the memory cannot be freed under it and
// nobody has to wait for it (or abort) when a peer never takes its message.
// Smaller frames and frames without an owner are copied.
//
// Request ids belong to the protocol's header (RequestIds says where), so a
// reply to a call that was re-sent elsewhere is recognised and dropped.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "loom/comm/wire/security.h"

namespace loom::comm {

// One received ZeroMQ frame. Shared, so a payload can be kept (a dist_sync
// round keeps its pushes) without a copy.
class Frame {
 public:
  Frame();
  ~Frame();
  Frame(const Frame&) = delete;
  Frame& operator=(const Frame&) = delete;
  void* msg() { return &msg_; }  // the zmq_msg_t
  std::span<const std::byte> bytes() const;
  std::string_view view() const {
    const auto b = bytes();
    return {reinterpret_cast<const char*>(b.data()), b.size()};
  }

 private:
  alignas(8) unsigned char msg_[64];  // zmq_msg_t (64 bytes in every libzmq 4.x)
};
using FramePtr = std::shared_ptr<Frame>;

inline constexpr size_t kZeroCopyBytes = 64 * 1024;

// A frame to send: bytes, and optionally who keeps them alive.
struct OutFrame {
  std::span<const std::byte> bytes;
  std::shared_ptr<const void> owner;  // with one, big frames are not copied

  // Copied now into a buffer the frame owns: the caller's bytes may go at once.
  static OutFrame copy(std::span<const std::byte> b);
  static OutFrame copy(std::string_view s) { return copy({reinterpret_cast<const std::byte*>(s.data()), s.size()}); }
  // Copied when sent: the bytes must stay valid until the send returns.
  static OutFrame borrow(std::span<const std::byte> b) { return {b, nullptr}; }
  static OutFrame borrow(std::string_view s) { return borrow({reinterpret_cast<const std::byte*>(s.data()), s.size()}); }
  // Not copied when big: `owner` keeps the bytes alive until ZeroMQ is done.
  static OutFrame lend(std::span<const std::byte> b, std::shared_ptr<const void> owner) { return {b, std::move(owner)}; }
};

// Socket settings shared by both sides.
struct SocketOptions {
  int linger_ms = 0;
  int64_t max_message_bytes = -1;  // ZMQ_MAXMSGSIZE; -1: no limit
  std::string routing_id;          // DEALER: a fixed identity (empty: ZeroMQ picks)
};

// A ZeroMQ context with the job's keys and, on a serving side, the ZAP handler
// (created before any socket binds, so no client slips in unasked).
class ZmqContext {
 public:
  ZmqContext(const SecurityOptions& security, bool serves);
  ~ZmqContext();
  ZmqContext(const ZmqContext&) = delete;
  ZmqContext& operator=(const ZmqContext&) = delete;
  void* get() const { return ctx_; }
  const SecurityOptions& security() const { return security_; }
  const CurveKeys* keys() const { return keys_.get(); }
  ZapHandler* zap() const { return zap_.get(); }

 private:
  SecurityOptions security_;
  std::unique_ptr<CurveKeys> keys_;
  void* ctx_ = nullptr;
  std::unique_ptr<ZapHandler> zap_;
};

// A socket that closes itself.
class Socket {
 public:
  Socket() = default;
  ~Socket() { close(); }
  Socket(Socket&& o) noexcept : s_(o.s_) { o.s_ = nullptr; }
  Socket& operator=(Socket&& o) noexcept;
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;

  // A ROUTER bound at `bind` ("tcp://host:0" picks a free port; see bound()).
  static Socket router(ZmqContext& ctx, const std::string& bind, const SocketOptions& o = {});
  // A DEALER connected to `endpoint`. With `refusals`, also a socket there
  // that hears of every handshake the peer refuses (see handshake_refused());
  // it listens before the DEALER connects, so no refusal goes unheard.
  static Socket dealer(ZmqContext& ctx, const std::string& endpoint, const SocketOptions& o = {},
                       Socket* refusals = nullptr);

  void* get() const { return s_; }
  explicit operator bool() const { return s_ != nullptr; }
  std::string bound() const;  // the endpoint a ROUTER bound, with its port
  void close();
  void set_linger(int ms);

  // Sends the frames as one message (CommError if ZeroMQ refuses); returns the
  // bytes of all frames sent. `dontwait`: 0 instead of blocking when the
  // message cannot go out now.
  size_t send(std::span<const OutFrame> frames, bool dontwait = false) const;
  size_t send(std::initializer_list<OutFrame> frames, bool dontwait = false) const {
    return send(std::span<const OutFrame>(frames.begin(), frames.size()), dontwait);
  }
  // Receives one whole message if one is waiting (never blocks for the first frame).
  bool recv(std::vector<FramePtr>& frames) const;

 private:
  explicit Socket(void* s) : s_(s) {}
  void* s_ = nullptr;
};

// Reads what a `refusals` socket (Socket::dealer) heard: why the peer refused
// a handshake ("authentication failed": the ZAP handler rejected our keys;
// "CURVE handshake failed": wrong server key, or CURVE against plaintext), or
// "" if it refused none. ZeroMQ itself retries a refused handshake in silence,
// so without this a process with the wrong job secret would only time out.
std::string handshake_refused(const Socket& refusals);

// One thing poll() waits on: a socket (skipped when closed) or a file
// descriptor (an eventfd that wakes the thread). `ready`: it is readable.
struct PollItem {
  const Socket* socket = nullptr;
  int fd = -1;
  bool ready = false;
};

// Waits up to `wait` until one of `items` is readable and marks those that
// are; returns how many (0 at the timeout, or when a signal cut the wait
// short). CommError if ZeroMQ cannot poll.
int poll(std::span<PollItem> items, std::chrono::milliseconds wait);

// Where a request came from (the ROUTER's routing id frame).
using Route = FramePtr;

struct ServerEndpointOptions {
  std::string bind = "tcp://127.0.0.1:0";
  SecurityOptions security;
  SocketOptions socket;
};

// The serving side: a ROUTER (and ZAP) plus whatever else the owner's thread
// watches (sockets to other servers, an eventfd that wakes it).
class ServerEndpoint {
 public:
  using OnRequest = std::function<void(const Route& from, std::vector<FramePtr>& frames)>;
  using OnMessage = std::function<void(std::vector<FramePtr>& frames)>;

  explicit ServerEndpoint(const ServerEndpointOptions& o);
  ~ServerEndpoint();
  std::string endpoint() const { return bound_; }
  ZmqContext& context() { return *ctx_; }
  const Socket& router() const { return router_; }  // to send a reply with frames of one's own making

  // Also watch `socket` (messages go to `on_message`; it must outlive the
  // watch), or a file descriptor.
  void watch(const Socket& socket, OnMessage on_message);
  void unwatch(const Socket& socket);
  void watch_fd(int fd, std::function<void()> on_readable);

  // Waits up to `wait`, then answers ZAP, hands every waiting request to
  // `on_request` (at most `max_batch` per call) and every message of a watched
  // socket to its handler. An exception from a handler propagates.
  void poll(std::chrono::milliseconds wait, const OnRequest& on_request, int max_batch = 256);

  // Sends [route] [frames...]; returns the payload bytes sent (after the header frame).
  size_t reply(const Route& to, std::span<const OutFrame> frames);
  size_t reply(const Route& to, std::initializer_list<OutFrame> frames) {
    return reply(to, std::span<const OutFrame>(frames.begin(), frames.size()));
  }

 private:
  std::unique_ptr<ZmqContext> ctx_;
  Socket router_;
  std::string bound_;
  struct Watched {
    const Socket* socket = nullptr;
    int fd = -1;
    OnMessage on_message;
    std::function<void()> on_fd;
  };
  std::vector<Watched> watched_;
};

// How a protocol carries request ids in its header frame (the first frame of
// every request and reply).
struct RequestIds {
  std::function<void(std::vector<std::byte>& header, uint64_t id)> stamp;
  // The id a reply (header frame first) answers; throws CommError for a
  // malformed reply (or one the peer sent because it could not read a request).
  std::function<uint64_t(std::span<const FramePtr> reply)> read;
};

// One request of a call.
struct Call {
  std::vector<std::byte> header;  // the endpoint stamps the id into it
  std::vector<OutFrame> payload;
  std::vector<int> peers;         // who may answer, in order (a replica chain)
  bool optional = false;          // done without an answer when every peer is lost (a goodbye)
  std::function<void(std::span<const FramePtr> reply)> on_reply;  // header and payload frames

  // Filled in by the endpoint.
  int sent_to = -1;
  bool done = false;
};

struct CallOptions {
  std::chrono::milliseconds timeout{30000};
  const char* what = "call";  // for messages: "push", "register", ...
  // Runs between polls; may throw to end the call (e.g. the coordinator is lost).
  std::function<void()> check;
};

struct RequestClientOptions {
  std::vector<std::string> peers;  // endpoints, by peer index
  SecurityOptions security;
  RequestIds ids;
  std::string name = "endpoint";  // in messages: "kvstore"
  SocketOptions socket;
};

struct RequestStats {
  uint64_t requests = 0;
  uint64_t bytes_sent = 0;      // payload frames, headers not counted
  uint64_t bytes_received = 0;  // reply payload frames
};

// The calling side: one DEALER per peer. Not thread-safe, except peer_lost().
class RequestClient {
 public:
  explicit RequestClient(RequestClientOptions o);
  ~RequestClient();
  RequestClient(const RequestClient&) = delete;
  RequestClient& operator=(const RequestClient&) = delete;

  int num_peers() const { return static_cast<int>(o_.peers.size()); }

  // Sends every call to the first live peer of its list, then waits for all
  // replies until one deadline (TimeoutError naming the call and the peer).
  // Calls whose peer is lost meanwhile are re-sent to the next live peer;
  // PeerLostError (with `why` of peer_lost) when no peer of a call is left.
  void call(std::span<Call> calls, const CallOptions& o);

  // Thread-safe: `peer` is gone. Its socket is closed at the next call
  // (dropping what ZeroMQ still queued for it; the owners are released).
  void peer_lost(int peer, const std::string& why);
  bool is_lost(int peer) const;

  const RequestStats& stats() const { return stats_; }

 private:
  int live_peer(const Call& c);
  void send(Call& c, size_t index, std::vector<std::pair<uint64_t, size_t>>& ids);
  void close_lost_sockets();

  RequestClientOptions o_;
  std::unique_ptr<ZmqContext> ctx_;
  std::vector<Socket> dealers_;
  mutable std::mutex mu_;  // lost_, why_
  std::vector<bool> lost_;
  std::vector<std::string> why_;
  uint64_t next_id_ = 1;
  RequestStats stats_;
};

}  // namespace loom::comm
