#include "loom/ps/server.h"

#include <mutex>
#include <thread>

#include "loom/comm/wire/endpoint.h"
#include "loom/core/error.h"
#include "loom/ps/replication.h"
#include "loom/ps/server_handlers.h"
#include "loom/ps/server_replies.h"
#include "loom/ps/server_slices.h"

namespace loom::ps {

using detail::MsgPtr;

// The server's face and its loop: one thread polls the ROUTER (requests from
// workers and servers) and the DEALERs to the other servers (replication's
// acknowledgements), decodes each request, hands it to the handlers, and
// answers with an error what they refuse. Servers reported lost wait in a
// queue the loop drains between polls.
struct KVServer::Impl {
  ServerOptions o;
  std::unique_ptr<comm::ServerEndpoint> ep;  // the ROUTER workers and other servers send requests to
  detail::ServerCounters n;
  detail::Replier replier;
  detail::SliceTable slices;
  detail::Replication replication;  // after `ep`: its DEALERs close before the endpoint's context
  detail::RequestHandlers handlers;
  std::thread thread;
  std::atomic<bool> stopping{false};
  std::mutex lost_mu;
  std::vector<int> lost_queue;

  explicit Impl(const ServerOptions& options)
      : o(options),
        ep(bind(options)),
        replier(*ep, n),
        slices(o),
        replication(o, slices, replier, n),
        handlers(o, slices, replier, replication, n) {}
  ~Impl() { stop(); }

  static std::unique_ptr<comm::ServerEndpoint> bind(const ServerOptions& o) {
    try {
      return std::make_unique<comm::ServerEndpoint>(
          comm::ServerEndpointOptions{.bind = o.bind, .security = o.security});
    } catch (const CommError& e) {
      throw CommError(format("parameter server: {}", e.what()));
    }
  }

  void stop() {
    stopping = true;
    if (thread.joinable()) thread.join();
  }

  // frames: [routing id] [header] [payload...]
  void on_request(std::vector<MsgPtr>& frames) {
    LOOM_CHECK_T(CommError, frames.size() >= 2, "ps protocol: a message of {} frames", frames.size());
    std::vector<MsgPtr> route(frames.begin(), frames.begin() + 1);
    Header h;
    try {
      h = decode_header(frames[1]->bytes());
      LOOM_CHECK_T(CommError, frames.size() - 2 == h.num_frames, "ps protocol: header announces {} frames, got {}",
                   h.num_frames, frames.size() - 2);
    } catch (const Error& e) {
      replier.reply_error(route, Header{}, e.what());
      return;
    }
    ++n.requests;
    for (size_t i = 2; i < frames.size(); ++i) n.bytes_in += frames[i]->bytes().size();
    try {
      handlers.handle(route, h, frames);
    } catch (const Error& e) {
      replier.reply_error(route, h, e.what());
    } catch (const std::exception& e) {
      replier.reply_error(route, h, format("server {}: {}", o.rank, e.what()));
    }
  }

  void on_servers_lost() {
    std::vector<int> q;
    {
      std::lock_guard lock(lost_mu);
      q.swap(lost_queue);
    }
    for (int s : q) {
      for (auto& frames : replication.server_lost(s)) on_request(frames);
    }
  }

  void loop() {
    while (!stopping) {
      on_servers_lost();
      try {
        ep->poll(std::chrono::milliseconds(20), [this](const comm::Route& from, std::vector<MsgPtr>& frames) {
          frames.insert(frames.begin(), from);  // handlers see [route] [header] [payload...]
          try {
            on_request(frames);
          } catch (const std::exception& e) {
            ++n.errors;
            core::log(o.log, core::LogLevel::Warning, format("server {}: dropped a message: {}", o.rank, e.what()));
          }
        });
      } catch (const std::exception& e) {
        core::log(o.log, core::LogLevel::Error, format("server {}: {}", o.rank, e.what()));
        return;
      }
    }
  }
};

namespace {

const ServerOptions& checked(const ServerOptions& options) {
  check_placement(options.placement);
  LOOM_CHECK_T(ConfigError, options.rank >= 0 && options.rank < options.placement.num_servers,
               "server rank {} of {} servers", options.rank, options.placement.num_servers);
  LOOM_CHECK_T(ConfigError, options.num_workers >= 1, "parameter server: needs at least one worker");
  comm::check_security(options.security);
  return options;
}

}  // namespace

KVServer::KVServer(const ServerOptions& options) : impl_(std::make_unique<Impl>(checked(options))) {}

KVServer::~KVServer() = default;

std::string KVServer::endpoint() const { return impl_->ep->endpoint(); }

void KVServer::set_role(int rank, bool sync) {
  LOOM_CHECK(!impl_->thread.joinable(), "parameter server: set_role() after start()");
  LOOM_CHECK_T(ConfigError, rank >= 0 && rank < impl_->o.placement.num_servers, "server rank {} of {} servers", rank,
               impl_->o.placement.num_servers);
  impl_->o.rank = rank;
  impl_->o.sync = sync;
}

void KVServer::set_slice_elements(int64_t slice_elements) {
  LOOM_CHECK(!impl_->thread.joinable(), "parameter server: set_slice_elements() after start()");
  PlacementOptions placement = impl_->o.placement;
  placement.slice_elements = slice_elements;
  check_placement(placement);
  impl_->o.placement = placement;
}

void KVServer::connect_servers(const std::vector<std::string>& endpoints) {
  Impl& m = *impl_;
  LOOM_CHECK_T(ConfigError, static_cast<int>(endpoints.size()) == m.o.placement.num_servers,
               "parameter server: {} server endpoints for {} servers", endpoints.size(), m.o.placement.num_servers);
  LOOM_CHECK(!m.thread.joinable(), "parameter server: connect_servers() after start()");
  if (m.o.placement.replicas == 0) return;  // servers only talk to each other to replicate
  m.replication.connect(*m.ep, endpoints);
}

void KVServer::start() {
  LOOM_CHECK(!impl_->thread.joinable(), "parameter server: started twice");
  impl_->thread = std::thread([m = impl_.get()] { m->loop(); });
}

void KVServer::stop() { impl_->stop(); }

void KVServer::server_lost(int rank) {
  std::lock_guard lock(impl_->lost_mu);
  impl_->lost_queue.push_back(rank);
}

ServerStats KVServer::stats() const {
  const Impl& m = *impl_;
  return {.requests = m.n.requests, .errors = m.n.errors, .updates = m.n.updates, .bytes_in = m.n.bytes_in,
          .bytes_out = m.n.bytes_out};
}

}  // namespace loom::ps
