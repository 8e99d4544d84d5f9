// Internal to loom/train: reading training checkpoints written in an older layout.
//
// Checkpoints of parameter-server runs written before optim's one layout of
// optimizer state (optim/state_dict.h) held the servers' state per key:
// tensors "servers.key<k>" (the value) and "servers.key<k>.state<j>",
// metadata "servers.format" = "loom-kvstore-state-v1",
// "servers.key<k>.updates" and "servers.key<k>.slots", key k being the
// model's k-th parameter; their "optim.*" held only the idle local
// optimizer's "step" (0) and "lr". upgrade_legacy_server_state renames them
// into today's layout, so that any strategy resumes them:
//
//  servers.key<k>           -> model.<p>          (the servers' weights, which the old resume used)
//  servers.key<k>.state<j>  -> optim.<p>.<slot j> (the rule's j-th state_names())
//  servers.key<k>.updates   -> optim.<p>.step     (when >= 1)
//  loom.step                -> optim.step
//
// Keys past the parameters were server-embedding tables; they cannot be
// named from the keys alone and are refused (IoError naming the old layout).
#pragma once

#include <string>

#include "loom/io/safetensors.h"
#include "loom/optim/state_dict.h"

namespace loom::train {

// Rewrites `file` in place when it is in the old layout (then returns true);
// `layout` is the job's optimizer (its parameters in the model's order and
// its rule's slots). IoError naming `source` when the old state does not fit.
bool upgrade_legacy_server_state(io::SafetensorsFile& file, const optim::StateLayout& layout,
                                 const std::string& source);

}  // namespace loom::train
