// class Coordinator: the job's one coordinator process. A single thread owns
// the ROUTER (and the ZAP handler), decodes every client request and hands it,
// under one lock, to the part of the state it is about: membership.h
// (registration, ranks, leaving, loss), barriers.h, kv_table.h and
// liveness.h (heartbeats). Those answer into an Outbox, which this loop sends.
// On each tick it times out waits and declares silent processes lost.
// The messages it speaks are in coordinator_protocol.h.
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "loom/comm/rendezvous/barriers.h"
#include "loom/comm/rendezvous/coordinator.h"
#include "loom/comm/rendezvous/coordinator_outbox.h"
#include "loom/comm/rendezvous/coordinator_protocol.h"
#include "loom/comm/rendezvous/kv_table.h"
#include "loom/comm/rendezvous/liveness.h"
#include "loom/comm/rendezvous/membership.h"
#include "loom/comm/wire/endpoint.h"
#include "loom/comm/transport/transport.h"  // Clock
#include "loom/core/error.h"

namespace loom::comm {

using namespace coordinator_protocol;
using namespace coordinator_state;

namespace {

using namespace std::chrono_literals;

std::span<const std::byte> as_bytes(const std::string& s) { return {reinterpret_cast<const std::byte*>(s.data()), s.size()}; }

constexpr auto kTick = 20ms;  // how often the coordinator checks deadlines and heartbeats

}  // namespace

struct Coordinator::Impl {
  CoordinatorOptions opt;
  std::unique_ptr<ServerEndpoint> ep;  // the ROUTER (and ZAP), polled with wake_fd
  int wake_fd = -1;
  std::string bound;
  std::thread thread;
  std::atomic<bool> stopping{false};
  std::once_flag stopped;

  mutable std::mutex mu;  // everything below; held while handling a message
  mutable std::condition_variable changed;
  MemberTable members;
  Barriers barriers;
  KvTable kv;
  Liveness liveness;

  explicit Impl(CoordinatorOptions o)
      : opt(std::move(o)), members(opt.num_workers, opt.num_servers), liveness(opt.heartbeat_timeout) {}

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
      Outbox out;
      if (tick(Clock::now(), out)) changed.notify_all();
      send(out);
    }
  }

  // Sends every answer (called under mu, so answers leave in the order they were made).
  void send(Outbox& out) {
    for (const Reply& r : out.replies) {
      const std::string header = encode_header(r.type, r.request);
      try {
        ep->router().send({OutFrame::borrow(as_bytes(r.to)), OutFrame::borrow(as_bytes(header)),
                           OutFrame::borrow(as_bytes(r.body))},
                          /*dontwait=*/true);
      } catch (const CommError&) {  // a client that is gone is not our problem
      }
    }
    out.replies.clear();
  }

  void handle(const std::string& id, const std::string& header, const std::string& body) {
    Header h{};
    try {
      h = decode_header(header);
    } catch (const CommError&) {
      return;  // not ours: no reply to what we cannot parse
    }
    std::lock_guard lock(mu);
    Outbox out;
    try {
      dispatch(id, h, body, Clock::now(), out);
    } catch (const std::exception& e) {  // a bad message must not end the coordinator
      out.error(id, h.request, kProtocol, e.what());
    }
    send(out);
    changed.notify_all();  // wait_finished looks again
  }

  void dispatch(const std::string& id, const Header& h, const std::string& body, Clock::time_point now, Outbox& out) {
    if (h.type == Type::Hello) {
      if (!members.hello(id, decode_hello(body).pid)) {
        return out.error(id, h.request, kPeerLost, "this process was declared lost");
      }
      if (members.find(id)->watched()) liveness.watch(id, now);
      const WelcomeBody welcome{.heartbeat_interval = opt.heartbeat_interval,
                                .heartbeat_timeout = opt.heartbeat_timeout};
      return out.reply(id, Type::Welcome, h.request, encode(welcome));
    }
    const Process* p = members.find(id);
    if (p == nullptr) return out.error(id, h.request, kProtocol, "no hello from this client");
    if (h.type == Type::Heartbeat) {  // answered even for a process declared lost: the list tells it so
      decode_empty(body, Type::Heartbeat);
      liveness.heard(id, now);
      return out.reply(id, Type::HeartbeatAck, h.request, encode_heartbeat_ack(members.lost()));
    }
    if (p->state == ProcessState::Lost) return out.error(id, h.request, kPeerLost, "this process was declared lost");
    liveness.heard(id, now);
    switch (h.type) {
      case Type::Register:
        return members.register_process(id, h.request, decode_register(body), now, out);
      case Type::Barrier:
        return barriers.arrive(id, h.request, decode_barrier(body), now, members, out);
      case Type::Set: {
        SetBody set = decode_set(body);
        kv.set(std::move(set.key), std::move(set.value), out);
        return out.reply(id, Type::Done, h.request);
      }
      case Type::Get: {
        GetBody get = decode_get(body);
        return kv.get(id, h.request, std::move(get.key), now + get.timeout, out);
      }
      case Type::Propose: {
        ProposeBody proposal = decode_propose(body);
        return kv.propose(id, h.request, std::move(proposal.key), std::move(proposal.value), out);
      }
      case Type::TryGet:
        return kv.try_get(id, h.request, decode_try_get(body).key, out);
      case Type::Leave:
        return on_leave(id, h.request, decode_leave(body), out);
      default:
        return out.error(id, h.request, kProtocol, format("unexpected message type {}", static_cast<int>(h.type)));
    }
  }

  void on_leave(const std::string& id, uint64_t request, const LeaveBody& leave, Outbox& out) {
    out.reply(id, Type::Done, request);
    const Process& p = *members.find(id);
    if (p.state == ProcessState::Member) {
      if (leave.clean) {
        members.mark_left(id);
        liveness.forget(id);
        barriers.fail_role(p.role, format("{} left the job", describe_process(p.role, p.rank, p.host)), out);
      } else {
        declare_lost(id, leave.reason, out);
      }
    } else if (p.state != ProcessState::Left) {
      forget(id);  // not part of the job yet: its slot is free again
    }
  }

  void declare_lost(const std::string& id, const std::string& reason, Outbox& out) {
    const LostPeer l = members.declare_lost(id, reason, out);
    liveness.forget(id);
    barriers.fail_role(l.role, l.describe(), out);
    kv.drop_waiters_of(id);
  }

  void forget(const std::string& id) {
    members.forget(id);
    liveness.forget(id);
  }

  // True when a silent process was declared lost or forgotten.
  bool tick(Clock::time_point now, Outbox& out) {
    kv.expire(now, out);
    barriers.expire(now, members, out);
    members.expire_registrations(now, out);
    const auto silent = liveness.silent(now);
    for (const auto& s : silent) {
      if (members.find(s.id)->state == ProcessState::Member) {
        declare_lost(s.id, format("no heartbeat for {} ms (heartbeat_timeout {} ms)", s.silent_for.count(),
                                  opt.heartbeat_timeout.count()),
                     out);
      } else {
        forget(s.id);  // not part of the job yet: forget it
      }
    }
    return !silent.empty();
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
  return impl_->members.formed();
}

std::vector<LostPeer> Coordinator::lost() const {
  std::lock_guard lock(impl_->mu);
  return impl_->members.lost();
}

bool Coordinator::wait_finished(std::chrono::milliseconds timeout) const {
  std::unique_lock lock(impl_->mu);
  const auto done = [&] { return impl_->members.finished(); };
  return impl_->changed.wait_for(lock, timeout, [&] { return done() || impl_->stopping.load(); }) && done();
}

}  // namespace loom::comm
