// class CoordinatorClient: one per process. Caller threads queue requests and
// wait for the reply; a background thread owns the DEALER, sends heartbeats,
// files replies and reports lost peers. Also the Membership and LostPeer
// helpers and host_name(). The messages it speaks are in coordinator_protocol.h;
// the socket, its keys and polling come from the endpoint (endpoint.h). Not its
// RequestClient: that runs one synchronous call at a time on the caller's
// thread, while this DEALER must go on hearing heartbeat replies and unasked
// 'lost' notices while callers on several threads wait.
#include <unistd.h>

#include <array>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "loom/comm/rendezvous/coordinator.h"
#include "loom/comm/rendezvous/coordinator_protocol.h"
#include "loom/comm/wire/endpoint.h"
#include "loom/comm/transport/transport.h"  // Clock
#include "loom/core/error.h"

namespace loom::comm {

using namespace coordinator_protocol;

namespace {

using namespace std::chrono_literals;

constexpr auto kReplyGrace = 250ms;  // a client waits this much past a timeout it gave the coordinator
constexpr auto kPollWait = 20ms;     // how often the I/O thread checks heartbeats when nothing arrives

std::string random_routing_id() {
  std::random_device rd;
  std::string id = "c-";
  static constexpr char kHex[] = "0123456789abcdef";
  for (int i = 0; i < 32; ++i) id.push_back(kHex[rd() & 15]);
  return id;
}

}  // namespace

// ===========================================================================
// Membership and LostPeer

const ProcessInfo& Membership::at(const std::string& r, int k) const {
  for (const auto& p : processes) {
    if (p.role == r && p.rank == k) return p;
  }
  throw ValueError(format("membership: no {} with rank {}", r, k));
}

std::vector<std::string> Membership::endpoints(const std::string& r) const {
  std::vector<std::string> out;
  for (const auto& p : processes) {
    if (p.role == r) out.push_back(p.endpoint);
  }
  return out;
}

std::vector<int> Membership::host_indices(const std::string& r) const {
  std::vector<int> out;
  for (const auto& p : processes) {
    if (p.role == r) out.push_back(p.host_index);
  }
  return out;
}

std::string LostPeer::describe() const {
  if (role == "coordinator") return format("the coordinator at {} lost: {}", host, reason);
  return format("{} lost: {}", describe_process(role, rank, host), reason);
}

std::string host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "localhost";
  return buf;
}

// ===========================================================================
// The client

struct CoordinatorClient::Impl {
  struct Pending {
    bool done = false;
    Type type = Type::Error;
    std::string body;
  };

  std::string endpoint;
  std::unique_ptr<ZmqContext> ctx;  // the job's keys
  Socket dealer;                    // used by the I/O thread only, once it runs
  Socket refusals;                  // hears of handshakes the coordinator refused
  int wake_fd = -1;
  std::thread io;

  mutable std::mutex mu;  // everything below
  std::condition_variable cv;
  std::deque<std::pair<std::string, std::string>> outbox;  // header, body
  std::map<uint64_t, std::shared_ptr<Pending>> pending;
  uint64_t next_request = 1;
  bool welcomed = false;
  Ms heartbeat_interval{1000};
  Ms heartbeat_timeout{10000};
  Clock::time_point last_heard;
  std::string auth_error;
  std::string coordinator_lost;  // why, once it is
  std::vector<LostPeer> lost;
  std::set<std::pair<std::string, int>> lost_seen;
  std::function<void(const LostPeer&)> callback;
  std::vector<LostPeer> to_report;  // for the callback, reported outside the lock
  bool stopping = false;
  bool left = false;

  void open(const SecurityOptions& security) {
    ctx = std::make_unique<ZmqContext>(security, /*serves=*/false);  // ValueError without a secret or insecure
    wake_fd = make_eventfd();
    SocketOptions socket;
    socket.linger_ms = 500;  // time for a last Leave to go out
    socket.max_message_bytes = static_cast<int64_t>(kMaxBodyBytes + 64);
    socket.routing_id = random_routing_id();
    try {
      dealer = Socket::dealer(*ctx, endpoint, socket, &refusals);
    } catch (const CommError& e) {
      throw CommError(format("coordinator client: {}", e.what()));
    }
  }

  void close() {
    refusals.close();
    dealer.close();
    ctx.reset();  // waits up to the linger for queued messages
    if (wake_fd >= 0) ::close(wake_fd);
    wake_fd = -1;
  }

  // ---- requests (caller threads) ------------------------------------------

  [[noreturn]] void throw_coordinator_lost() const {
    throw PeerLostError(format("the coordinator at {} lost: {}", endpoint, coordinator_lost));
  }

  // Sends a request and waits for its reply (of type `expect`) until `wait`.
  std::string request(Type type, const std::string& body, Type expect, Ms wait, const std::string& what) {
    auto p = std::make_shared<Pending>();
    uint64_t id = 0;
    {
      std::lock_guard lock(mu);
      if (!coordinator_lost.empty()) throw_coordinator_lost();
      id = next_request++;
      pending[id] = p;
      outbox.emplace_back(encode_header(type, id), body);
    }
    signal_eventfd(wake_fd);
    std::unique_lock lock(mu);
    const auto deadline = Clock::now() + wait;
    cv.wait_until(lock, deadline, [&] { return p->done || !coordinator_lost.empty() || !auth_error.empty(); });
    pending.erase(id);
    if (!p->done) {
      if (!auth_error.empty()) throw AuthError(auth_error);
      if (!coordinator_lost.empty()) throw_coordinator_lost();
      throw TimeoutError(format("coordinator {}: {} got no reply within {} ms", endpoint, what, wait.count()));
    }
    if (p->type == Type::Error) {
      const ErrorBody error = decode_error(p->body);
      const std::string message = format("coordinator {}: {}: {}", endpoint, what, error.message);
      switch (error.code) {
        case kRefused:
          throw ConfigError(message);
        case kTimedOut:
          throw TimeoutError(message);
        case kPeerLost:
          throw PeerLostError(message);
        default:
          throw CommError(message);
      }
    }
    if (p->type != expect) {
      throw CommError(format("coordinator {}: {}: reply of type {}, expected {}", endpoint, what,
                             static_cast<int>(p->type), static_cast<int>(expect)));
    }
    return std::move(p->body);
  }

  // ---- the I/O thread -----------------------------------------------------

  void run() {
    try {
      loop();
    } catch (const CommError& e) {
      // ZeroMQ failed under this client. Nothing will be heard from the
      // coordinator again, so it is lost to this process: say why.
      {
        std::lock_guard lock(mu);
        if (coordinator_lost.empty()) mark_coordinator_lost(format("this client's socket failed: {}", e.what()));
      }
      report();
    }
  }

  void loop() {
    std::array<PollItem, 3> items;
    items[0].socket = &dealer;
    items[1].fd = wake_fd;
    items[2].socket = &refusals;
    std::vector<FramePtr> frames;
    auto next_beat = Clock::now();
    for (;;) {
      bool stop = false;
      {
        std::lock_guard lock(mu);
        flush_outbox();
        stop = stopping;
        const auto now = Clock::now();
        if (welcomed && coordinator_lost.empty()) {
          if (now >= next_beat) {
            outbox.emplace_back(encode_header(Type::Heartbeat, 0), std::string());
            flush_outbox();
            next_beat = now + heartbeat_interval;
          }
          if (now - last_heard > heartbeat_timeout) {
            const auto ms = std::chrono::duration_cast<Ms>(now - last_heard).count();
            mark_coordinator_lost(
                format("no reply for {} ms (heartbeat_timeout {} ms)", ms, heartbeat_timeout.count()));
          }
        }
      }
      report();
      if (stop) return;
      poll(items, kPollWait);
      if (items[1].ready) drain_eventfd(wake_fd);
      if (items[2].ready) on_refused();
      for (int i = 0; i < 256 && dealer.recv(frames); ++i) {
        if (frames.size() == 2) on_message(frames[0]->view(), frames[1]->view());  // else malformed: dropped
      }
    }
  }

  // Caller holds mu.
  void flush_outbox() {
    while (!outbox.empty()) {
      const auto& [header, body] = outbox.front();
      if (dealer.send({OutFrame::borrow(header), OutFrame::borrow(body)}, /*dontwait=*/true) == 0) {
        return;  // cannot be queued now: try again on the next turn
      }
      outbox.pop_front();
    }
  }

  void on_refused() {
    const std::string why = handshake_refused(refusals);
    if (why.empty()) return;
    std::lock_guard lock(mu);
    if (!welcomed && auth_error.empty()) {
      auth_error = format(
          "the coordinator at {} refused this process's credentials ({}): is LOOM_JOB_SECRET (or --insecure) the "
          "same as the coordinator's?",
          endpoint, why);
      cv.notify_all();
    }
  }

  void on_message(std::string_view header, std::string_view body) {
    Header h{};
    try {
      h = decode_header(header);
    } catch (const CommError&) {
      return;  // not from a coordinator we understand: ignore
    }
    std::lock_guard lock(mu);
    last_heard = Clock::now();
    try {
      if (h.type == Type::Lost) {
        note_lost(decode_lost(body));
        return;
      }
      if (h.type == Type::HeartbeatAck) {
        for (LostPeer& l : decode_heartbeat_ack(body)) note_lost(std::move(l));
        return;
      }
      if (h.type == Type::Welcome && !welcomed) {
        const WelcomeBody welcome = decode_welcome(body);
        heartbeat_interval = welcome.heartbeat_interval;
        heartbeat_timeout = welcome.heartbeat_timeout;
        welcomed = true;
      }
    } catch (const CommError&) {
      return;  // malformed: dropped
    }
    if (auto it = pending.find(h.request); it != pending.end()) {
      it->second->done = true;
      it->second->type = h.type;
      it->second->body = std::string(body);
      cv.notify_all();
    }
  }

  // Caller holds mu.
  void note_lost(LostPeer l) {
    if (!lost_seen.insert({l.role, l.rank}).second) return;
    lost.push_back(l);
    to_report.push_back(std::move(l));
  }

  // Caller holds mu.
  void mark_coordinator_lost(const std::string& why) {
    coordinator_lost = why;
    note_lost(LostPeer{"coordinator", -1, endpoint, why});
    cv.notify_all();
  }

  // Runs the callback for new losses, outside the lock.
  void report() {
    std::vector<LostPeer> batch;
    std::function<void(const LostPeer&)> fn;
    {
      std::lock_guard lock(mu);
      if (!callback || to_report.empty()) return;
      batch.swap(to_report);
      fn = callback;
    }
    for (const auto& l : batch) {
      try {
        fn(l);
      } catch (...) {  // the callback's problem must not end the heartbeat thread
      }
    }
  }
};

CoordinatorClient::CoordinatorClient(std::string endpoint, const SecurityOptions& security,
                                     std::chrono::milliseconds timeout)
    : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.endpoint = std::move(endpoint);
  try {
    m.open(security);
  } catch (...) {
    m.close();
    throw;
  }
  m.io = std::thread([&m] { m.run(); });
  try {
    const std::string body = encode(HelloBody{.pid = ::getpid()});
    try {
      m.request(Type::Hello, body, Type::Welcome, timeout, "connecting");
    } catch (const TimeoutError&) {
      throw TimeoutError(
          format("no coordinator answered at {} within {} ms (is it running, and does it use the same "
                 "LOOM_JOB_SECRET and --insecure setting?)",
                 m.endpoint, timeout.count()));
    }
    std::lock_guard lock(m.mu);
    m.last_heard = Clock::now();
  } catch (...) {
    {
      std::lock_guard lock(m.mu);
      m.stopping = true;
    }
    signal_eventfd(m.wake_fd);
    m.io.join();
    m.dealer.set_linger(0);
    m.close();
    throw;
  }
}

CoordinatorClient::~CoordinatorClient() {
  Impl& m = *impl_;
  bool coordinator_gone = false;
  {
    std::lock_guard lock(m.mu);
    coordinator_gone = !m.coordinator_lost.empty();
    if (!m.left && !coordinator_gone) {
      const LeaveBody leave{.clean = false,
                            .reason = "its process ended without leaving the job (crashed or stopped on an error)"};
      m.outbox.emplace_back(encode_header(Type::Leave, 0), encode(leave));
    }
    m.stopping = true;
  }
  signal_eventfd(m.wake_fd);
  m.io.join();
  if (coordinator_gone) m.dealer.set_linger(0);  // nothing will reach it: do not wait for the Leave to go out
  m.close();
}

Membership CoordinatorClient::register_process(const RegisterRequest& req, std::chrono::milliseconds timeout) {
  LOOM_CHECK(valid_role(req.role), "register_process: role must be worker or server, got '{}'", req.role);
  LOOM_CHECK(req.rank >= -1, "register_process: rank must be -1 (any) or >= 0, got {}", req.rank);
  LOOM_CHECK(req.host.size() <= kMaxNameBytes && req.endpoint.size() <= kMaxNameBytes,
             "register_process: host or endpoint longer than {} bytes", kMaxNameBytes);
  const RegisterBody reg{.role = req.role, .host = req.host, .rank = req.rank, .endpoint = req.endpoint,
                         .timeout = timeout};
  const std::string body = encode(reg);
  const std::string reply =
      impl_->request(Type::Register, body, Type::Registered, timeout + kReplyGrace, format("register as {}", req.role));
  Membership m = decode_registered(reply);
  if (m.role != req.role || (req.rank >= 0 && m.rank != req.rank)) {
    throw CommError(format("coordinator protocol: asked to be {} {}, told {} {}", req.role, req.rank, m.role, m.rank));
  }
  return m;
}

void CoordinatorClient::barrier(const std::string& name, std::chrono::milliseconds timeout, const std::string& role) {
  LOOM_CHECK(name.size() <= kMaxNameBytes, "barrier: name longer than {} bytes", kMaxNameBytes);
  const std::string body = encode(BarrierBody{.name = name, .scope = role, .timeout = timeout});
  impl_->request(Type::Barrier, body, Type::Done, timeout + kReplyGrace, format("barrier '{}'", name));
}

void CoordinatorClient::set(const std::string& key, const std::string& value, std::chrono::milliseconds timeout) {
  LOOM_CHECK(key.size() <= kMaxNameBytes, "set: key longer than {} bytes", kMaxNameBytes);
  LOOM_CHECK(value.size() <= kMaxValueBytes, "set: value of {} bytes is over the {}-byte limit", value.size(),
             kMaxValueBytes);
  impl_->request(Type::Set, encode(SetBody{.key = key, .value = value}), Type::Done, timeout, format("set '{}'", key));
}

std::string CoordinatorClient::get(const std::string& key, std::chrono::milliseconds timeout) {
  LOOM_CHECK(key.size() <= kMaxNameBytes, "get: key longer than {} bytes", kMaxNameBytes);
  const std::string reply = impl_->request(Type::Get, encode(GetBody{.key = key, .timeout = timeout}), Type::Value,
                                           timeout + kReplyGrace, format("get '{}'", key));
  return decode_value(reply).value;
}

std::string CoordinatorClient::propose(const std::string& key, const std::string& value,
                                       std::chrono::milliseconds timeout) {
  LOOM_CHECK(key.size() <= kMaxNameBytes, "propose: key longer than {} bytes", kMaxNameBytes);
  LOOM_CHECK(value.size() <= kMaxValueBytes, "propose: value of {} bytes is over the {}-byte limit", value.size(),
             kMaxValueBytes);
  const std::string reply = impl_->request(Type::Propose, encode(ProposeBody{.key = key, .value = value}),
                                           Type::Value, timeout, format("propose '{}'", key));
  return decode_value(reply).value;
}

std::optional<std::string> CoordinatorClient::try_get(const std::string& key, std::chrono::milliseconds timeout) {
  LOOM_CHECK(key.size() <= kMaxNameBytes, "try_get: key longer than {} bytes", kMaxNameBytes);
  const std::string reply = impl_->request(Type::TryGet, encode(TryGetBody{.key = key}), Type::MaybeValue, timeout,
                                           format("try_get '{}'", key));
  return decode_maybe_value(reply).value;
}

void CoordinatorClient::leave(std::chrono::milliseconds timeout) {
  impl_->request(Type::Leave, encode(LeaveBody{.clean = true}), Type::Done, timeout, "leave");
  std::lock_guard lock(impl_->mu);
  impl_->left = true;
}

void CoordinatorClient::on_peer_lost(std::function<void(const LostPeer&)> callback) {
  {
    std::lock_guard lock(impl_->mu);
    impl_->callback = std::move(callback);
    impl_->to_report = impl_->lost;  // replay what was seen before
  }
  signal_eventfd(impl_->wake_fd);
}

std::vector<LostPeer> CoordinatorClient::lost_peers() const {
  std::lock_guard lock(impl_->mu);
  return impl_->lost;
}

const std::string& CoordinatorClient::endpoint() const { return impl_->endpoint; }

}  // namespace loom::comm
