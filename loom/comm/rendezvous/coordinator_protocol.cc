#include "loom/comm/rendezvous/coordinator_protocol.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <span>

#include "loom/core/frame_codec.h"

namespace loom::comm::coordinator_protocol {

// ---- wire format --------------------------------------------------------

namespace {

using core::FrameFormat;
using core::FrameReader;
using core::FrameWriter;

constexpr std::string_view kProtocolName = "coordinator protocol";
constexpr FrameFormat kHeaderFormat{.protocol = kProtocolName, .message = "header", .magic = kMagic,
                                    .version = kVersion, .nbytes = kHeaderBytes};

FrameReader body_reader(std::string_view body, std::string_view message) {
  return FrameReader(body, kProtocolName, message);
}

Ms timeout_field(FrameReader& r, const char* field) { return Ms(r.i64(field, 0, kMaxTimeoutMs)); }

void write_lost(FrameWriter& w, const LostPeer& p) { w.str(p.role).i64(p.rank).str(p.host).str(p.reason); }

// Set and Propose: a key and a value.
SetBody read_key_value(std::string_view body, std::string_view message) {
  FrameReader r = body_reader(body, message);
  SetBody b;
  b.key = r.str("key", kMaxNameBytes);
  b.value = r.str("value", kMaxValueBytes);
  r.done();
  return b;
}

LostPeer read_lost(FrameReader& r) {
  LostPeer p;
  p.role = r.str("role", kMaxNameBytes);
  p.rank = static_cast<int>(r.i64("rank", -1, kMaxProcesses));
  p.host = r.str("host", kMaxNameBytes);
  p.reason = r.str("reason", kMaxNameBytes);
  if (!valid_role(p.role)) r.fail("role", format("a lost process has role '{}'", p.role));
  return p;
}

}  // namespace

bool known_type(uint16_t t) { return (t >= 1 && t <= 9) || (t >= 32 && t <= 39); }

std::string encode_header(Type type, uint64_t request) {
  std::string h(kHeaderBytes, '\0');
  FrameWriter(std::as_writable_bytes(std::span(h))).prefix(kHeaderFormat).u16(static_cast<uint16_t>(type)).u64(request);
  return h;
}

Header decode_header(std::string_view h) {
  FrameReader r = open_frame(h, kHeaderFormat);
  const uint16_t type = r.u16("type");
  const uint64_t request = r.u64("request id");
  r.done();
  if (!known_type(type)) r.fail("type", format("unknown message type {}", type));
  return {static_cast<Type>(type), request};
}

// ---- message bodies ------------------------------------------------------

std::string encode(const HelloBody& b) { return FrameWriter().i64(b.pid).take(); }

std::string encode(const WelcomeBody& b) {
  return FrameWriter().i64(b.heartbeat_interval.count()).i64(b.heartbeat_timeout.count()).take();
}

std::string encode(const RegisterBody& b) {
  return FrameWriter().str(b.role).str(b.host).i64(b.rank).str(b.endpoint).i64(b.timeout.count()).take();
}

std::string encode(const BarrierBody& b) {
  return FrameWriter().str(b.name).str(b.scope).i64(b.timeout.count()).take();
}

std::string encode(const SetBody& b) { return FrameWriter().str(b.key).str(b.value).take(); }

std::string encode(const GetBody& b) { return FrameWriter().str(b.key).i64(b.timeout.count()).take(); }

std::string encode(const ValueBody& b) { return FrameWriter().str(b.value).take(); }

std::string encode(const TryGetBody& b) { return FrameWriter().str(b.key).take(); }

std::string encode(const MaybeValueBody& b) {
  return FrameWriter().i64(b.value ? 1 : 0).str(b.value.value_or("")).take();
}

std::string encode(const LeaveBody& b) { return FrameWriter().i64(b.clean ? 1 : 0).str(b.reason).take(); }

std::string encode(const ErrorBody& b) { return FrameWriter().i64(b.code).str(b.message).take(); }

std::string encode(const LostPeer& p) {
  FrameWriter w;
  write_lost(w, p);
  return w.take();
}

std::string encode_heartbeat_ack(const std::vector<LostPeer>& lost) {
  FrameWriter w;
  w.i64(static_cast<int64_t>(lost.size()));
  for (const LostPeer& p : lost) write_lost(w, p);
  return w.take();
}

std::string encode_registered(const Membership& m) {
  FrameWriter w;
  w.str(m.role).i64(m.rank).i64(m.num_workers).i64(m.num_servers).i64(m.num_hosts);
  w.i64(static_cast<int64_t>(m.processes.size()));
  for (const ProcessInfo& p : m.processes) {
    w.str(p.role).i64(p.rank).str(p.host).i64(p.host_index).i64(p.local_rank).str(p.endpoint);
  }
  return w.take();
}

HelloBody decode_hello(std::string_view body) {
  FrameReader r = body_reader(body, "hello message");
  HelloBody b{.pid = r.i64("pid")};
  r.done();
  return b;
}

WelcomeBody decode_welcome(std::string_view body) {
  FrameReader r = body_reader(body, "welcome message");
  WelcomeBody b;
  b.heartbeat_interval = Ms(r.i64("heartbeat_interval_ms", 1, 3600000));
  b.heartbeat_timeout = Ms(r.i64("heartbeat_timeout_ms", 1, 36000000));
  r.done();
  return b;
}

RegisterBody decode_register(std::string_view body) {
  FrameReader r = body_reader(body, "register message");
  RegisterBody b;
  b.role = r.str("role", kMaxNameBytes);
  b.host = r.str("host", kMaxNameBytes);
  b.rank = static_cast<int>(r.i64("rank", -1, kMaxProcesses));
  b.endpoint = r.str("endpoint", kMaxNameBytes);
  b.timeout = timeout_field(r, "timeout_ms");
  r.done();
  return b;
}

BarrierBody decode_barrier(std::string_view body) {
  FrameReader r = body_reader(body, "barrier message");
  BarrierBody b;
  b.name = r.str("name", kMaxNameBytes);
  b.scope = r.str("scope", kMaxNameBytes);
  b.timeout = timeout_field(r, "timeout_ms");
  r.done();
  return b;
}

SetBody decode_set(std::string_view body) { return read_key_value(body, "set message"); }

ProposeBody decode_propose(std::string_view body) { return read_key_value(body, "propose message"); }

GetBody decode_get(std::string_view body) {
  FrameReader r = body_reader(body, "get message");
  GetBody b;
  b.key = r.str("key", kMaxNameBytes);
  b.timeout = timeout_field(r, "timeout_ms");
  r.done();
  return b;
}

ValueBody decode_value(std::string_view body) {
  FrameReader r = body_reader(body, "value message");
  ValueBody b{.value = r.str("value", kMaxValueBytes)};
  r.done();
  return b;
}

TryGetBody decode_try_get(std::string_view body) {
  FrameReader r = body_reader(body, "try_get message");
  TryGetBody b{.key = r.str("key", kMaxNameBytes)};
  r.done();
  return b;
}

MaybeValueBody decode_maybe_value(std::string_view body) {
  FrameReader r = body_reader(body, "maybe_value message");
  const bool found = r.i64("found", 0, 1) == 1;
  std::string value = r.str("value", kMaxValueBytes);
  r.done();
  if (!found && !value.empty()) r.fail("value", "a value for a key that is not set");
  return found ? MaybeValueBody{.value = std::move(value)} : MaybeValueBody{};
}

LeaveBody decode_leave(std::string_view body) {
  FrameReader r = body_reader(body, "leave message");
  LeaveBody b;
  b.clean = r.i64("clean", 0, 1) == 1;
  b.reason = r.str("reason", kMaxNameBytes);
  r.done();
  return b;
}

ErrorBody decode_error(std::string_view body) {
  FrameReader r = body_reader(body, "error message");
  ErrorBody b;
  b.code = r.i64("code");
  b.message = r.str("message", kMaxNameBytes);
  r.done();
  return b;
}

LostPeer decode_lost(std::string_view body) {
  FrameReader r = body_reader(body, "lost message");
  LostPeer p = read_lost(r);
  r.done();
  return p;
}

std::vector<LostPeer> decode_heartbeat_ack(std::string_view body) {
  FrameReader r = body_reader(body, "heartbeat reply");
  const int64_t n = r.i64("count", 0, kMaxProcesses);
  std::vector<LostPeer> lost;
  for (int64_t i = 0; i < n; ++i) lost.push_back(read_lost(r));
  r.done();
  return lost;
}

Membership decode_registered(std::string_view body) {
  FrameReader r = body_reader(body, "registered message");
  Membership m;
  m.role = r.str("role", kMaxNameBytes);
  m.rank = static_cast<int>(r.i64("rank", 0, kMaxProcesses));
  m.num_workers = static_cast<int>(r.i64("num_workers", 1, kMaxProcesses));
  m.num_servers = static_cast<int>(r.i64("num_servers", 0, kMaxProcesses));
  m.num_hosts = static_cast<int>(r.i64("num_hosts", 1, kMaxProcesses));
  const int64_t count = r.i64("count", 1, 2 * kMaxProcesses);
  if (count != m.num_workers + m.num_servers) {
    r.fail("count", format("{} processes listed for {} workers and {} servers", count, m.num_workers, m.num_servers));
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
      r.fail("process role", format("process {} is {} {}, out of order", i, p.role, p.rank));
    }
    m.processes.push_back(std::move(p));
  }
  r.done();
  if (!valid_role(m.role)) r.fail("role", format("role '{}'", m.role));
  m.world_size = m.role == "worker" ? m.num_workers : m.num_servers;
  if (m.rank >= m.world_size) r.fail("rank", format("rank {} of {}", m.rank, m.world_size));
  return m;
}

void decode_empty(std::string_view body, Type type) {
  body_reader(body, type == Type::Heartbeat ? "heartbeat message" : "done message").done();
}

bool valid_role(const std::string& role) { return role == "worker" || role == "server"; }

std::string describe_process(const std::string& role, int rank, const std::string& host) {
  return format("{} {} on host {}", role, rank, host);
}

// ---- waking a polling loop ----------------------------------------------

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

}  // namespace loom::comm::coordinator_protocol
