// Internal to loom_ps: a worker's side of saving and restoring the servers'
// optimizer state. Fetching asks every slice of every key for its state
// (Op::GetState) and gathers each key whole; sending cuts each key's state
// into its slices and sets them (Op::SetState), the update count kept and
// rounds and push versions from 0. The tensors' names are kvstore.cc's
// (detail::put_states / get_states).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <span>
#include <string>

#include "loom/ps/kvstore_internal.h"
#include "loom/ps/request_plan.h"
#include "loom/ps/server_calls.h"

namespace loom::ps {

// The layout of an initialized key (an error naming the key for another).
using LayoutOf = std::function<const KeyLayout&(int64_t key)>;

struct WorkerStateOptions {
  int rank = 0;         // the sender of the requests
  int num_workers = 1;  // the restored slices count every worker's pushes from 0
  PlacementOptions placement;
};

// Every key of `keys` whole: value, slots and update count, from its slices.
std::map<int64_t, detail::KeyState> fetch_key_states(ServerCalls& servers, std::span<const int64_t> keys,
                                                     const LayoutOf& layout_of, const WorkerStateOptions& o);
// Puts `states` back on the servers. ShapeError naming `source` when a key's
// saved shape or dtype is not the one initialized here.
void send_key_states(ServerCalls& servers, const std::map<int64_t, detail::KeyState>& states,
                     const LayoutOf& layout_of, const std::string& source, const WorkerStateOptions& o);

}  // namespace loom::ps
