// Barriers: arrival, completion, failure and timeouts (barriers.h).
#include "loom/comm/rendezvous/barriers.h"

#include <algorithm>

namespace loom::comm::coordinator_state {

using namespace coordinator_protocol;

namespace {

bool in_scope(const Process& p, const std::string& scope) { return scope.empty() || p.role == scope; }

bool in_job(const Process& p) {
  return p.state == ProcessState::Member || p.state == ProcessState::Left || p.state == ProcessState::Lost;
}

}  // namespace

void Barriers::arrive(const std::string& id, uint64_t request, const BarrierBody& barrier, Clock::time_point now,
                      const MemberTable& members, Outbox& out) {
  const std::string& name = barrier.name;
  const std::string& scope = barrier.scope;
  const Process* p = members.find(id);
  if (p == nullptr || p->state != ProcessState::Member)
    return out.error(id, request, kRefused, "barrier before this process registered");
  if (!scope.empty() && !valid_role(scope)) return out.error(id, request, kRefused, format("unknown role '{}'", scope));
  if (!scope.empty() && p->role != scope) {
    return out.error(id, request, kRefused, format("a {} cannot enter a barrier of the {}s", p->role, scope));
  }
  size_t expected = 0;
  for (const auto& [pid, m] : members.processes()) {
    if (!in_job(m) || !in_scope(m, scope)) continue;
    if (m.state == ProcessState::Lost || m.state == ProcessState::Left) {
      return out.error(id, request, kPeerLost,
                       format("barrier '{}': {} {}", name, describe_process(m.role, m.rank, m.host),
                              m.state == ProcessState::Lost ? "was lost" : "left the job"));
    }
    ++expected;
  }
  auto [it, fresh] = barriers_.try_emplace(name);
  Pending& b = it->second;
  if (fresh) b.scope = scope;
  if (b.scope != scope) {
    return out.error(id, request, kRefused,
                     format("barrier '{}' was entered for '{}' and now for '{}'", name, b.scope, scope));
  }
  auto same = std::find_if(b.waiters.begin(), b.waiters.end(), [&](const Waiter& w) { return w.id == id; });
  if (same != b.waiters.end()) b.waiters.erase(same);  // a retry replaces the earlier arrival
  b.waiters.push_back({id, request, now + barrier.timeout});
  if (b.waiters.size() == expected) {
    for (const auto& w : b.waiters) out.reply(w.id, Type::Done, w.request);
    barriers_.erase(it);
  }
}

void Barriers::fail_role(const std::string& role, const std::string& why, Outbox& out) {
  for (auto it = barriers_.begin(); it != barriers_.end();) {
    if (it->second.scope.empty() || it->second.scope == role) {
      for (const auto& w : it->second.waiters)
        out.error(w.id, w.request, kPeerLost, format("barrier '{}': {}", it->first, why));
      it = barriers_.erase(it);
    } else {
      ++it;
    }
  }
}

void Barriers::expire(Clock::time_point now, const MemberTable& members, Outbox& out) {
  for (auto& [name, b] : barriers_) {
    for (auto w = b.waiters.begin(); w != b.waiters.end();) {
      if (now < w->deadline) {
        ++w;
        continue;
      }
      out.error(w->id, w->request, kTimedOut,
                format("barrier '{}' timed out waiting for {}", name, missing_from(b, members)));
      w = b.waiters.erase(w);
    }
  }
  std::erase_if(barriers_, [](const auto& entry) { return entry.second.waiters.empty(); });
}

std::string Barriers::missing_from(const Pending& b, const MemberTable& members) {
  std::string out;
  int listed = 0, missing = 0;
  for (const auto& [pid, p] : members.processes()) {
    if (p.state != ProcessState::Member || !in_scope(p, b.scope)) continue;
    const std::string& id = pid;  // clang 14 cannot capture a structured binding
    if (std::any_of(b.waiters.begin(), b.waiters.end(), [&](const Waiter& w) { return w.id == id; })) continue;
    ++missing;
    if (listed++ < 8) out += (out.empty() ? "" : ", ") + describe_process(p.role, p.rank, p.host);
  }
  if (missing > listed) out += format(" and {} more", missing - listed);
  return out;
}

}  // namespace loom::comm::coordinator_state
