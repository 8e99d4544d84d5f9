// MemberTable: registration, rank assignment, leaving and loss (membership.h).
#include "loom/comm/rendezvous/membership.h"

#include <algorithm>
#include <tuple>

#include "loom/core/error.h"

namespace loom::comm::coordinator_state {

using namespace coordinator_protocol;

bool MemberTable::hello(const std::string& id, int64_t pid) {
  auto [it, fresh] = procs_.try_emplace(id);
  if (!fresh && it->second.state == ProcessState::Lost) return false;
  it->second.pid = pid;
  return true;
}

Process* MemberTable::find(const std::string& id) {
  auto it = procs_.find(id);
  return it == procs_.end() ? nullptr : &it->second;
}

const Process* MemberTable::find(const std::string& id) const {
  auto it = procs_.find(id);
  return it == procs_.end() ? nullptr : &it->second;
}

void MemberTable::register_process(const std::string& id, uint64_t request, RegisterBody reg,
                                   Clock::time_point now, Outbox& out) {
  Process& p = procs_.at(id);
  if (!valid_role(reg.role))
    return out.error(id, request, kRefused, format("unknown role '{}' (worker or server)", reg.role));
  if (p.state != ProcessState::Connected) return out.error(id, request, kRefused, "this process registered already");
  if (formed_) {
    return out.error(id, request, kRefused,
                     format("the job has formed already ({} workers, {} servers)", num_workers_, num_servers_));
  }
  const int want = expected(reg.role);
  if (want == 0) return out.error(id, request, kRefused, format("this job has no {}s", reg.role));
  if (reg.rank >= want) {
    return out.error(id, request, kRefused,
                     format("rank {} asked for, but the job has {} {}s", reg.rank, want, reg.role));
  }
  int registered = 0;
  for (const auto& [other_id, o] : procs_) {
    if (o.state != ProcessState::Registering || o.role != reg.role) continue;
    ++registered;
    if (reg.rank >= 0 && o.preferred == reg.rank) {
      return out.error(id, request, kRefused,
                       format("{} rank {} is taken already by host {} (pid {})", reg.role, reg.rank, o.host, o.pid));
    }
  }
  if (registered >= want) {
    return out.error(id, request, kRefused, format("all {} {}s have registered already", want, reg.role));
  }
  p.state = ProcessState::Registering;
  p.role = std::move(reg.role);
  p.host = std::move(reg.host);
  p.endpoint = std::move(reg.endpoint);
  p.preferred = reg.rank;
  p.order = next_order_++;
  p.register_request = request;
  p.register_deadline = now + reg.timeout;
  try_form(out);
}

void MemberTable::try_form(Outbox& out) {
  std::map<std::string, std::vector<Process*>> by_role;
  for (auto& [pid, p] : procs_) {
    if (p.state == ProcessState::Registering) by_role[p.role].push_back(&p);
  }
  if (static_cast<int>(by_role["worker"].size()) != num_workers_ ||
      static_cast<int>(by_role["server"].size()) != num_servers_) {
    return;
  }
  // Ranks: asked-for ones first, then the free ones by (host, arrival), so
  // processes on one host get contiguous ranks.
  std::vector<ProcessInfo> all;
  for (const char* role : {"worker", "server"}) {
    auto& members = by_role[role];
    std::vector<bool> taken(members.size(), false);
    for (Process* p : members) {
      if (p->preferred >= 0) taken[static_cast<size_t>(p->preferred)] = true;
      p->rank = p->preferred;
    }
    std::vector<Process*> rest;
    for (Process* p : members) {
      if (p->preferred < 0) rest.push_back(p);
    }
    std::sort(rest.begin(), rest.end(), [](const Process* a, const Process* b) {
      return std::tie(a->host, a->order) < std::tie(b->host, b->order);
    });
    size_t next = 0;
    for (Process* p : rest) {
      while (taken[next]) ++next;
      p->rank = static_cast<int>(next);
      taken[next] = true;
    }
    std::sort(members.begin(), members.end(), [](const Process* a, const Process* b) { return a->rank < b->rank; });
    for (Process* p : members) all.push_back({p->role, p->rank, p->host, -1, -1, p->endpoint});
  }
  std::map<std::string, int> host_index;
  std::map<std::pair<std::string, std::string>, int> local;
  for (auto& info : all) {
    auto [h, fresh] = host_index.try_emplace(info.host, static_cast<int>(host_index.size()));
    info.host_index = h->second;
    info.local_rank = local[{info.role, info.host}]++;
  }
  Membership job{.num_workers = num_workers_, .num_servers = num_servers_,
                 .num_hosts = static_cast<int>(host_index.size()), .processes = std::move(all)};
  formed_ = true;
  for (auto& [pid, p] : procs_) {
    if (p.state != ProcessState::Registering) continue;
    p.state = ProcessState::Member;
    job.role = p.role;
    job.rank = p.rank;
    out.reply(pid, Type::Registered, p.register_request, encode_registered(job));
  }
}

void MemberTable::expire_registrations(Clock::time_point now, Outbox& out) {
  for (auto& [pid, p] : procs_) {
    if (p.state != ProcessState::Registering || now < p.register_deadline) continue;
    // Counted as each one expires, so a later one of the same tick no longer counts the earlier.
    std::string waiting;
    for (const char* role : {"worker", "server"}) {
      int have = 0;
      for (const auto& [oid, o] : procs_) have += o.state == ProcessState::Registering && o.role == role;
      if (have < expected(role))
        waiting += format("{}{} of {} {}s", waiting.empty() ? "" : ", ", have, expected(role), role);
    }
    out.error(pid, p.register_request, kTimedOut, format("rendezvous timed out: registered so far {}", waiting));
    p.state = ProcessState::Connected;  // its slot is free again
  }
}

void MemberTable::mark_left(const std::string& id) {
  Process& p = procs_.at(id);
  LOOM_ASSERT(p.state == ProcessState::Member);
  p.state = ProcessState::Left;
}

LostPeer MemberTable::declare_lost(const std::string& id, const std::string& reason, Outbox& out) {
  Process& p = procs_.at(id);
  LOOM_ASSERT(p.state == ProcessState::Member);
  p.state = ProcessState::Lost;
  LostPeer l{p.role, p.rank, p.host, reason};
  lost_.push_back(l);
  const std::string body = encode(l);
  for (const auto& [pid, o] : procs_) {
    if (pid != id && o.watched()) out.reply(pid, Type::Lost, 0, body);
  }
  return l;
}

bool MemberTable::finished() const {
  if (!formed_) return false;
  for (const auto& [pid, p] : procs_) {
    if (p.state == ProcessState::Member) return false;
  }
  return true;
}

}  // namespace loom::comm::coordinator_state
