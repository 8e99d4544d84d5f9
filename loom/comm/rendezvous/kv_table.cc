// KvTable: set, proposals, waiting gets and their deadlines (kv_table.h).
#include "loom/comm/rendezvous/kv_table.h"

namespace loom::comm::coordinator_state {

using namespace coordinator_protocol;

void KvTable::set(std::string key, std::string value, Outbox& out) {
  auto [first, last] = gets_.equal_range(key);
  const std::string body = encode(ValueBody{value});
  for (auto g = first; g != last; ++g) out.reply(g->second.id, Type::Value, g->second.request, body);
  gets_.erase(first, last);
  values_[std::move(key)] = std::move(value);
}

void KvTable::get(const std::string& id, uint64_t request, std::string key, Clock::time_point deadline,
                  Outbox& out) {
  if (auto v = values_.find(key); v != values_.end()) {
    return out.reply(id, Type::Value, request, encode(ValueBody{v->second}));
  }
  gets_.emplace(std::move(key), Waiter{id, request, deadline});
}

void KvTable::propose(const std::string& id, uint64_t request, std::string key, std::string value, Outbox& out) {
  if (!values_.contains(key)) set(key, std::move(value), out);
  out.reply(id, Type::Value, request, encode(ValueBody{values_.at(key)}));
}

void KvTable::try_get(const std::string& id, uint64_t request, const std::string& key, Outbox& out) {
  MaybeValueBody answer;
  if (auto v = values_.find(key); v != values_.end()) answer.value = v->second;
  out.reply(id, Type::MaybeValue, request, encode(answer));
}

void KvTable::drop_waiters_of(const std::string& id) {
  for (auto g = gets_.begin(); g != gets_.end();) g = g->second.id == id ? gets_.erase(g) : std::next(g);
}

void KvTable::expire(Clock::time_point now, Outbox& out) {
  for (auto g = gets_.begin(); g != gets_.end();) {
    if (now < g->second.deadline) {
      ++g;
      continue;
    }
    out.error(g->second.id, g->second.request, kTimedOut, format("key '{}' was not set in time", g->first));
    g = gets_.erase(g);
  }
}

}  // namespace loom::comm::coordinator_state
