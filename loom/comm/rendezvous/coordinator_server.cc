// class Coordinator: the job's one coordinator process. A single thread owns
// the ROUTER (and the ZAP handler), answers every client request under one
// lock, and on each tick times out waits and declares silent processes lost.
// The messages it speaks are in coordinator_protocol.h.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>
#include <tuple>

#include "loom/comm/rendezvous/coordinator.h"
#include "loom/comm/rendezvous/coordinator_protocol.h"
#include "loom/comm/wire/endpoint.h"
#include "loom/comm/transport/transport.h"  // Clock
#include "loom/core/error.h"

namespace loom::comm {

using namespace coordinator_protocol;

namespace {

using namespace std::chrono_literals;

std::span<const std::byte> as_bytes(const std::string& s) { return {reinterpret_cast<const std::byte*>(s.data()), s.size()}; }

constexpr auto kTick = 20ms;  // how often the coordinator checks deadlines and heartbeats

}  // namespace

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
  std::unique_ptr<ServerEndpoint> ep;  // the ROUTER (and ZAP), polled with wake_fd
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
    wake_fd = make_eventfd();
    try {
      // A client that reconnects keeps its identity (ZMQ_ROUTER_HANDOVER, set by the endpoint).
      ep = std::make_unique<ServerEndpoint>(ServerEndpointOptions{
          .bind = opt.bind, .security = opt.security,
          .socket = {.max_message_bytes = static_cast<int64_t>(kMaxBodyBytes + 64)}});
    } catch (const CommError& e) {
      throw CommError(format("coordinator: cannot bind {}: {}", opt.bind, e.what()));
    }
    ep->watch_fd(wake_fd, [this] { drain_eventfd(wake_fd); });
    bound = ep->endpoint();
  }

  void close() {
    ep.reset();
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
    while (!stopping.load()) {
      try {
        ep->poll(kTick, [this](const Route& from, std::vector<FramePtr>& frames) {
          if (frames.size() == 2) {  // else malformed: dropped
            handle(std::string(from->view()), std::string(frames[0]->view()), std::string(frames[1]->view()));
          }
        });
      } catch (const CommError&) {
        break;
      }
      std::lock_guard lock(mu);
      tick(Clock::now());
    }
  }

  void reply(const std::string& id, Type type, uint64_t request, const std::string& body) {
    const std::string header = encode_header(type, request);
    try {
      ep->router().send({OutFrame::borrow(as_bytes(id)), OutFrame::borrow(as_bytes(header)),
                         OutFrame::borrow(as_bytes(body))},
                        /*dontwait=*/true);
    } catch (const CommError&) {  // a client that is gone is not our problem
    }
  }
  void reply_error(const std::string& id, uint64_t request, ErrorCode code, const std::string& message) {
    reply(id, Type::Error, request, encode(ErrorBody{.code = code, .message = message.substr(0, kMaxNameBytes)}));
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
      const int64_t pid = decode_hello(body).pid;
      auto [it, fresh] = procs.try_emplace(id);
      if (!fresh && it->second.state == State::Lost) {
        return reply_error(id, h.request, kPeerLost, "this process was declared lost");
      }
      it->second.pid = pid;
      it->second.last_heard = now;
      const WelcomeBody welcome{.heartbeat_interval = opt.heartbeat_interval,
                                .heartbeat_timeout = opt.heartbeat_timeout};
      return reply(id, Type::Welcome, h.request, encode(welcome));
    }
    auto it = procs.find(id);
    if (it == procs.end()) return reply_error(id, h.request, kProtocol, "no hello from this client");
    Proc& p = it->second;
    if (h.type == Type::Heartbeat) {  // answered even for a process declared lost: the list tells it so
      decode_empty(body, Type::Heartbeat);
      p.last_heard = now;
      return reply(id, Type::HeartbeatAck, h.request, encode_heartbeat_ack(lost));
    }
    if (p.state == State::Lost) return reply_error(id, h.request, kPeerLost, "this process was declared lost");
    p.last_heard = now;
    switch (h.type) {
      case Type::Register:
        return on_register(id, p, h.request, body, now);
      case Type::Barrier:
        return on_barrier(id, p, h.request, body, now);
      case Type::Set: {
        SetBody set = decode_set(body);
        auto [first, last] = gets.equal_range(set.key);
        const std::string value = encode(ValueBody{set.value});
        for (auto g = first; g != last; ++g) reply(g->second.id, Type::Value, g->second.request, value);
        gets.erase(first, last);
        kv[set.key] = std::move(set.value);
        return reply(id, Type::Done, h.request, {});
      }
      case Type::Get: {
        GetBody get = decode_get(body);
        if (auto v = kv.find(get.key); v != kv.end()) {
          return reply(id, Type::Value, h.request, encode(ValueBody{v->second}));
        }
        gets.emplace(std::move(get.key), Waiter{id, h.request, now + get.timeout});
        return;
      }
      case Type::Leave: {
        const LeaveBody leave = decode_leave(body);
        reply(id, Type::Done, h.request, {});
        if (p.state == State::Member) {
          if (leave.clean) {
            p.state = State::Left;
            fail_barriers_of(p, format("{} left the job", describe_process(p.role, p.rank, p.host)));
          } else {
            declare_lost(id, leave.reason);
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
    RegisterBody reg = decode_register(body);
    if (!valid_role(reg.role))
      return reply_error(id, request, kRefused, format("unknown role '{}' (worker or server)", reg.role));
    if (p.state != State::Connected) return reply_error(id, request, kRefused, "this process registered already");
    if (formed) {
      return reply_error(
          id, request, kRefused,
          format("the job has formed already ({} workers, {} servers)", opt.num_workers, opt.num_servers));
    }
    const int want = expected(reg.role);
    if (want == 0) return reply_error(id, request, kRefused, format("this job has no {}s", reg.role));
    if (reg.rank >= want) {
      return reply_error(id, request, kRefused,
                         format("rank {} asked for, but the job has {} {}s", reg.rank, want, reg.role));
    }
    int registered = 0;
    for (const auto& [other_id, o] : procs) {
      if (o.state != State::Registering || o.role != reg.role) continue;
      ++registered;
      if (reg.rank >= 0 && o.preferred == reg.rank) {
        return reply_error(id, request, kRefused,
                           format("{} rank {} is taken already by host {} (pid {})", reg.role, reg.rank, o.host,
                                  o.pid));
      }
    }
    if (registered >= want) {
      return reply_error(id, request, kRefused, format("all {} {}s have registered already", want, reg.role));
    }
    p.state = State::Registering;
    p.role = std::move(reg.role);
    p.host = std::move(reg.host);
    p.endpoint = std::move(reg.endpoint);
    p.preferred = reg.rank;
    p.order = next_order++;
    p.register_request = request;
    p.register_deadline = now + reg.timeout;
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
    Membership job{.num_workers = opt.num_workers, .num_servers = opt.num_servers,
                   .num_hosts = static_cast<int>(host_index.size()), .processes = std::move(all)};
    formed = true;
    for (auto& [pid, p] : procs) {
      if (p.state != State::Registering) continue;
      p.state = State::Member;
      job.role = p.role;
      job.rank = p.rank;
      reply(pid, Type::Registered, p.register_request, encode_registered(job));
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
    const BarrierBody barrier = decode_barrier(body);
    const std::string& name = barrier.name;
    const std::string& scope = barrier.scope;
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
    b.waiters.push_back({id, request, now + barrier.timeout});
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
      const std::string& id = pid;  // clang 14 cannot capture a structured binding
      if (std::any_of(b.waiters.begin(), b.waiters.end(), [&](const Waiter& w) { return w.id == id; })) continue;
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
    const std::string body = encode(l);
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

}  // namespace loom::comm
