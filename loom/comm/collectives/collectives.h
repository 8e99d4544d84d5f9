// Collectives over a Communicator: free functions with options structs.
//
//   // given: comm::Communicator& c, Tensor grads, Tensor t, Tensor weights, Tensor shard, Tensor all, Tensor full, Tensor mine
//   using namespace std::chrono_literals;
//   comm::allreduce(c, grads, {.op = comm::ReduceOp::Avg});                  // in place, every rank
//   comm::allreduce(c, t, {.algorithm = comm::Algorithm::Ring, .timeout = 5s});
//   comm::broadcast(c, weights, /*root=*/0);
//   comm::all_gather(c, shard, all);        // all: size * shard.numel(), rank r's shard at r * shard.numel()
//   comm::reduce_scatter(c, full, mine);    // mine: chunk c.rank of `full`, summed over ranks
//   comm::barrier(c);
//   comm::send(c, t, /*peer=*/1, {.tag = 7});  comm::recv(c, t, /*peer=*/0, {.tag = 7});
//
// Tensors: contiguous CPU tensors (ValueError otherwise) of any numel,
// including 0; the reducing calls (allreduce, reduce_scatter) take f32, f64,
// f16, bf16, i32 or i64 (TypeError otherwise), the others any dtype. Shapes
// are not sent: every rank passes tensors of the same numel and dtype (a
// mismatch surfaces as a CommError about the message size). Collectives are called by all ranks of
// the communicator in the same order (see communicator.h).
//
// All-reduce algorithms (AllreduceOptions::algorithm): the message ones use
// only the Transport interface, so they run over inproc, shm and ZeroMQ
// alike; SharedMemory ("shm") runs on the lanes of a ShmTransport instead
// (shm_allreduce.h) and needs one: every rank on one host, a world of 2 to 16
// ranks, channel 0 or 1 (ConfigError otherwise). Auto picks it for large
// messages wherever it can run.
//
// Every call finishes within its timeout (options.timeout, else c.timeout;
// one deadline for the whole call): a rank that never joins gives
// TimeoutError, a peer declared lost gives PeerLostError to the ranks waiting
// on it (the others reach the deadline); nothing hangs.
//
// Numbers: 16-bit floats are combined in f32 and rounded to the storage type
// once per reduction step (each pairwise combination of two partial results),
// see reduce_kernels.h. Avg sums, then divides by the world size once.
//
// Deterministic mode (options.deterministic): allreduce
// and reduce_scatter compute every element as the left fold
//   x_0 op x_1 op ... op x_{size-1}   (rank order, in f32 for 16-bit floats,
//                                      rounded once; Avg then divides once)
// so the bits do not depend on the algorithm, the topology or the timing.
// Each rank folds one chunk of the buffer from all ranks' contributions
// (Ring, HalvingDoubling, Hierarchical, SharedMemory, and Auto for large
// messages: the same bandwidth as a ring reduce-scatter) or rank 0 folds the
// whole buffer (Tree, and Auto for messages up to kTreeMaxBytes), then the
// result is distributed unchanged. Both run over messages, whatever the
// algorithm named.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "loom/comm/collectives/communicator.h"
#include "loom/comm/collectives/reduce_kernels.h"
#include "loom/core/tensor.h"

namespace loom::comm {

enum class Algorithm {
  Auto,             // chosen by choose_algorithm() below
  Ring,             // pipelined ring: reduce-scatter then all-gather; bandwidth-optimal, 2(n-1) steps
  HalvingDoubling,  // Rabenseifner: recursive halving reduce-scatter, doubling all-gather; 2 log2(n) steps
  Tree,             // binomial tree: reduce to rank 0, broadcast back; for small messages
  Hierarchical,     // reduce within each host to its leader, allreduce among leaders, broadcast within hosts
  SharedMemory,     // one host, ShmTransport: each rank reduces its slice of every rank's block in shared memory
};

std::string_view name(Algorithm a);
// Parses "auto", "ring", "halving_doubling" (or "hd", "rabenseifner"), "tree",
// "hierarchical", "shm"; ValueError otherwise.
Algorithm algorithm_from_name(std::string_view s);

// Pipeline segment: the largest message a step sends. A ring or tree step
// forwards each segment as soon as it has it, and ranks keep at most
// detail::kSegmentsInFlight segments in flight per peer (a transport's flow
// control then never stalls an exchange). 0 = no splitting, no such bound.
inline constexpr size_t kDefaultChunkBytes = size_t{256} << 10;

struct AllreduceOptions {
  ReduceOp op = ReduceOp::Sum;
  Algorithm algorithm = Algorithm::Auto;
  std::optional<std::chrono::milliseconds> timeout = std::nullopt;  // default: the communicator's
  size_t chunk_bytes = kDefaultChunkBytes;  // pipeline segment, see kDefaultChunkBytes
  // Rank-ordered fold: the same bits for any algorithm and topology (see above).
  // Chosen by the caller that owns the behaviour (e.g. DataParallel's options).
  bool deterministic = false;
};

struct BroadcastOptions {
  std::optional<std::chrono::milliseconds> timeout = std::nullopt;
  size_t chunk_bytes = kDefaultChunkBytes;
};

struct AllGatherOptions {
  std::optional<std::chrono::milliseconds> timeout = std::nullopt;
  size_t chunk_bytes = kDefaultChunkBytes;
};

struct ReduceScatterOptions {
  ReduceOp op = ReduceOp::Sum;
  std::optional<std::chrono::milliseconds> timeout = std::nullopt;
  size_t chunk_bytes = kDefaultChunkBytes;
  bool deterministic = false;  // rank-ordered fold, as for allreduce
};

struct BarrierOptions {
  std::optional<std::chrono::milliseconds> timeout = std::nullopt;
};

struct SendRecvOptions {
  uint64_t tag = 0;  // user tag (<= kMaxUserTag); messages with one tag arrive in order
  std::optional<std::chrono::milliseconds> timeout = std::nullopt;
};

// Auto's choice for a message of `nbytes` on this communicator:
//   size 1                                    -> Ring (nothing is sent)
//   several hosts, some with several ranks    -> Hierarchical
//   nbytes <= kTreeMaxBytes                   -> Tree             (latency-bound)
//   nbytes <= kHalvingDoublingMaxBytes        -> HalvingDoubling  (few steps, little data per step)
//   shared_memory_available(c)                -> SharedMemory     (bandwidth-bound, one host)
//   otherwise                                 -> Ring             (bandwidth-bound)
// The hierarchical algorithm applies the same rule among the host leaders
// (all over messages: leaders are on different hosts).
inline constexpr size_t kTreeMaxBytes = size_t{4} << 10;
inline constexpr size_t kHalvingDoublingMaxBytes = size_t{512} << 10;
Algorithm choose_algorithm(const Communicator& c, size_t nbytes);

// "" when Algorithm::SharedMemory can run on `c`: its transport is a
// ShmTransport (whose ranks share one host) with a lane for c.channel, and
// host_of_rank names one host; otherwise why not (the ConfigError an explicit
// SharedMemory call gives). The same on every rank.
std::string shared_memory_unavailable(const Communicator& c);
// Whether Auto may pick SharedMemory: available and its lane not put out of
// use by an earlier call that failed half way (every rank sees that too).
bool shared_memory_available(const Communicator& c);

// The algorithm allreduce(c, t, o) runs (Auto resolved).
Algorithm resolve_algorithm(const Communicator& c, const core::Tensor& t, const AllreduceOptions& o = {});

// Reduces `t` over all ranks, in place: afterwards every rank holds the result.
void allreduce(Communicator& c, core::Tensor& t, const AllreduceOptions& o = {});

// Copies root's `t` into `t` on every rank (binomial tree, pipelined).
void broadcast(Communicator& c, core::Tensor& t, int root, const BroadcastOptions& o = {});

// out (numel size * in.numel(), same dtype) = the ranks' `in`, rank r's at
// offset r * in.numel(). An undefined `out` is allocated with shape
// [size * in.numel()].
void all_gather(Communicator& c, const core::Tensor& in, core::Tensor& out, const AllGatherOptions& o = {});

// Splits `in` (same numel on every rank) into size chunks, the first
// numel % size of them one element longer (reduce_scatter_range), and leaves
// on rank r chunk r reduced over all ranks. `out` must have that chunk's
// numel; an undefined `out` is allocated 1-D.
void reduce_scatter(Communicator& c, const core::Tensor& in, core::Tensor& out, const ReduceScatterOptions& o = {});

// [offset, offset + numel) of chunk `index` when `numel` elements are split
// into `parts` chunks as reduce_scatter does (and the algorithms internally).
struct ElementRange {
  size_t offset = 0;
  size_t numel = 0;
};
ElementRange reduce_scatter_range(size_t numel, int parts, int index);

// Returns once every rank has entered the barrier (dissemination, log2 steps).
void barrier(Communicator& c, const BarrierOptions& o = {});

// Point-to-point: `t`'s bytes to / from one peer. They take no sequence
// number, so any two ranks may use them at any time; recv needs a tensor of
// the sent numel and dtype (CommError otherwise).
void send(Communicator& c, const core::Tensor& t, int peer, const SendRecvOptions& o = {});
void recv(Communicator& c, core::Tensor& t, int peer, const SendRecvOptions& o = {});

// ---- internals shared by the algorithm files (allreduce_*.cc) ----
namespace detail {

// One collective call: where its messages go and how long it may take.
struct Call {
  Transport* transport = nullptr;
  uint64_t tag_base = 0;  // collective_tag(c, sequence, 0)
  Deadline deadline;
  void send(int peer, uint32_t phase, const std::byte* data, size_t nbytes) const;
  void recv(int peer, uint32_t phase, std::byte* data, size_t nbytes) const;
};

// The ranks taking part in one algorithm, in the algorithm's order.
struct Group {
  std::vector<int> ranks;  // global ranks
  int me = 0;              // this rank's index in `ranks`
  int size() const { return static_cast<int>(ranks.size()); }
  int at(int index) const;  // ranks[index mod size]
};
Group world_group(const Communicator& c);
Group make_group(std::vector<int> ranks, int my_rank);

// A contiguous run of elements of one dtype.
struct Buffer {
  std::byte* data = nullptr;
  size_t numel = 0;
  core::DType dtype = core::DType::F32;
  size_t itemsize() const { return core::itemsize(dtype); }
  std::byte* at(size_t element) const { return data + element * itemsize(); }
  size_t nbytes(size_t elements) const { return elements * itemsize(); }
};

// Pipeline segment length in elements for chunk_bytes (0 = unlimited).
size_t segment_elements(size_t chunk_bytes, core::DType dtype);
size_t num_segments(size_t numel, size_t seg);
// Segment k of range r: [r.offset + k * seg, ...), at most seg elements.
ElementRange segment_of(ElementRange r, size_t seg, size_t k);

// How many segments a rank sends to one peer ahead of what it has received.
// Transports may block a send when a peer has not taken enough of what was
// sent to it (flow control); sending at most this many segments ahead keeps
// the bytes in flight per peer at kSegmentsInFlight x chunk_bytes, so
// exchanges where both sides send first (ring, halving-doubling) cannot block
// each other for any buffer size. (chunk_bytes = 0 gives up that bound.)
inline constexpr size_t kSegmentsInFlight = 8;

// Sends `out` to `peer` and receives `in` from it at the same time, segment
// by segment, alternating. Received segments are reduced into buf with `op`
// through `tmp` (>= one segment), or stored in place when tmp is null.
void exchange(const Call& call, int peer, uint32_t phase, Buffer buf, ElementRange out, ElementRange in, size_t seg,
              std::byte* tmp, ReduceOp op);
// A scratch buffer of at least `nbytes` from the caching allocator (kept alive by the Tensor).
core::Tensor scratch(size_t nbytes);

// The algorithms, in place on `buf`, over group `g`. `phase` is the first of
// the 256 tag phases the call may use. `op` is Sum, Max or Min (Avg is the
// caller's Sum + divide), except for the deterministic ones, which take Avg.
void ring_allreduce(const Call& call, const Group& g, Buffer buf, ReduceOp op, size_t seg, uint32_t phase);
// Ring all-gather: rank index i holds chunk i (reduce_scatter_range) and ends with all.
void ring_all_gather(const Call& call, const Group& g, Buffer buf, size_t seg, uint32_t phase);
// Ring reduce-scatter: afterwards chunk i of buf on index i is reduced (other chunks hold partial sums).
void ring_reduce_scatter(const Call& call, const Group& g, Buffer buf, ReduceOp op, size_t seg, uint32_t phase);
void halving_doubling_allreduce(const Call& call, const Group& g, Buffer buf, ReduceOp op, size_t seg,
                                uint32_t phase);
void tree_reduce(const Call& call, const Group& g, Buffer buf, ReduceOp op, int root, size_t seg, uint32_t phase);
void tree_broadcast(const Call& call, const Group& g, Buffer buf, int root, size_t seg, uint32_t phase);
void tree_allreduce(const Call& call, const Group& g, Buffer buf, ReduceOp op, size_t seg, uint32_t phase);
void hierarchical_allreduce(const Call& call, const Communicator& c, Buffer buf, ReduceOp op, size_t seg,
                            uint32_t phase);
// On the lanes of c's ShmTransport (shared_memory_unavailable(c) is ""); no messages.
void shared_memory_allreduce(const Call& call, const Communicator& c, Buffer buf, ReduceOp op);
// Rank-ordered fold of chunk i of `in` from every rank into `out` (chunk i's
// numel) on index i: a deterministic reduce-scatter. `in` and `out` may alias.
void deterministic_reduce_scatter(const Call& call, const Group& g, Buffer in, std::byte* out, ReduceOp op,
                                  size_t seg, uint32_t phase);
// Deterministic allreduce; `gather_to_root`: index 0 folds everything (small messages).
void deterministic_allreduce(const Call& call, const Group& g, Buffer buf, ReduceOp op, bool gather_to_root,
                             size_t seg, uint32_t phase);

}  // namespace detail
}  // namespace loom::comm
