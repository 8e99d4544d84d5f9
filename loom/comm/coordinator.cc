#include "loom/comm/coordinator.h"

#include <sys/eventfd.h>
#include <unistd.h>
#include <zmq.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <string_view>
#include <thread>
#include <tuple>

#include "loom/comm/transport.h"  // Clock
#include "loom/core/error.h"

namespace loom::comm {
namespace {

using namespace std::chrono_literals;
using Ms = std::chrono::milliseconds;

// ---- wire format --------------------------------------------------------

constexpr char kMagic[4] = {'L', 'M', 'C', 'O'};
constexpr uint16_t kVersion = 1;
constexpr size_t kHeaderBytes = 16;
constexpr size_t kMaxBodyBytes = size_t{4} << 20;
constexpr size_t kMaxNameBytes = 4096;  // role, host, endpoint, key, barrier name, reason
constexpr size_t kMaxValueBytes = size_t{1} << 20;
constexpr int64_t kMaxProcesses = 1 << 16;
constexpr auto kTick = 20ms;         // how often the coordinator checks deadlines and heartbeats
constexpr auto kReplyGrace = 250ms;  // a client waits this much past a timeout it gave the coordinator

enum class Type : uint16_t {
  // client -> coordinator
  Hello = 1,
  Register = 2,
  Barrier = 3,
  Set = 4,
  Get = 5,
  Heartbeat = 6,
  Leave = 7,
  // coordinator -> client
  Welcome = 32,
  Registered = 33,
  Done = 34,
  Value = 35,
  HeartbeatAck = 36,
  Lost = 37,
  Error = 38,
};

bool known_type(uint16_t t) { return (t >= 1 && t <= 7) || (t >= 32 && t <= 38); }

enum ErrorCode : int64_t { kRefused = 1, kTimedOut = 2, kPeerLost = 3, kProtocol = 4 };

struct Header {
  Type type;
  uint64_t request;
};

std::string encode_header(Type type, uint64_t request) {
  std::string h(kHeaderBytes, '\0');
  std::memcpy(h.data(), kMagic, 4);
  const auto t = static_cast<uint16_t>(type);
  h[4] = static_cast<char>(kVersion & 0xff);
  h[5] = static_cast<char>(kVersion >> 8);
  h[6] = static_cast<char>(t & 0xff);
  h[7] = static_cast<char>(t >> 8);
  for (int i = 0; i < 8; ++i) h[8 + i] = static_cast<char>((request >> (8 * i)) & 0xff);
  return h;
}

Header decode_header(std::string_view h) {
  if (h.size() != kHeaderBytes)
    throw CommError(format("coordinator protocol: header of {} bytes, expected {}", h.size(), kHeaderBytes));
  if (std::memcmp(h.data(), kMagic, 4) != 0)
    throw CommError("coordinator protocol: bad magic (not a Loom coordinator message)");
  auto byte = [&](size_t i) { return static_cast<uint64_t>(static_cast<unsigned char>(h[i])); };
  const auto version = static_cast<uint16_t>(byte(4) | byte(5) << 8);
  if (version != kVersion)
    throw CommError(format("coordinator protocol: version {}, this build speaks {}", version, kVersion));
  const auto type = static_cast<uint16_t>(byte(6) | byte(7) << 8);
  if (!known_type(type)) throw CommError(format("coordinator protocol: unknown message type {}", type));
  uint64_t request = 0;
  for (int i = 0; i < 8; ++i) request |= byte(static_cast<size_t>(8 + i)) << (8 * i);
  return {static_cast<Type>(type), request};
}

class BodyWriter {
 public:
  BodyWriter& i64(int64_t v) {
    for (int i = 0; i < 8; ++i) buf_.push_back(static_cast<char>((static_cast<uint64_t>(v) >> (8 * i)) & 0xff));
    return *this;
  }
  BodyWriter& str(std::string_view s) {
    const auto n = static_cast<uint32_t>(s.size());
    for (int i = 0; i < 4; ++i) buf_.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
    buf_.append(s);
    return *this;
  }
  std::string take() { return std::move(buf_); }

 private:
  std::string buf_;
};

// Reads fields in order; anything out of bounds is a CommError naming the field.
class BodyReader {
 public:
  BodyReader(std::string_view data, const char* message) : data_(data), message_(message) {}
  int64_t i64(const char* field) {
    need(8, field);
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i)
      v |= static_cast<uint64_t>(static_cast<unsigned char>(data_[pos_ + static_cast<size_t>(i)])) << (8 * i);
    pos_ += 8;
    return static_cast<int64_t>(v);
  }
  int64_t i64(const char* field, int64_t min, int64_t max) {
    const int64_t v = i64(field);
    if (v < min || v > max) fail(field, format("value {} outside [{}, {}]", v, min, max));
    return v;
  }
  std::string str(const char* field, size_t max) {
    need(4, field);
    uint32_t n = 0;
    for (int i = 0; i < 4; ++i)
      n |= static_cast<uint32_t>(static_cast<unsigned char>(data_[pos_ + static_cast<size_t>(i)])) << (8 * i);
    pos_ += 4;
    if (n > max) fail(field, format("{} bytes, limit {}", n, max));
    need(n, field);
    std::string s(data_.substr(pos_, n));
    pos_ += n;
    return s;
  }
  void done() {
    if (pos_ != data_.size()) fail("end", format("{} unexpected trailing bytes", data_.size() - pos_));
  }

 private:
  void need(size_t n, const char* field) {
    if (data_.size() - pos_ < n) fail(field, "truncated");
  }
  [[noreturn]] void fail(const char* field, const std::string& why) {
    throw CommError(format("coordinator protocol: {} message, field '{}': {}", message_, field, why));
  }
  std::string_view data_;
  size_t pos_ = 0;
  const char* message_;
};

// ---- ZeroMQ helpers -----------------------------------------------------

std::string zmq_error() { return zmq_strerror(zmq_errno()); }

void set_int(void* socket, int option, int value, const char* name) {
  if (zmq_setsockopt(socket, option, &value, sizeof value) != 0) {
    throw CommError(format("coordinator: setting {} failed: {}", name, zmq_error()));
  }
}

void set_int64(void* socket, int option, int64_t value, const char* name) {
  if (zmq_setsockopt(socket, option, &value, sizeof value) != 0) {
    throw CommError(format("coordinator: setting {} failed: {}", name, zmq_error()));
  }
}

// Sends one multipart message without waiting; false when it could not.
bool send_frames(void* socket, std::initializer_list<std::string_view> frames) {
  size_t i = 0;
  for (std::string_view f : frames) {
    const int flags = ZMQ_DONTWAIT | (++i < frames.size() ? ZMQ_SNDMORE : 0);
    if (zmq_send(socket, f.data(), f.size(), flags) < 0) return false;
  }
  return true;
}

// Receives one multipart message if one is waiting: true with its frames
// (at most `max_frames`, else `frames` is left empty: malformed), false if none.
bool recv_frames(void* socket, std::vector<std::string>& frames, size_t max_frames) {
  frames.clear();
  bool too_many = false;
  for (bool first = true;; first = false) {
    zmq_msg_t msg;
    zmq_msg_init(&msg);
    if (zmq_msg_recv(&msg, socket, first ? ZMQ_DONTWAIT : 0) < 0) {
      zmq_msg_close(&msg);
      if (first) return false;
      break;  // the context is going away
    }
    if (frames.size() < max_frames) {
      frames.emplace_back(static_cast<const char*>(zmq_msg_data(&msg)), zmq_msg_size(&msg));
    } else {
      too_many = true;
    }
    const bool more = zmq_msg_more(&msg) != 0;
    zmq_msg_close(&msg);
    if (!more) break;
  }
  if (too_many) frames.clear();
  return true;
}

void drain_eventfd(int fd) {
  uint64_t v = 0;
  while (::read(fd, &v, sizeof v) == static_cast<ssize_t>(sizeof v)) {
  }
}

void signal_eventfd(int fd) {
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(fd, &one, sizeof one);
}

int make_eventfd() {
  int fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) throw CommError(format("coordinator: eventfd failed: {}", std::strerror(errno)));
  return fd;
}

// "tcp://host:0" -> "tcp://host:*" (ZeroMQ's spelling of "any free port").
std::string zmq_bind_address(const std::string& bind) {
  if (bind.size() > 2 && bind.ends_with(":0")) return bind.substr(0, bind.size() - 1) + "*";
  return bind;
}

bool valid_role(const std::string& role) { return role == "worker" || role == "server"; }

std::string describe_process(const std::string& role, int rank, const std::string& host) {
  return format("{} {} on host {}", role, rank, host);
}

void encode_lost(BodyWriter& w, const LostPeer& p) { w.str(p.role).i64(p.rank).str(p.host).str(p.reason); }

LostPeer decode_lost(BodyReader& r) {
  LostPeer p;
  p.role = r.str("role", kMaxNameBytes);
  p.rank = static_cast<int>(r.i64("rank", -1, kMaxProcesses));
  p.host = r.str("host", kMaxNameBytes);
  p.reason = r.str("reason", kMaxNameBytes);
  if (!valid_role(p.role)) throw CommError(format("coordinator protocol: lost process has role '{}'", p.role));
  return p;
}

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
// The coordinator

struct Coordinator::Impl {
  enum class State { Connected, Registering, Member, Left, Lost };
  struct Proc {
    State state = State::Connected;
    std::string role, host, endpoint;
    int64_t pid = 0;
    int preferred = -1;
    int rank = -1;
    uint64_t order = 0;
    Clock::time_point last_heard;
    uint64_t register_request = 0;
    Clock::time_point register_deadline;
  };
  struct Waiter {
    std::string id;
    uint64_t request = 0;
    Clock::time_point deadline;
  };
  struct PendingBarrier {
    std::string scope;
    std::vector<Waiter> waiters;  // one per arrived process
  };

  CoordinatorOptions opt;
  void* ctx = nullptr;
  void* router = nullptr;
  std::unique_ptr<CurveKeys> keys;
  std::unique_ptr<ZapHandler> zap;
  int wake_fd = -1;
  std::string bound;
  std::thread thread;
  std::atomic<bool> stopping{false};
  std::once_flag stopped;

  mutable std::mutex mu;  // everything below; held while handling a message
  mutable std::condition_variable changed;
  std::map<std::string, Proc> procs;  // by routing id
  uint64_t next_order = 0;
  bool formed = false;
  std::vector<LostPeer> lost;
  std::map<std::string, PendingBarrier> barriers;
  std::map<std::string, std::string> kv;
  std::multimap<std::string, Waiter> gets;

  explicit Impl(CoordinatorOptions o) : opt(std::move(o)) {}

  void open() {
    LOOM_CHECK(opt.num_workers >= 1 && opt.num_workers <= kMaxProcesses, "coordinator: num_workers {} out of range",
               opt.num_workers);
    LOOM_CHECK(opt.num_servers >= 0 && opt.num_servers <= kMaxProcesses, "coordinator: num_servers {} out of range",
               opt.num_servers);
    LOOM_CHECK(opt.heartbeat_interval.count() > 0 && opt.heartbeat_timeout > opt.heartbeat_interval,
               "coordinator: heartbeat_timeout ({} ms) must exceed heartbeat_interval ({} ms)",
               opt.heartbeat_timeout.count(), opt.heartbeat_interval.count());
    check_security(opt.security);
    if (!opt.security.insecure) keys = std::make_unique<CurveKeys>(derive_curve_keys(opt.security.secret));
    wake_fd = make_eventfd();
    ctx = zmq_ctx_new();
    if (ctx == nullptr) throw CommError(format("coordinator: zmq_ctx_new failed: {}", zmq_error()));
    if (keys) zap = std::make_unique<ZapHandler>(ctx, *keys);  // before bind: no client slips in unasked
    router = zmq_socket(ctx, ZMQ_ROUTER);
    if (router == nullptr) throw CommError(format("coordinator: cannot create the ROUTER: {}", zmq_error()));
    set_int(router, ZMQ_LINGER, 0, "ZMQ_LINGER");
    set_int(router, ZMQ_ROUTER_HANDOVER, 1, "ZMQ_ROUTER_HANDOVER");  // a client that reconnects keeps its identity
    set_int64(router, ZMQ_MAXMSGSIZE, static_cast<int64_t>(kMaxBodyBytes + 64), "ZMQ_MAXMSGSIZE");
    if (keys) make_curve_server(router, *keys);
    const std::string address = zmq_bind_address(opt.bind);
    if (zmq_bind(router, address.c_str()) != 0) {
      throw CommError(format("coordinator: cannot bind {}: {}", opt.bind, zmq_error()));
    }
    char last[256] = {};
    size_t len = sizeof last;
    zmq_getsockopt(router, ZMQ_LAST_ENDPOINT, last, &len);
    bound = last;
  }

  void close() {
    if (router != nullptr) zmq_close(router);
    router = nullptr;
    zap.reset();
    if (ctx != nullptr) {
      while (zmq_ctx_term(ctx) != 0 && zmq_errno() == EINTR) {
      }
    }
    ctx = nullptr;
    if (wake_fd >= 0) ::close(wake_fd);
    wake_fd = -1;
  }

  void stop() {
    std::call_once(stopped, [this] {
      stopping.store(true);
      if (wake_fd >= 0) signal_eventfd(wake_fd);
      if (thread.joinable()) thread.join();
      close();
      changed.notify_all();
    });
  }

  // ---- the loop -----------------------------------------------------------

  void run() {
    zmq_pollitem_t items[3] = {{router, 0, ZMQ_POLLIN, 0},
                               {nullptr, wake_fd, ZMQ_POLLIN, 0},
                               {zap ? zap->socket() : nullptr, 0, ZMQ_POLLIN, 0}};
    const int count = zap ? 3 : 2;
    std::vector<std::string> frames;
    while (!stopping.load()) {
      if (zmq_poll(items, count, static_cast<long>(kTick.count())) < 0) {
        if (zmq_errno() == EINTR) continue;
        break;
      }
      if (items[1].revents & ZMQ_POLLIN) drain_eventfd(wake_fd);
      if (count == 3 && (items[2].revents & ZMQ_POLLIN)) zap->handle();
      for (int i = 0; i < 256 && recv_frames(router, frames, 3); ++i) {
        if (frames.size() == 3) handle(frames[0], frames[1], frames[2]);  // else malformed: dropped
      }
      std::lock_guard lock(mu);
      tick(Clock::now());
    }
  }

  void reply(const std::string& id, Type type, uint64_t request, const std::string& body) {
    send_frames(router, {id, encode_header(type, request), body});  // a client that is gone is not our problem
  }
  void reply_error(const std::string& id, uint64_t request, ErrorCode code, const std::string& message) {
    reply(id, Type::Error, request, BodyWriter().i64(code).str(message.substr(0, kMaxNameBytes)).take());
  }

  void handle(const std::string& id, const std::string& header, const std::string& body) {
    Header h{};
    try {
      h = decode_header(header);
    } catch (const CommError&) {
      return;  // not ours: no reply to what we cannot parse
    }
    std::lock_guard lock(mu);
    try {
      dispatch(id, h, body);
    } catch (const std::exception& e) {  // a bad message must not end the coordinator
      reply_error(id, h.request, kProtocol, e.what());
    }
  }

  void dispatch(const std::string& id, const Header& h, const std::string& body) {
    const auto now = Clock::now();
    if (h.type == Type::Hello) {
      BodyReader r(body, "hello");
      const int64_t pid = r.i64("pid");
      r.done();
      auto [it, fresh] = procs.try_emplace(id);
      if (!fresh && it->second.state == State::Lost) {
        return reply_error(id, h.request, kPeerLost, "this process was declared lost");
      }
      it->second.pid = pid;
      it->second.last_heard = now;
      return reply(id, Type::Welcome, h.request,
                   BodyWriter().i64(opt.heartbeat_interval.count()).i64(opt.heartbeat_timeout.count()).take());
    }
    auto it = procs.find(id);
    if (it == procs.end()) return reply_error(id, h.request, kProtocol, "no hello from this client");
    Proc& p = it->second;
    if (h.type == Type::Heartbeat) {  // answered even for a process declared lost: the list tells it so
      BodyReader(body, "heartbeat").done();
      p.last_heard = now;
      BodyWriter w;
      w.i64(static_cast<int64_t>(lost.size()));
      for (const auto& l : lost) encode_lost(w, l);
      return reply(id, Type::HeartbeatAck, h.request, w.take());
    }
    if (p.state == State::Lost) return reply_error(id, h.request, kPeerLost, "this process was declared lost");
    p.last_heard = now;
    switch (h.type) {
      case Type::Register:
        return on_register(id, p, h.request, body, now);
      case Type::Barrier:
        return on_barrier(id, p, h.request, body, now);
      case Type::Set: {
        BodyReader r(body, "set");
        std::string key = r.str("key", kMaxNameBytes);
        std::string value = r.str("value", kMaxValueBytes);
        r.done();
        auto [first, last] = gets.equal_range(key);
        for (auto g = first; g != last; ++g)
          reply(g->second.id, Type::Value, g->second.request, BodyWriter().str(value).take());
        gets.erase(first, last);
        kv[key] = std::move(value);
        return reply(id, Type::Done, h.request, {});
      }
      case Type::Get: {
        BodyReader r(body, "get");
        std::string key = r.str("key", kMaxNameBytes);
        const int64_t timeout_ms = r.i64("timeout_ms", 0, INT64_MAX / 2000000);
        r.done();
        if (auto v = kv.find(key); v != kv.end())
          return reply(id, Type::Value, h.request, BodyWriter().str(v->second).take());
        gets.emplace(key, Waiter{id, h.request, now + Ms(timeout_ms)});
        return;
      }
      case Type::Leave: {
        BodyReader r(body, "leave");
        const bool clean = r.i64("clean", 0, 1) == 1;
        std::string reason = r.str("reason", kMaxNameBytes);
        r.done();
        reply(id, Type::Done, h.request, {});
        if (p.state == State::Member) {
          if (clean) {
            p.state = State::Left;
            fail_barriers_of(p, format("{} left the job", describe_process(p.role, p.rank, p.host)));
          } else {
            declare_lost(id, reason);
          }
        } else if (p.state != State::Left) {
          procs.erase(it);  // not part of the job yet: forget it (its slot is free again)
        }
        changed.notify_all();
        return;
      }
      default:
        return reply_error(id, h.request, kProtocol, format("unexpected message type {}", static_cast<int>(h.type)));
    }
  }

  int expected(const std::string& role) const { return role == "worker" ? opt.num_workers : opt.num_servers; }

  void on_register(const std::string& id, Proc& p, uint64_t request, const std::string& body, Clock::time_point now) {
    BodyReader r(body, "register");
    std::string role = r.str("role", kMaxNameBytes);
    std::string host = r.str("host", kMaxNameBytes);
    const int rank = static_cast<int>(r.i64("rank", -1, kMaxProcesses));
    std::string endpoint = r.str("endpoint", kMaxNameBytes);
    const int64_t timeout_ms = r.i64("timeout_ms", 0, INT64_MAX / 2000000);
    r.done();
    if (!valid_role(role))
      return reply_error(id, request, kRefused, format("unknown role '{}' (worker or server)", role));
    if (p.state != State::Connected) return reply_error(id, request, kRefused, "this process registered already");
    if (formed) {
      return reply_error(
          id, request, kRefused,
          format("the job has formed already ({} workers, {} servers)", opt.num_workers, opt.num_servers));
    }
    const int want = expected(role);
    if (want == 0) return reply_error(id, request, kRefused, format("this job has no {}s", role));
    if (rank >= want) {
      return reply_error(id, request, kRefused, format("rank {} asked for, but the job has {} {}s", rank, want, role));
    }
    int registered = 0;
    for (const auto& [other_id, o] : procs) {
      if (o.state != State::Registering || o.role != role) continue;
      ++registered;
      if (rank >= 0 && o.preferred == rank) {
        return reply_error(id, request, kRefused,
                           format("{} rank {} is taken already by host {} (pid {})", role, rank, o.host, o.pid));
      }
    }
    if (registered >= want) {
      return reply_error(id, request, kRefused, format("all {} {}s have registered already", want, role));
    }
    p.state = State::Registering;
    p.role = std::move(role);
    p.host = std::move(host);
    p.endpoint = std::move(endpoint);
    p.preferred = rank;
    p.order = next_order++;
    p.register_request = request;
    p.register_deadline = now + Ms(timeout_ms);
    try_form();
  }

  void try_form() {
    std::map<std::string, std::vector<Proc*>> by_role;
    for (auto& [pid, p] : procs) {
      if (p.state == State::Registering) by_role[p.role].push_back(&p);
    }
    if (static_cast<int>(by_role["worker"].size()) != opt.num_workers ||
        static_cast<int>(by_role["server"].size()) != opt.num_servers) {
      return;
    }
    // Ranks: asked-for ones first, then the free ones by (host, arrival), so
    // processes on one host get contiguous ranks.
    std::vector<ProcessInfo> all;
    for (const char* role : {"worker", "server"}) {
      auto& members = by_role[role];
      std::vector<bool> taken(members.size(), false);
      for (Proc* p : members) {
        if (p->preferred >= 0) taken[static_cast<size_t>(p->preferred)] = true;
        p->rank = p->preferred;
      }
      std::vector<Proc*> rest;
      for (Proc* p : members) {
        if (p->preferred < 0) rest.push_back(p);
      }
      std::sort(rest.begin(), rest.end(),
                [](const Proc* a, const Proc* b) { return std::tie(a->host, a->order) < std::tie(b->host, b->order); });
      size_t next = 0;
      for (Proc* p : rest) {
        while (taken[next]) ++next;
        p->rank = static_cast<int>(next);
        taken[next] = true;
      }
      std::sort(members.begin(), members.end(), [](const Proc* a, const Proc* b) { return a->rank < b->rank; });
      for (Proc* p : members) all.push_back({p->role, p->rank, p->host, -1, -1, p->endpoint});
    }
    std::map<std::string, int> host_index;
    std::map<std::pair<std::string, std::string>, int> local;
    for (auto& info : all) {
      auto [h, fresh] = host_index.try_emplace(info.host, static_cast<int>(host_index.size()));
      info.host_index = h->second;
      info.local_rank = local[{info.role, info.host}]++;
    }
    BodyWriter common;
    common.i64(opt.num_workers).i64(opt.num_servers).i64(static_cast<int64_t>(host_index.size()));
    common.i64(static_cast<int64_t>(all.size()));
    for (const auto& info : all) {
      common.str(info.role).i64(info.rank).str(info.host).i64(info.host_index).i64(info.local_rank).str(info.endpoint);
    }
    const std::string tail = common.take();
    formed = true;
    for (auto& [pid, p] : procs) {
      if (p.state != State::Registering) continue;
      p.state = State::Member;
      reply(pid, Type::Registered, p.register_request, BodyWriter().str(p.role).i64(p.rank).take() + tail);
    }
    changed.notify_all();
  }

  // Members of a barrier scope ("" = everyone).
  std::vector<const Proc*> scope_members(const std::string& scope) const {
    std::vector<const Proc*> out;
    for (const auto& [pid, p] : procs) {
      if ((p.state == State::Member || p.state == State::Left || p.state == State::Lost) &&
          (scope.empty() || p.role == scope)) {
        out.push_back(&p);
      }
    }
    return out;
  }

  void on_barrier(const std::string& id, Proc& p, uint64_t request, const std::string& body, Clock::time_point now) {
    BodyReader r(body, "barrier");
    std::string name = r.str("name", kMaxNameBytes);
    std::string scope = r.str("scope", kMaxNameBytes);
    const int64_t timeout_ms = r.i64("timeout_ms", 0, INT64_MAX / 2000000);
    r.done();
    if (p.state != State::Member) return reply_error(id, request, kRefused, "barrier before this process registered");
    if (!scope.empty() && !valid_role(scope))
      return reply_error(id, request, kRefused, format("unknown role '{}'", scope));
    if (!scope.empty() && p.role != scope) {
      return reply_error(id, request, kRefused, format("a {} cannot enter a barrier of the {}s", p.role, scope));
    }
    for (const Proc* m : scope_members(scope)) {
      if (m->state == State::Lost || m->state == State::Left) {
        return reply_error(id, request, kPeerLost,
                           format("barrier '{}': {} {}", name, describe_process(m->role, m->rank, m->host),
                                  m->state == State::Lost ? "was lost" : "left the job"));
      }
    }
    auto [it, fresh] = barriers.try_emplace(name);
    PendingBarrier& b = it->second;
    if (fresh) b.scope = scope;
    if (b.scope != scope) {
      return reply_error(id, request, kRefused,
                         format("barrier '{}' was entered for '{}' and now for '{}'", name, b.scope, scope));
    }
    auto same = std::find_if(b.waiters.begin(), b.waiters.end(), [&](const Waiter& w) { return w.id == id; });
    if (same != b.waiters.end()) b.waiters.erase(same);  // a retry replaces the earlier arrival
    b.waiters.push_back({id, request, now + Ms(timeout_ms)});
    if (b.waiters.size() == scope_members(scope).size()) {
      for (const auto& w : b.waiters) reply(w.id, Type::Done, w.request, {});
      barriers.erase(it);
    }
  }

  std::string missing_from(const PendingBarrier& b) const {
    std::string out;
    int listed = 0, missing = 0;
    for (const auto& [pid, p] : procs) {
      if (p.state != State::Member || (!b.scope.empty() && p.role != b.scope)) continue;
      if (std::any_of(b.waiters.begin(), b.waiters.end(), [&](const Waiter& w) { return w.id == pid; })) continue;
      ++missing;
      if (listed++ < 8) out += (out.empty() ? "" : ", ") + describe_process(p.role, p.rank, p.host);
    }
    if (missing > listed) out += format(" and {} more", missing - listed);
    return out;
  }

  void fail_barriers_of(const Proc& gone, const std::string& why) {
    for (auto it = barriers.begin(); it != barriers.end();) {
      if (it->second.scope.empty() || it->second.scope == gone.role) {
        for (const auto& w : it->second.waiters)
          reply_error(w.id, w.request, kPeerLost, format("barrier '{}': {}", it->first, why));
        it = barriers.erase(it);
      } else {
        ++it;
      }
    }
  }

  void declare_lost(const std::string& id, const std::string& reason) {
    Proc& p = procs.at(id);
    p.state = State::Lost;
    LostPeer l{p.role, p.rank, p.host, reason};
    lost.push_back(l);
    BodyWriter w;
    encode_lost(w, l);
    const std::string body = w.take();
    for (const auto& [pid, o] : procs) {
      if (pid != id && (o.state == State::Connected || o.state == State::Registering || o.state == State::Member)) {
        reply(pid, Type::Lost, 0, body);
      }
    }
    fail_barriers_of(p, l.describe());
    for (auto g = gets.begin(); g != gets.end();) g = g->second.id == id ? gets.erase(g) : std::next(g);
    changed.notify_all();
  }

  void tick(Clock::time_point now) {
    for (auto g = gets.begin(); g != gets.end();) {
      if (now < g->second.deadline) {
        ++g;
        continue;
      }
      reply_error(g->second.id, g->second.request, kTimedOut, format("key '{}' was not set in time", g->first));
      g = gets.erase(g);
    }
    for (auto& [name, b] : barriers) {
      for (auto w = b.waiters.begin(); w != b.waiters.end();) {
        if (now < w->deadline) {
          ++w;
          continue;
        }
        reply_error(w->id, w->request, kTimedOut,
                    format("barrier '{}' timed out waiting for {}", name, missing_from(b)));
        w = b.waiters.erase(w);
      }
    }
    std::erase_if(barriers, [](const auto& kv) { return kv.second.waiters.empty(); });
    std::vector<std::string> silent;
    for (auto& [pid, p] : procs) {
      if (p.state == State::Registering && now >= p.register_deadline) {
        std::string waiting;
        for (const char* role : {"worker", "server"}) {
          int have = 0;
          for (const auto& [oid, o] : procs) have += o.state == State::Registering && o.role == role;
          if (have < expected(role))
            waiting += format("{}{} of {} {}s", waiting.empty() ? "" : ", ", have, expected(role), role);
        }
        reply_error(pid, p.register_request, kTimedOut, format("rendezvous timed out: registered so far {}", waiting));
        p.state = State::Connected;  // its slot is free again
      }
      if ((p.state == State::Connected || p.state == State::Registering || p.state == State::Member) &&
          now - p.last_heard > opt.heartbeat_timeout) {
        silent.push_back(pid);
      }
    }
    for (const auto& pid : silent) {
      Proc& p = procs.at(pid);
      if (p.state == State::Member) {
        const auto ms = std::chrono::duration_cast<Ms>(now - p.last_heard).count();
        declare_lost(pid,
                     format("no heartbeat for {} ms (heartbeat_timeout {} ms)", ms, opt.heartbeat_timeout.count()));
      } else {
        procs.erase(pid);  // not part of the job yet: forget it
      }
    }
  }

  bool finished() const {
    if (!formed) return false;
    for (const auto& [pid, p] : procs) {
      if (p.state == State::Member) return false;
    }
    return true;
  }
};

Coordinator::Coordinator(CoordinatorOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {
  try {
    impl_->open();
  } catch (...) {
    impl_->close();
    throw;
  }
  impl_->thread = std::thread([this] { impl_->run(); });
}

Coordinator::~Coordinator() { stop(); }

void Coordinator::stop() { impl_->stop(); }

std::string Coordinator::endpoint() const { return impl_->bound; }

bool Coordinator::formed() const {
  std::lock_guard lock(impl_->mu);
  return impl_->formed;
}

std::vector<LostPeer> Coordinator::lost() const {
  std::lock_guard lock(impl_->mu);
  return impl_->lost;
}

bool Coordinator::wait_finished(std::chrono::milliseconds timeout) const {
  std::unique_lock lock(impl_->mu);
  return impl_->changed.wait_for(lock, timeout, [&] { return impl_->finished() || impl_->stopping.load(); }) &&
         impl_->finished();
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
  std::unique_ptr<CurveKeys> keys;
  void* ctx = nullptr;
  void* dealer = nullptr;
  void* monitor = nullptr;
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
    check_security(security);
    if (!security.insecure) keys = std::make_unique<CurveKeys>(derive_curve_keys(security.secret));
    wake_fd = make_eventfd();
    ctx = zmq_ctx_new();
    if (ctx == nullptr) throw CommError(format("coordinator client: zmq_ctx_new failed: {}", zmq_error()));
    dealer = zmq_socket(ctx, ZMQ_DEALER);
    if (dealer == nullptr) throw CommError(format("coordinator client: cannot create a DEALER: {}", zmq_error()));
    const std::string id = random_routing_id();
    if (zmq_setsockopt(dealer, ZMQ_ROUTING_ID, id.data(), id.size()) != 0) {
      throw CommError(format("coordinator client: setting the routing id failed: {}", zmq_error()));
    }
    set_int(dealer, ZMQ_LINGER, 500, "ZMQ_LINGER");
    set_int64(dealer, ZMQ_MAXMSGSIZE, static_cast<int64_t>(kMaxBodyBytes + 64), "ZMQ_MAXMSGSIZE");
    if (keys) make_curve_client(dealer, *keys);
    constexpr char kMonitor[] = "inproc://loom-coordinator-client-monitor";
    if (zmq_socket_monitor(dealer, kMonitor,
                           ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                               ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) != 0) {
      throw CommError(format("coordinator client: cannot monitor the DEALER: {}", zmq_error()));
    }
    monitor = zmq_socket(ctx, ZMQ_PAIR);
    if (monitor == nullptr || zmq_connect(monitor, kMonitor) != 0) {
      throw CommError(format("coordinator client: cannot connect the monitor: {}", zmq_error()));
    }
    set_int(monitor, ZMQ_LINGER, 0, "ZMQ_LINGER");
    if (zmq_connect(dealer, endpoint.c_str()) != 0) {
      throw CommError(format("coordinator client: cannot connect to {}: {}", endpoint, zmq_error()));
    }
  }

  void close() {
    for (void** s : {&dealer, &monitor}) {
      if (*s != nullptr) zmq_close(*s);
      *s = nullptr;
    }
    if (ctx != nullptr) {
      while (zmq_ctx_term(ctx) != 0 && zmq_errno() == EINTR) {
      }
    }
    ctx = nullptr;
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
      BodyReader r(p->body, "error");
      const int64_t code = r.i64("code");
      const std::string message = format("coordinator {}: {}: {}", endpoint, what, r.str("message", kMaxNameBytes));
      switch (code) {
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
    zmq_pollitem_t items[3] = {
        {dealer, 0, ZMQ_POLLIN, 0}, {nullptr, wake_fd, ZMQ_POLLIN, 0}, {monitor, 0, ZMQ_POLLIN, 0}};
    std::vector<std::string> frames;
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
      if (zmq_poll(items, 3, 20) < 0) {
        if (zmq_errno() == EINTR) continue;
        return;
      }
      if (items[1].revents & ZMQ_POLLIN) drain_eventfd(wake_fd);
      if (items[2].revents & ZMQ_POLLIN) on_monitor_event();
      for (int i = 0; i < 256 && recv_frames(dealer, frames, 2); ++i) {
        if (frames.size() == 2) on_message(frames[0], frames[1]);
      }
    }
  }

  // Caller holds mu.
  void flush_outbox() {
    while (!outbox.empty()) {
      if (!send_frames(dealer, {outbox.front().first, outbox.front().second})) return;  // try again later
      outbox.pop_front();
    }
  }

  void on_monitor_event() {
    std::vector<std::string> event;
    while (recv_frames(monitor, event, 2)) {
      if (event.empty() || event[0].size() < 6) continue;
      uint16_t code = 0;
      std::memcpy(&code, event[0].data(), sizeof code);
      std::lock_guard lock(mu);
      if (!welcomed && auth_error.empty()) {
        auth_error = format(
            "the coordinator at {} refused this process's credentials ({}): is LOOM_JOB_SECRET (or --insecure) the "
            "same as the coordinator's?",
            endpoint, code == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH ? "authentication failed" : "CURVE handshake failed");
        cv.notify_all();
      }
    }
  }

  void on_message(const std::string& header, const std::string& body) {
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
        BodyReader r(body, "lost");
        LostPeer l = decode_lost(r);
        r.done();
        note_lost(std::move(l));
        return;
      }
      if (h.type == Type::HeartbeatAck) {
        BodyReader r(body, "heartbeat reply");
        const int64_t n = r.i64("count", 0, kMaxProcesses);
        std::vector<LostPeer> all;
        for (int64_t i = 0; i < n; ++i) all.push_back(decode_lost(r));
        r.done();
        for (auto& l : all) note_lost(std::move(l));
        return;
      }
      if (h.type == Type::Welcome && !welcomed) {
        BodyReader r(body, "welcome");
        heartbeat_interval = Ms(r.i64("heartbeat_interval_ms", 1, 3600000));
        heartbeat_timeout = Ms(r.i64("heartbeat_timeout_ms", 1, 36000000));
        r.done();
        welcomed = true;
      }
    } catch (const CommError&) {
      return;  // malformed: dropped
    }
    if (auto it = pending.find(h.request); it != pending.end()) {
      it->second->done = true;
      it->second->type = h.type;
      it->second->body = body;
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
    const std::string body = BodyWriter().i64(static_cast<int64_t>(::getpid())).take();
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
    const int zero = 0;
    zmq_setsockopt(m.dealer, ZMQ_LINGER, &zero, sizeof zero);
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
      BodyWriter w;
      w.i64(0).str("its process ended without leaving the job (crashed or stopped on an error)");
      m.outbox.emplace_back(encode_header(Type::Leave, 0), w.take());
    }
    m.stopping = true;
  }
  signal_eventfd(m.wake_fd);
  m.io.join();
  if (coordinator_gone) {  // nothing will reach it: do not wait for the Leave to go out
    const int zero = 0;
    zmq_setsockopt(m.dealer, ZMQ_LINGER, &zero, sizeof zero);
  }
  m.close();
}

Membership CoordinatorClient::register_process(const RegisterRequest& req, std::chrono::milliseconds timeout) {
  LOOM_CHECK(valid_role(req.role), "register_process: role must be worker or server, got '{}'", req.role);
  LOOM_CHECK(req.rank >= -1, "register_process: rank must be -1 (any) or >= 0, got {}", req.rank);
  LOOM_CHECK(req.host.size() <= kMaxNameBytes && req.endpoint.size() <= kMaxNameBytes,
             "register_process: host or endpoint longer than {} bytes", kMaxNameBytes);
  const std::string body =
      BodyWriter().str(req.role).str(req.host).i64(req.rank).str(req.endpoint).i64(timeout.count()).take();
  const std::string reply =
      impl_->request(Type::Register, body, Type::Registered, timeout + kReplyGrace, format("register as {}", req.role));
  BodyReader r(reply, "registered");
  Membership m;
  m.role = r.str("role", kMaxNameBytes);
  m.rank = static_cast<int>(r.i64("rank", 0, kMaxProcesses));
  m.num_workers = static_cast<int>(r.i64("num_workers", 1, kMaxProcesses));
  m.num_servers = static_cast<int>(r.i64("num_servers", 0, kMaxProcesses));
  m.num_hosts = static_cast<int>(r.i64("num_hosts", 1, kMaxProcesses));
  const int64_t count = r.i64("count", 1, 2 * kMaxProcesses);
  if (count != m.num_workers + m.num_servers) {
    throw CommError(format("coordinator protocol: {} processes listed for {} workers and {} servers", count,
                           m.num_workers, m.num_servers));
  }
  std::vector<int> next = {0, 0};  // expected rank per role: workers, then servers, each in rank order
  for (int64_t i = 0; i < count; ++i) {
    ProcessInfo p;
    p.role = r.str("process role", kMaxNameBytes);
    p.rank = static_cast<int>(r.i64("process rank", 0, kMaxProcesses));
    p.host = r.str("process host", kMaxNameBytes);
    p.host_index = static_cast<int>(r.i64("host index", 0, m.num_hosts - 1));
    p.local_rank = static_cast<int>(r.i64("local rank", 0, kMaxProcesses));
    p.endpoint = r.str("endpoint", kMaxNameBytes);
    const bool worker = i < m.num_workers;
    if (p.role != (worker ? "worker" : "server") || p.rank != next[worker ? 0 : 1]++) {
      throw CommError(format("coordinator protocol: process {} is {} {}, out of order", i, p.role, p.rank));
    }
    m.processes.push_back(std::move(p));
  }
  r.done();
  if (m.role != req.role || (req.rank >= 0 && m.rank != req.rank)) {
    throw CommError(format("coordinator protocol: asked to be {} {}, told {} {}", req.role, req.rank, m.role, m.rank));
  }
  m.world_size = m.role == "worker" ? m.num_workers : m.num_servers;
  if (m.rank >= m.world_size) throw CommError(format("coordinator protocol: rank {} of {}", m.rank, m.world_size));
  return m;
}

void CoordinatorClient::barrier(const std::string& name, std::chrono::milliseconds timeout, const std::string& role) {
  LOOM_CHECK(name.size() <= kMaxNameBytes, "barrier: name longer than {} bytes", kMaxNameBytes);
  const std::string body = BodyWriter().str(name).str(role).i64(timeout.count()).take();
  impl_->request(Type::Barrier, body, Type::Done, timeout + kReplyGrace, format("barrier '{}'", name));
}

void CoordinatorClient::set(const std::string& key, const std::string& value, std::chrono::milliseconds timeout) {
  LOOM_CHECK(key.size() <= kMaxNameBytes, "set: key longer than {} bytes", kMaxNameBytes);
  LOOM_CHECK(value.size() <= kMaxValueBytes, "set: value of {} bytes is over the {}-byte limit", value.size(),
             kMaxValueBytes);
  impl_->request(Type::Set, BodyWriter().str(key).str(value).take(), Type::Done, timeout, format("set '{}'", key));
}

std::string CoordinatorClient::get(const std::string& key, std::chrono::milliseconds timeout) {
  LOOM_CHECK(key.size() <= kMaxNameBytes, "get: key longer than {} bytes", kMaxNameBytes);
  const std::string reply = impl_->request(Type::Get, BodyWriter().str(key).i64(timeout.count()).take(), Type::Value,
                                           timeout + kReplyGrace, format("get '{}'", key));
  BodyReader r(reply, "value");
  std::string value = r.str("value", kMaxValueBytes);
  r.done();
  return value;
}

void CoordinatorClient::leave(std::chrono::milliseconds timeout) {
  impl_->request(Type::Leave, BodyWriter().i64(1).str("").take(), Type::Done, timeout, "leave");
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
