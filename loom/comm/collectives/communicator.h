// A communicator: the ranks of one job that run collectives together, the
// transport that carries their messages, and where each rank lives.
//
//   // given: int r, Tensor grads
//   comm::InProcHub hub(4);
//   // on rank r's thread:
//   comm::Communicator c = comm::make_communicator(hub.transport(r), {0, 0, 1, 1});  // 2 hosts x 2 ranks
//   comm::allreduce(c, grads, {.op = comm::ReduceOp::Avg});                           // collectives.h
//
// Rules:
// - Every rank calls the same collectives in the same order. Each call takes
//   the next sequence number (`next_sequence`) and builds its message tags
//   from it, so messages of consecutive collectives never mix, and stray
//   messages of a collective that failed (timeout, lost peer) can never be
//   taken for those of a later one.
// - A Communicator belongs to one thread at a time (it is a plain struct; the
//   transport under it is thread-safe). Point-to-point send/recv do not take
//   a sequence number: they may run between any two ranks at any time.
// - After a collective throws, ranks may disagree about how far they got:
//   rebuild the communicator (the elastic layer does) before the next one.
//
// Tag layout (64 bits), so other layers can share the transport:
//   bits 63-62  kind: 00 collective, 01 point-to-point, 10 and 11 free for
//               other users of the transport (parameter server, rendezvous)
//   bits 61-54  channel: lets several communicators share one transport
//   bits 53-20  collective: sequence number (mod 2^34); point-to-point: user tag
//   bits 19-0   collective: phase within the call; point-to-point: user tag
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <vector>

#include "loom/comm/transport/transport.h"

namespace loom::comm {

struct Communicator {
  std::shared_ptr<Transport> transport;
  int rank = 0;
  int size = 1;
  // Host index of every rank (any non-negative numbers; equal = same host).
  // Empty: all ranks on one host. Used by the hierarchical algorithm.
  std::vector<int> host_of_rank;
  // Default time limit of one collective call (options may override it).
  std::chrono::milliseconds timeout{30000};
  // Tags of this communicator: see the layout above (0..255).
  uint8_t channel = 0;
  // Sequence number of the next collective; all ranks advance it together.
  uint64_t next_sequence = 0;
};

// Builds a communicator over `transport` (rank and size come from it).
// host_of_rank must be empty or hold one non-negative entry per rank.
Communicator make_communicator(std::shared_ptr<Transport> transport, std::vector<int> host_of_rank = {});

// Throws ValueError unless `c` is usable (transport set, rank/size match it,
// host_of_rank well formed). `what` names the caller.
void check_communicator(const Communicator& c, const char* what);

// ---- topology ----
int host_of(const Communicator& c, int rank);
int num_hosts(const Communicator& c);
// Ranks on `host`, ascending.
std::vector<int> ranks_on_host(const Communicator& c, int host);
// Ranks on this rank's host, ascending (this rank included).
std::vector<int> local_ranks(const Communicator& c);
// The leader of each host (its lowest rank), ascending by rank.
std::vector<int> host_leaders(const Communicator& c);
int leader_of(const Communicator& c, int rank);
bool is_leader(const Communicator& c);
// True when there are several hosts and at least one of them has several
// ranks: the case where the hierarchical algorithm pays off.
bool is_multi_host_multi_rank(const Communicator& c);

// ---- tags ----
inline constexpr int kTagPhaseBits = 20;
inline constexpr int kTagSequenceBits = 34;
inline constexpr uint64_t kTagKindCollective = 0;
inline constexpr uint64_t kTagKindPointToPoint = uint64_t{1} << 62;
inline constexpr uint64_t kMaxUserTag = (uint64_t{1} << 54) - 1;

// Tag of phase `phase` (< 2^20) of the collective with sequence `sequence`.
uint64_t collective_tag(const Communicator& c, uint64_t sequence, uint32_t phase);
// Tag of a point-to-point message with user tag `user_tag` (<= kMaxUserTag).
uint64_t point_to_point_tag(const Communicator& c, uint64_t user_tag);

}  // namespace loom::comm
