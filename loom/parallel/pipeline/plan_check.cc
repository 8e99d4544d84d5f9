#include "loom/parallel/pipeline/plan_check.h"

#include <map>
#include <tuple>

#include "loom/core/error.h"

namespace loom::parallel::pipeline {
namespace {

// Where each action of one (micro-batch, chunk) sits in its rank's list; -1: absent.
struct Slots {
  int forward = -1, backward = -1, backward_input = -1, backward_weight = -1, recompute = -1;
  int recv_activation = -1, send_activation = -1, recv_gradient = -1, send_gradient = -1;
  int& of(Op op) {
    switch (op) {
      case Op::Forward: return forward;
      case Op::Backward: return backward;
      case Op::BackwardInput: return backward_input;
      case Op::BackwardWeight: return backward_weight;
      case Op::Recompute: return recompute;
      case Op::SendActivation: return send_activation;
      case Op::RecvActivation: return recv_activation;
      case Op::SendGradient: return send_gradient;
      case Op::RecvGradient: return recv_gradient;
    }
    LOOM_ASSERT(false);
  }
  int input_gradient() const { return backward >= 0 ? backward : backward_input; }  // the action that makes it
};

std::string at(const Plan& plan, int rank, int index) {
  return format("rank {} action {} ({})", rank, index, to_string(plan.ranks[rank][index]));
}

// The rank a send or receive must name; -1 when the chunk has no such neighbour.
int expected_peer(const Plan& plan, const Action& a) {
  const int last = plan.num_chunks() - 1;
  switch (a.op) {
    case Op::SendActivation: return a.chunk < last ? plan.rank_of(a.chunk + 1) : -1;
    case Op::RecvGradient: return a.chunk < last ? plan.rank_of(a.chunk + 1) : -1;
    case Op::RecvActivation: return a.chunk > 0 ? plan.rank_of(a.chunk - 1) : -1;
    case Op::SendGradient: return a.chunk > 0 ? plan.rank_of(a.chunk - 1) : -1;
    default: return -1;
  }
}

void check_fields(const Plan& plan) {
  const ScheduleOptions& o = plan.options;
  LOOM_CHECK_T(ConfigError, static_cast<int>(plan.ranks.size()) == o.stages,
               "pipeline plan: {} rank lists for {} stages", plan.ranks.size(), o.stages);
  for (int r = 0; r < o.stages; ++r) {
    for (int k = 0; k < static_cast<int>(plan.ranks[r].size()); ++k) {
      const Action& a = plan.ranks[r][k];
      LOOM_CHECK_T(ConfigError, a.chunk >= 0 && a.chunk < plan.num_chunks() && plan.rank_of(a.chunk) == r,
                   "pipeline plan: {} names chunk {}, not one of rank {}'s ({} chunks on {} ranks)", at(plan, r, k),
                   a.chunk, r, plan.num_chunks(), o.stages);
      LOOM_CHECK_T(ConfigError, a.microbatch >= 0 && a.microbatch < o.microbatches,
                   "pipeline plan: {} names micro-batch {} of {}", at(plan, r, k), a.microbatch, o.microbatches);
      if (is_compute(a.op)) {
        LOOM_CHECK_T(ConfigError, a.peer == -1, "pipeline plan: {} is compute but names peer {}", at(plan, r, k),
                     a.peer);
        continue;
      }
      const int peer = expected_peer(plan, a);
      LOOM_CHECK_T(ConfigError, peer >= 0 && peer != r,
                   "pipeline plan: {} has no remote neighbour to talk to (chunk {} of {}; neighbours on the same "
                   "rank hand over without messages)",
                   at(plan, r, k), a.chunk, plan.num_chunks());
      LOOM_CHECK_T(ConfigError, a.peer == peer,
                   "pipeline plan: {} names peer {}, but the neighbouring chunk runs on rank {}", at(plan, r, k),
                   a.peer, peer);
    }
  }
}

// slots[chunk][microbatch]
using SlotTable = std::vector<std::vector<Slots>>;

SlotTable collect(const Plan& plan) {
  SlotTable slots(plan.num_chunks(), std::vector<Slots>(plan.options.microbatches));
  for (int r = 0; r < plan.options.stages; ++r) {
    for (int k = 0; k < static_cast<int>(plan.ranks[r].size()); ++k) {
      const Action& a = plan.ranks[r][k];
      int& slot = slots[a.chunk][a.microbatch].of(a.op);
      LOOM_CHECK_T(ConfigError, slot < 0, "pipeline plan: {} repeats action {} of the same rank", at(plan, r, k), slot);
      slot = k;
    }
  }
  return slots;
}

void check_dependencies(const Plan& plan, const SlotTable& slots) {
  const int last = plan.num_chunks() - 1;
  for (int c = 0; c <= last; ++c) {
    const int r = plan.rank_of(c);
    for (int i = 0; i < plan.options.microbatches; ++i) {
      const Slots& s = slots[c][i];
      const std::string what = format("pipeline plan: micro-batch {} on chunk {} (rank {})", i, c, r);
      LOOM_CHECK_T(ConfigError, s.forward >= 0, "{} has no forward", what);
      const bool split = s.backward_input >= 0 || s.backward_weight >= 0;
      LOOM_CHECK_T(ConfigError, !(split && s.backward >= 0), "{} has both a full backward (action {}) and a split one",
                   what, s.backward);
      if (split) {
        LOOM_CHECK_T(ConfigError, s.backward_input >= 0 && s.backward_weight >= 0,
                     "{} has a split backward without its {}", what,
                     s.backward_input < 0 ? "input gradient (Bi)" : "weight gradient (W)");
        LOOM_CHECK_T(ConfigError, s.backward_input < s.backward_weight,
                     "{}: its weight gradient (action {}) runs before its input gradient (action {})", what,
                     s.backward_weight, s.backward_input);
      } else {
        LOOM_CHECK_T(ConfigError, s.backward >= 0, "{} has no backward", what);
      }
      const int bwd = s.input_gradient();
      LOOM_CHECK_T(ConfigError, s.forward < bwd, "{}: its backward (action {}) runs before its forward (action {})",
                   what, bwd, s.forward);
      if (plan.recomputes(c)) {
        LOOM_CHECK_T(ConfigError, s.forward < s.recompute && s.recompute < bwd,
                     "{} recomputes its activations, but has no Recompute between its forward (action {}) and its "
                     "backward (action {})",
                     what, s.forward, bwd);
      } else {
        LOOM_CHECK_T(ConfigError, s.recompute < 0,
                     "{} keeps its activations (recomputation off), but action {} recomputes them", what,
                     s.recompute);
      }
      // The activation comes in before F; the output goes out after it.
      if (c > 0 && plan.rank_of(c - 1) != r) {
        LOOM_CHECK_T(ConfigError, s.recv_activation >= 0 && s.recv_activation < s.forward,
                     "{}: its forward (action {}) has no receive of its input activation before it", what, s.forward);
      } else if (c > 0) {
        LOOM_CHECK_T(ConfigError, slots[c - 1][i].forward < s.forward,
                     "{}: its forward (action {}) runs before chunk {}'s forward (action {}) on the same rank", what,
                     s.forward, c - 1, slots[c - 1][i].forward);
      }
      if (c < last && plan.rank_of(c + 1) != r) {
        LOOM_CHECK_T(ConfigError, s.send_activation > s.forward,
                     "{}: no send of its activation after its forward (action {})", what, s.forward);
        LOOM_CHECK_T(ConfigError, s.recv_gradient >= 0 && s.recv_gradient < bwd,
                     "{}: its backward (action {}) has no receive of its output gradient before it", what, bwd);
      } else if (c < last) {
        LOOM_CHECK_T(ConfigError, slots[c + 1][i].input_gradient() < bwd,
                     "{}: its backward (action {}) runs before chunk {}'s (action {}) on the same rank", what, bwd,
                     c + 1, slots[c + 1][i].input_gradient());
      }
      if (c > 0 && plan.rank_of(c - 1) != r) {
        LOOM_CHECK_T(ConfigError, s.send_gradient > bwd,
                     "{}: no send of its input gradient after its backward (action {})", what, bwd);
      }
    }
  }
}

// A channel: messages of one kind from one rank to another, first in, first out.
using Channel = std::tuple<int, int, bool>;  // sender, receiver, gradient?

Channel channel_of(int rank, const Action& a) {
  const bool gradient = a.op == Op::SendGradient || a.op == Op::RecvGradient;
  return is_send(a.op) ? Channel{rank, a.peer, gradient} : Channel{a.peer, rank, gradient};
}

struct Message {
  int microbatch, to_chunk, rank, index;  // index: the action that sends or receives it
};

void check_channels(const Plan& plan) {
  std::map<Channel, std::vector<Message>> sends, recvs;
  for (int r = 0; r < plan.options.stages; ++r) {
    for (int k = 0; k < static_cast<int>(plan.ranks[r].size()); ++k) {
      const Action& a = plan.ranks[r][k];
      if (is_send(a.op)) {
        const int to = a.op == Op::SendActivation ? a.chunk + 1 : a.chunk - 1;
        sends[channel_of(r, a)].push_back({a.microbatch, to, r, k});
      } else if (is_recv(a.op)) {
        recvs[channel_of(r, a)].push_back({a.microbatch, a.chunk, r, k});
      }
    }
  }
  for (const auto& [channel, sent] : sends) {
    const std::vector<Message>& got = recvs[channel];
    const auto& [from, to, gradient] = channel;
    const char* kind = gradient ? "gradient" : "activation";
    for (size_t n = 0; n < sent.size() && n < got.size(); ++n) {
      const Message &s = sent[n], &g = got[n];
      LOOM_CHECK_T(ConfigError, s.microbatch == g.microbatch && s.to_chunk == g.to_chunk,
                   "pipeline plan: the {} channel rank {} -> rank {} is out of order: message {} is {} but {} "
                   "expects it",
                   kind, from, to, n, at(plan, s.rank, s.index), at(plan, g.rank, g.index));
    }
    LOOM_CHECK_T(ConfigError, sent.size() == got.size(),
                 "pipeline plan: the {} channel rank {} -> rank {} has {} sends and {} receives", kind, from, to,
                 sent.size(), got.size());
  }
  for (const auto& [channel, got] : recvs) {
    LOOM_CHECK_T(ConfigError, got.empty() || sends.count(channel),
                 "pipeline plan: {} waits for a message nobody sends", at(plan, got[0].rank, got[0].index));
  }
}

// Runs the plan with buffered sends and blocking receives until no rank can move.
void check_completes(const Plan& plan) {
  const int p = plan.options.stages;
  std::map<Channel, int> posted, taken;
  std::vector<size_t> next(p, 0);
  for (bool moved = true; moved;) {
    moved = false;
    for (int r = 0; r < p; ++r) {
      const std::vector<Action>& actions = plan.ranks[r];
      while (next[r] < actions.size()) {
        const Action& a = actions[next[r]];
        if (is_send(a.op)) ++posted[channel_of(r, a)];
        if (is_recv(a.op)) {
          const Channel ch = channel_of(r, a);
          if (taken[ch] >= posted[ch]) break;
          ++taken[ch];
        }
        ++next[r];
        moved = true;
      }
    }
  }
  std::string blocked;
  for (int r = 0; r < p; ++r) {
    if (next[r] < plan.ranks[r].size()) {
      blocked += format("{}{} waits for its message", blocked.empty() ? "" : "; ", at(plan, r, next[r]));
    }
  }
  LOOM_CHECK_T(ConfigError, blocked.empty(), "pipeline plan deadlocks: {}", blocked);
}

}  // namespace

void check_plan(const Plan& plan) {
  check_schedule_options(plan.options);
  check_fields(plan);
  check_dependencies(plan, collect(plan));
  check_channels(plan);
  check_completes(plan);
}

}  // namespace loom::parallel::pipeline
