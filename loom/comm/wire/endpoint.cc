#include "loom/comm/wire/endpoint.h"

#include <zmq.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>

#include "loom/core/error.h"

namespace loom::comm {
namespace {

using Clock = std::chrono::steady_clock;

static_assert(sizeof(zmq_msg_t) == 64, "Frame holds a zmq_msg_t in 64 bytes");

std::string zmq_error() { return zmq_strerror(zmq_errno()); }

void set_int(void* s, int option, int value, const char* name) {
  if (zmq_setsockopt(s, option, &value, sizeof value) != 0) {
    throw CommError(format("zmq: setting {} failed: {}", name, zmq_error()));
  }
}

void apply(void* s, const SocketOptions& o) {
  set_int(s, ZMQ_LINGER, o.linger_ms, "ZMQ_LINGER");
  // Requests and replies are bounded by the protocols (a caller waits for its
  // replies), so queues never grow without bound; a limit would make a ROUTER
  // drop messages instead of blocking.
  set_int(s, ZMQ_SNDHWM, 0, "ZMQ_SNDHWM");
  set_int(s, ZMQ_RCVHWM, 0, "ZMQ_RCVHWM");
  if (o.max_message_bytes >= 0 &&
      zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &o.max_message_bytes, sizeof o.max_message_bytes) != 0) {
    throw CommError(format("zmq: setting ZMQ_MAXMSGSIZE failed: {}", zmq_error()));
  }
  if (!o.routing_id.empty() && zmq_setsockopt(s, ZMQ_ROUTING_ID, o.routing_id.data(), o.routing_id.size()) != 0) {
    throw CommError(format("zmq: setting the routing id failed: {}", zmq_error()));
  }
}

// "tcp://host:0" -> "tcp://host:*" (ZeroMQ's spelling of "any free port").
std::string bind_address(const std::string& bind) {
  if (bind.size() > 2 && bind.ends_with(":0")) return bind.substr(0, bind.size() - 1) + "*";
  return bind;
}

void release_owner(void* /*data*/, void* hint) { delete static_cast<std::shared_ptr<const void>*>(hint); }

}  // namespace

// ---- Frame ------------------------------------------------------------------

Frame::Frame() { zmq_msg_init(reinterpret_cast<zmq_msg_t*>(msg_)); }
Frame::~Frame() { zmq_msg_close(reinterpret_cast<zmq_msg_t*>(msg_)); }
std::span<const std::byte> Frame::bytes() const {
  auto* m = reinterpret_cast<zmq_msg_t*>(const_cast<unsigned char*>(msg_));
  return {static_cast<const std::byte*>(zmq_msg_data(m)), zmq_msg_size(m)};
}

// ---- OutFrame ---------------------------------------------------------------

OutFrame OutFrame::copy(std::span<const std::byte> b) {
  auto buf = std::make_shared<std::vector<std::byte>>(b.begin(), b.end());
  return {std::span<const std::byte>(*buf), std::move(buf)};
}

// ---- ZmqContext -------------------------------------------------------------

ZmqContext::ZmqContext(const SecurityOptions& security, bool serves) : security_(security) {
  check_security(security_);
  if (!security_.insecure) keys_ = std::make_unique<CurveKeys>(derive_curve_keys(security_.secret));
  ctx_ = zmq_ctx_new();
  LOOM_CHECK_T(CommError, ctx_ != nullptr, "zmq: cannot create a context: {}", zmq_error());
  try {
    if (serves && keys_) zap_ = std::make_unique<ZapHandler>(ctx_, *keys_);
  } catch (...) {
    zmq_ctx_term(ctx_);
    throw;
  }
}

ZmqContext::~ZmqContext() {
  zap_.reset();
  if (ctx_ != nullptr) {
    while (zmq_ctx_term(ctx_) != 0 && zmq_errno() == EINTR) {
    }
  }
}

// ---- Socket -----------------------------------------------------------------

Socket& Socket::operator=(Socket&& o) noexcept {
  if (this != &o) {
    close();
    s_ = o.s_;
    o.s_ = nullptr;
  }
  return *this;
}

void Socket::close() {
  if (s_ != nullptr) zmq_close(s_);
  s_ = nullptr;
}

void Socket::set_linger(int ms) {
  if (s_ != nullptr) zmq_setsockopt(s_, ZMQ_LINGER, &ms, sizeof ms);
}

Socket Socket::router(ZmqContext& ctx, const std::string& bind, const SocketOptions& o) {
  Socket s(zmq_socket(ctx.get(), ZMQ_ROUTER));
  LOOM_CHECK_T(CommError, s.s_ != nullptr, "zmq: cannot create a ROUTER: {}", zmq_error());
  apply(s.s_, o);
  set_int(s.s_, ZMQ_ROUTER_HANDOVER, 1, "ZMQ_ROUTER_HANDOVER");  // a peer that reconnects keeps its identity
  if (ctx.keys() != nullptr) make_curve_server(s.s_, *ctx.keys());
  if (zmq_bind(s.s_, bind_address(bind).c_str()) != 0) {
    throw CommError(format("cannot listen on {}: {}", bind, zmq_error()));
  }
  return s;
}

Socket Socket::dealer(ZmqContext& ctx, const std::string& endpoint, const SocketOptions& o, Socket* refusals) {
  Socket s(zmq_socket(ctx.get(), ZMQ_DEALER));
  LOOM_CHECK_T(CommError, s.s_ != nullptr, "zmq: cannot create a DEALER: {}", zmq_error());
  apply(s.s_, o);
  if (ctx.keys() != nullptr) make_curve_client(s.s_, *ctx.keys());
  if (refusals != nullptr) {
    // ZeroMQ publishes the socket's events on an inproc PAIR; its name only
    // has to be unique within the context.
    static std::atomic<uint64_t> next_monitor{0};
    const std::string name = format("inproc://loom-refusals-{}", next_monitor++);
    if (zmq_socket_monitor(s.s_, name.c_str(),
                           ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                               ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) != 0) {
      throw CommError(format("zmq: cannot watch the DEALER's handshakes: {}", zmq_error()));
    }
    Socket pair(zmq_socket(ctx.get(), ZMQ_PAIR));
    LOOM_CHECK_T(CommError, pair.s_ != nullptr, "zmq: cannot create a PAIR: {}", zmq_error());
    set_int(pair.s_, ZMQ_LINGER, 0, "ZMQ_LINGER");
    if (zmq_connect(pair.s_, name.c_str()) != 0) {
      throw CommError(format("zmq: cannot listen to the DEALER's handshakes: {}", zmq_error()));
    }
    *refusals = std::move(pair);
  }
  if (zmq_connect(s.s_, endpoint.c_str()) != 0) {
    throw CommError(format("cannot connect to {}: {}", endpoint, zmq_error()));
  }
  return s;
}

std::string Socket::bound() const {
  char buf[256] = {};
  size_t len = sizeof buf;
  zmq_getsockopt(s_, ZMQ_LAST_ENDPOINT, buf, &len);
  return std::string(buf, strnlen(buf, len));
}

size_t Socket::send(std::span<const OutFrame> frames, bool dontwait) const {
  size_t total = 0;
  for (size_t i = 0; i < frames.size(); ++i) {
    const OutFrame& f = frames[i];
    zmq_msg_t m;
    if (f.owner && f.bytes.size() >= kZeroCopyBytes) {
      // ZeroMQ's I/O thread (or zmq_msg_close on failure) releases the owner.
      zmq_msg_init_data(&m, const_cast<std::byte*>(f.bytes.data()), f.bytes.size(), &release_owner,
                        new std::shared_ptr<const void>(f.owner));
    } else {
      zmq_msg_init_size(&m, f.bytes.size());
      if (!f.bytes.empty()) std::memcpy(zmq_msg_data(&m), f.bytes.data(), f.bytes.size());
    }
    const int flags = (i + 1 < frames.size() ? ZMQ_SNDMORE : 0) | (dontwait ? ZMQ_DONTWAIT : 0);
    if (zmq_msg_send(&m, s_, flags) < 0) {
      const int err = zmq_errno();
      zmq_msg_close(&m);
      if (dontwait && err == EAGAIN && i == 0) return 0;
      throw CommError(format("zmq: send failed: {}", zmq_strerror(err)));
    }
    total += f.bytes.size();
  }
  return total;
}

bool Socket::recv(std::vector<FramePtr>& frames) const {
  frames.clear();
  for (;;) {
    auto f = std::make_shared<Frame>();
    auto* m = static_cast<zmq_msg_t*>(f->msg());
    if (zmq_msg_recv(m, s_, frames.empty() ? ZMQ_DONTWAIT : 0) < 0) {
      if (frames.empty() && (zmq_errno() == EAGAIN || zmq_errno() == EINTR)) return false;
      throw CommError(format("zmq: receive failed: {}", zmq_error()));
    }
    const bool more = zmq_msg_more(m) != 0;
    frames.push_back(std::move(f));
    if (!more) return true;
  }
}

std::string handshake_refused(const Socket& refusals) {
  std::string why;
  std::vector<FramePtr> event;  // [u16 event, u32 value] [the peer's endpoint]
  while (refusals.recv(event)) {
    const auto head = event[0]->bytes();
    if (head.size() < 6) continue;
    uint16_t code = 0;
    std::memcpy(&code, head.data(), sizeof code);
    why = code == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH ? "authentication failed" : "CURVE handshake failed";
  }
  return why;
}

// ---- poll -------------------------------------------------------------------

int poll(std::span<PollItem> items, std::chrono::milliseconds wait) {
  std::vector<zmq_pollitem_t> zitems(items.size());
  for (size_t i = 0; i < items.size(); ++i) {
    void* s = items[i].socket != nullptr ? items[i].socket->get() : nullptr;
    const bool watched = s != nullptr || (items[i].socket == nullptr && items[i].fd >= 0);
    zitems[i] = {s, items[i].fd, static_cast<short>(watched ? ZMQ_POLLIN : 0), 0};
    items[i].ready = false;
  }
  const int n = zmq_poll(zitems.data(), static_cast<int>(zitems.size()), static_cast<long>(wait.count()));
  if (n < 0) {
    if (zmq_errno() == EINTR) return 0;
    throw CommError(format("zmq: poll failed: {}", zmq_error()));
  }
  for (size_t i = 0; i < items.size(); ++i) items[i].ready = (zitems[i].revents & ZMQ_POLLIN) != 0;
  return n;
}

// ---- ServerEndpoint ---------------------------------------------------------

ServerEndpoint::ServerEndpoint(const ServerEndpointOptions& o)
    : ctx_(std::make_unique<ZmqContext>(o.security, /*serves=*/true)) {
  router_ = Socket::router(*ctx_, o.bind, o.socket);
  bound_ = router_.bound();
}

ServerEndpoint::~ServerEndpoint() {
  router_.close();
  watched_.clear();
}

void ServerEndpoint::watch(const Socket& socket, OnMessage on_message) {
  watched_.push_back({.socket = &socket, .on_message = std::move(on_message)});
}

void ServerEndpoint::unwatch(const Socket& socket) {
  std::erase_if(watched_, [&](const Watched& w) { return w.socket == &socket; });
}

void ServerEndpoint::watch_fd(int fd, std::function<void()> on_readable) {
  watched_.push_back({.fd = fd, .on_fd = std::move(on_readable)});
}

void ServerEndpoint::poll(std::chrono::milliseconds wait, const OnRequest& on_request, int max_batch) {
  std::vector<zmq_pollitem_t> items;
  items.push_back({router_.get(), 0, ZMQ_POLLIN, 0});
  ZapHandler* zap = ctx_->zap();
  items.push_back({zap ? zap->socket() : nullptr, -1, static_cast<short>(zap ? ZMQ_POLLIN : 0), 0});
  for (const Watched& w : watched_) items.push_back({w.socket ? w.socket->get() : nullptr, w.fd, ZMQ_POLLIN, 0});
  if (zmq_poll(items.data(), static_cast<int>(items.size()), static_cast<long>(wait.count())) < 0) {
    if (zmq_errno() == EINTR) return;
    throw CommError(format("zmq: poll failed: {}", zmq_error()));
  }
  if (zap && (items[1].revents & ZMQ_POLLIN)) zap->handle();
  std::vector<FramePtr> frames;
  if (items[0].revents & ZMQ_POLLIN) {
    for (int n = 0; n < max_batch && router_.recv(frames); ++n) {
      if (frames.size() < 2) continue;  // a routing id alone: nothing to answer
      const Route from = frames[0];
      frames.erase(frames.begin());
      on_request(from, frames);
    }
  }
  // Handlers may add or remove watches: iterate over a copy of the list.
  const std::vector<Watched> now = watched_;
  for (size_t i = 0; i < now.size(); ++i) {
    if (!(items[i + 2].revents & ZMQ_POLLIN)) continue;
    if (now[i].on_fd) {
      now[i].on_fd();
      continue;
    }
    const bool still = std::any_of(watched_.begin(), watched_.end(), [&](const Watched& w) { return w.socket == now[i].socket; });
    if (!still) continue;
    while (now[i].socket->recv(frames)) now[i].on_message(frames);
  }
}

size_t ServerEndpoint::reply(const Route& to, std::span<const OutFrame> frames) {
  std::vector<OutFrame> all;
  all.reserve(frames.size() + 1);
  all.push_back(OutFrame::borrow(to->bytes()));
  all.insert(all.end(), frames.begin(), frames.end());
  router_.send(all);
  size_t payload = 0;  // after the header
  for (size_t i = 1; i < frames.size(); ++i) payload += frames[i].bytes.size();
  return payload;
}

// ---- RequestClient ----------------------------------------------------------

RequestClient::RequestClient(RequestClientOptions o)
    : o_(std::move(o)), ctx_(std::make_unique<ZmqContext>(o_.security, /*serves=*/false)) {
  LOOM_CHECK(o_.ids.stamp && o_.ids.read, "{}: RequestClient needs the protocol's request ids", o_.name);
  lost_.assign(o_.peers.size(), false);
  why_.assign(o_.peers.size(), "");
  for (const auto& e : o_.peers) dealers_.push_back(Socket::dealer(*ctx_, e, o_.socket));
}

RequestClient::~RequestClient() { dealers_.clear(); }

void RequestClient::peer_lost(int peer, const std::string& why) {
  std::lock_guard lock(mu_);
  if (peer < 0 || peer >= num_peers()) return;
  if (!lost_[static_cast<size_t>(peer)]) why_[static_cast<size_t>(peer)] = why;
  lost_[static_cast<size_t>(peer)] = true;
}

bool RequestClient::is_lost(int peer) const {
  std::lock_guard lock(mu_);
  return peer >= 0 && peer < num_peers() && lost_[static_cast<size_t>(peer)];
}

void RequestClient::close_lost_sockets() {
  std::lock_guard lock(mu_);
  for (size_t s = 0; s < dealers_.size(); ++s) {
    if (lost_[s] && dealers_[s]) dealers_[s].close();  // linger 0: queued messages (and their owners) are dropped
  }
}

int RequestClient::live_peer(const Call& c) {
  std::lock_guard lock(mu_);
  for (int s : c.peers) {
    LOOM_ASSERT(s >= 0 && s < num_peers());
    if (!lost_[static_cast<size_t>(s)]) return s;
  }
  if (c.optional) return -1;
  const int first = c.peers.empty() ? -1 : c.peers.front();
  throw PeerLostError(format("{}: no live peer left for a request ({})", o_.name,
                             first >= 0 ? why_[static_cast<size_t>(first)] : std::string("no peers named")));
}

void RequestClient::send(Call& c, size_t index, std::vector<std::pair<uint64_t, size_t>>& ids) {
  const int target = live_peer(c);
  if (target < 0) {  // an optional call with nobody left to tell
    c.done = true;
    return;
  }
  const uint64_t id = next_id_++;
  o_.ids.stamp(c.header, id);
  ids.emplace_back(id, index);
  c.sent_to = target;
  std::vector<OutFrame> frames;
  frames.reserve(c.payload.size() + 1);
  frames.push_back(OutFrame::borrow(c.header));
  frames.insert(frames.end(), c.payload.begin(), c.payload.end());
  stats_.bytes_sent += dealers_[static_cast<size_t>(target)].send(frames) - c.header.size();
  ++stats_.requests;
}

void RequestClient::call(std::span<Call> calls, const CallOptions& o) {
  close_lost_sockets();
  std::vector<std::pair<uint64_t, size_t>> ids;  // (request id, call index), ids ascending
  size_t remaining = 0;
  for (size_t i = 0; i < calls.size(); ++i) {
    calls[i].done = false;
    send(calls[i], i, ids);
    remaining += !calls[i].done;
  }
  const auto deadline = Clock::now() + o.timeout;
  std::vector<FramePtr> frames;
  std::vector<PollItem> items(dealers_.size());
  for (size_t s = 0; s < dealers_.size(); ++s) items[s].socket = &dealers_[s];  // closed once lost: skipped
  while (remaining > 0) {
    if (o.check) o.check();
    // Calls sent to a peer lost since: to the next live one.
    std::vector<size_t> resend;
    {
      std::lock_guard lock(mu_);
      for (size_t i = 0; i < calls.size(); ++i) {
        if (!calls[i].done && calls[i].sent_to >= 0 && lost_[static_cast<size_t>(calls[i].sent_to)]) resend.push_back(i);
      }
    }
    if (!resend.empty()) {
      close_lost_sockets();
      for (size_t i : resend) {
        send(calls[i], i, ids);
        if (calls[i].done) --remaining;
      }
      if (remaining == 0) break;
    }
    try {
      poll(items, std::chrono::milliseconds(20));
    } catch (const CommError& e) {
      throw CommError(format("{}: {}", o_.name, e.what()));
    }
    for (size_t s = 0; s < items.size(); ++s) {
      if (!items[s].ready) continue;
      while (dealers_[s].recv(frames)) {
        uint64_t id = 0;
        try {
          id = o_.ids.read(frames);
        } catch (const Error& e) {
          throw CommError(format("{}: bad reply from {}: {}", o_.name, o_.peers[s], e.what()));
        }
        auto it = std::lower_bound(ids.begin(), ids.end(), std::pair<uint64_t, size_t>(id, 0));
        if (it == ids.end() || it->first != id) continue;  // an answer to a call re-sent elsewhere, or a stranger
        Call& c = calls[it->second];
        ids.erase(it);
        if (c.done || c.sent_to != static_cast<int>(s)) continue;
        c.done = true;
        --remaining;
        for (size_t f = 1; f < frames.size(); ++f) stats_.bytes_received += frames[f]->bytes().size();
        if (c.on_reply) c.on_reply(frames);
      }
    }
    if (remaining > 0 && Clock::now() > deadline) {
      for (const Call& c : calls) {
        if (c.done) continue;
        throw TimeoutError(format("{}: {}: no answer from {} within {} s", o_.name, o.what,
                                  o_.peers[static_cast<size_t>(c.sent_to)], o.timeout.count() / 1000.0));
      }
    }
  }
}

}  // namespace loom::comm
