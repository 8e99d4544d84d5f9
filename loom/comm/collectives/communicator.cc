#include "loom/comm/collectives/communicator.h"

#include <algorithm>
#include <set>

#include "loom/core/error.h"

namespace loom::comm {

Communicator make_communicator(std::shared_ptr<Transport> transport, std::vector<int> host_of_rank) {
  LOOM_CHECK(transport != nullptr, "make_communicator: transport is null");
  Communicator c;
  c.rank = transport->rank();
  c.size = transport->size();
  c.transport = std::move(transport);
  c.host_of_rank = std::move(host_of_rank);
  check_communicator(c, "make_communicator");
  return c;
}

void check_communicator(const Communicator& c, const char* what) {
  LOOM_CHECK(c.transport != nullptr, "{}: communicator has no transport", what);
  LOOM_CHECK(c.size >= 1 && c.size == c.transport->size(), "{}: communicator size {} but transport size {}", what,
             c.size, c.transport->size());
  LOOM_CHECK(c.rank >= 0 && c.rank == c.transport->rank(), "{}: communicator rank {} but transport rank {}", what,
             c.rank, c.transport->rank());
  LOOM_CHECK(c.host_of_rank.empty() || static_cast<int>(c.host_of_rank.size()) == c.size,
             "{}: host_of_rank has {} entries, expected 0 or {} (one per rank)", what, c.host_of_rank.size(), c.size);
  for (size_t r = 0; r < c.host_of_rank.size(); ++r) {
    LOOM_CHECK(c.host_of_rank[r] >= 0, "{}: host_of_rank[{}] is {}, expected >= 0", what, r, c.host_of_rank[r]);
  }
}

int host_of(const Communicator& c, int rank) {
  LOOM_CHECK(rank >= 0 && rank < c.size, "host_of: rank {} out of range for size {}", rank, c.size);
  return c.host_of_rank.empty() ? 0 : c.host_of_rank[static_cast<size_t>(rank)];
}

int num_hosts(const Communicator& c) {
  if (c.host_of_rank.empty()) return 1;
  return static_cast<int>(std::set<int>(c.host_of_rank.begin(), c.host_of_rank.end()).size());
}

std::vector<int> ranks_on_host(const Communicator& c, int host) {
  std::vector<int> ranks;
  for (int r = 0; r < c.size; ++r) {
    if (host_of(c, r) == host) ranks.push_back(r);
  }
  return ranks;
}

std::vector<int> local_ranks(const Communicator& c) { return ranks_on_host(c, host_of(c, c.rank)); }

std::vector<int> host_leaders(const Communicator& c) {
  std::vector<int> leaders;
  std::set<int> seen;
  for (int r = 0; r < c.size; ++r) {
    if (seen.insert(host_of(c, r)).second) leaders.push_back(r);  // first (lowest) rank of its host
  }
  return leaders;
}

int leader_of(const Communicator& c, int rank) {
  const int host = host_of(c, rank);
  for (int r = 0; r < c.size; ++r) {
    if (host_of(c, r) == host) return r;
  }
  throw InternalError("leader_of: no rank on the host of a rank");
}

bool is_leader(const Communicator& c) { return leader_of(c, c.rank) == c.rank; }

bool is_multi_host_multi_rank(const Communicator& c) {
  const int hosts = num_hosts(c);
  return hosts > 1 && hosts < c.size;
}

uint64_t collective_tag(const Communicator& c, uint64_t sequence, uint32_t phase) {
  LOOM_ASSERT(phase < (uint32_t{1} << kTagPhaseBits));
  const uint64_t seq = sequence & ((uint64_t{1} << kTagSequenceBits) - 1);
  return kTagKindCollective | (uint64_t{c.channel} << 54) | (seq << kTagPhaseBits) | phase;
}

uint64_t point_to_point_tag(const Communicator& c, uint64_t user_tag) {
  LOOM_CHECK(user_tag <= kMaxUserTag, "point-to-point tag {} is larger than the maximum {}", user_tag, kMaxUserTag);
  return kTagKindPointToPoint | (uint64_t{c.channel} << 54) | user_tag;
}

}  // namespace loom::comm
