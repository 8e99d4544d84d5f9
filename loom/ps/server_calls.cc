#include "loom/ps/server_calls.h"

#include "loom/comm/rendezvous/coordinator.h"
#include "loom/core/error.h"
#include "loom/ps/failover.h"
#include "loom/ps/messages.h"

namespace loom::ps {

comm::Call& RequestBatch::add(Header h, std::vector<int> chain, std::vector<comm::OutFrame> payload,
                              OnPayload on_payload) {
  h.sender = sender_;
  h.num_frames = static_cast<uint32_t>(payload.size());
  const HeaderBytes b = encode_header(h);
  comm::Call c{.header = {b.begin(), b.end()}, .payload = std::move(payload), .peers = std::move(chain)};
  c.on_reply = [this, f = std::move(on_payload)](std::span<const comm::FramePtr> reply) {
    const Header h = decode_header(reply[0]->bytes());
    if (h.status == Status::Error) {
      errors_.emplace_back(reply.size() > 1 ? reply[1]->view() : std::string_view());
      return;
    }
    ++ok_;
    if (f) f(reply.subspan(1));
  };
  calls_.push_back(std::move(c));
  return calls_.back();
}

void RequestBatch::throw_errors() const {
  if (errors_.empty()) return;
  const auto& e = errors_;
  throw ValueError(e.size() == 1 ? e[0] : format("{} (and {} more errors)", e[0], e.size() - 1));
}

struct ServerCalls::Links {
  explicit Links(io::Mode mode) : policy(mode) {}
  FailoverPolicy policy;
  std::unique_ptr<comm::RequestClient> client;
};

ServerCalls::ServerCalls(const ServerCallsOptions& o) : links_(std::make_shared<Links>(o.type)), timeout_(o.timeout) {
  links_->client = std::make_unique<comm::RequestClient>(
      comm::RequestClientOptions{.peers = o.endpoints, .security = o.security, .ids = request_ids(), .name = "kvstore"});
  if (o.coordinator) {
    std::weak_ptr<Links> weak = links_;
    o.coordinator->on_peer_lost([weak](const comm::LostPeer& p) {
      auto l = weak.lock();
      if (!l) return;
      if (const auto server = l->policy.lost(p)) l->client->peer_lost(*server, p.describe());
    });
  }
}

void ServerCalls::run(RequestBatch& batch, const char* what) {
  const Links& l = *links_;
  links_->client->call(batch.calls(), {.timeout = timeout_, .what = what, .check = [&l] { l.policy.check(); }});
  batch.throw_errors();
}

const comm::RequestStats& ServerCalls::stats() const { return links_->client->stats(); }

}  // namespace loom::ps
