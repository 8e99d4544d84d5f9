// The public collectives: argument checks, algorithm choice, dispatch.
// The algorithms themselves live in allreduce_<name>.cc.
#include "loom/comm/collectives/collectives.h"

#include <algorithm>
#include <cstring>

namespace loom::comm {

using core::DType;
using core::Tensor;

namespace detail {

void Call::send(int peer, uint32_t phase, const std::byte* data, size_t nbytes) const {
  transport->send(peer, tag_base | phase, {data, nbytes}, deadline);
}

void Call::recv(int peer, uint32_t phase, std::byte* data, size_t nbytes) const {
  transport->recv(peer, tag_base | phase, {data, nbytes}, deadline);
}

int Group::at(int index) const {
  const int n = size();
  return ranks[static_cast<size_t>(((index % n) + n) % n)];
}

Group world_group(const Communicator& c) {
  Group g;
  g.ranks.resize(static_cast<size_t>(c.size));
  for (int r = 0; r < c.size; ++r) g.ranks[static_cast<size_t>(r)] = r;
  g.me = c.rank;
  return g;
}

Group make_group(std::vector<int> ranks, int my_rank) {
  auto it = std::find(ranks.begin(), ranks.end(), my_rank);
  LOOM_ASSERT(it != ranks.end());
  Group g;
  g.me = static_cast<int>(it - ranks.begin());
  g.ranks = std::move(ranks);
  return g;
}

size_t segment_elements(size_t chunk_bytes, DType dtype) {
  if (chunk_bytes == 0) return SIZE_MAX;
  return std::max<size_t>(1, chunk_bytes / core::itemsize(dtype));
}

size_t num_segments(size_t numel, size_t seg) { return numel == 0 ? 0 : (numel - 1) / seg + 1; }

ElementRange segment_of(ElementRange r, size_t seg, size_t k) {
  const size_t begin = k * seg;
  LOOM_ASSERT(begin < r.numel);
  return {r.offset + begin, std::min(seg, r.numel - begin)};
}

void exchange(const Call& call, int peer, uint32_t phase, Buffer buf, ElementRange out, ElementRange in, size_t seg,
              std::byte* tmp, ReduceOp op) {
  const size_t n_out = num_segments(out.numel, seg), n_in = num_segments(in.numel, seg);
  size_t sent = 0, received = 0;
  while (sent < n_out || received < n_in) {
    // The window applies while something is still to come back; a one-way
    // transfer streams (the peer is receiving all the while).
    for (; sent < n_out && (received == n_in || sent < received + kSegmentsInFlight); ++sent) {
      const ElementRange s = segment_of(out, seg, sent);
      call.send(peer, phase, buf.at(s.offset), buf.nbytes(s.numel));
    }
    if (received < n_in) {
      const ElementRange r = segment_of(in, seg, received++);
      if (tmp == nullptr) {
        call.recv(peer, phase, buf.at(r.offset), buf.nbytes(r.numel));
      } else {
        call.recv(peer, phase, tmp, buf.nbytes(r.numel));
        reduce_into(buf.dtype, op, buf.at(r.offset), tmp, r.numel);
      }
    }
  }
}

Tensor scratch(size_t nbytes) { return Tensor::empty({static_cast<int64_t>(std::max<size_t>(nbytes, 1))}, DType::U8); }

}  // namespace detail

namespace {

using detail::Buffer;
using detail::Call;

// Phase windows of the composite operations (each algorithm may use 256 phases).
constexpr uint32_t kPhaseMain = 0;

// Collectives move raw bytes of contiguous CPU tensors; the reducing ones
// also need a dtype the kernels handle.
void check_tensor(const Tensor& t, const char* what, const char* arg, bool reduces) {
  LOOM_CHECK(t.defined(), "{}: {} is an undefined tensor", what, arg);
  LOOM_CHECK(t.device().is_cpu(), "{}: {} is on {}, expected a CPU tensor", what, arg, t.device());
  LOOM_CHECK(t.is_contiguous(), "{}: {} (shape {}) is not contiguous", what, arg, core::to_string(t.shape()));
  if (reduces) check_reducible(t.dtype(), what);
}

std::chrono::milliseconds timeout_of(const Communicator& c, const std::optional<std::chrono::milliseconds>& t) {
  const auto ms = t.value_or(c.timeout);
  LOOM_CHECK(ms.count() >= 0, "collective timeout must be >= 0 ms, got {} ms", ms.count());
  return ms;
}

// Starts a collective: takes its sequence number and fixes its deadline.
Call begin(Communicator& c, const std::optional<std::chrono::milliseconds>& timeout) {
  Call call;
  call.transport = c.transport.get();
  call.deadline = Deadline::in(timeout_of(c, timeout));
  call.tag_base = collective_tag(c, c.next_sequence++, 0);
  return call;
}

Buffer buffer_of(const Tensor& t) {
  return Buffer{static_cast<std::byte*>(t.data_ptr()), static_cast<size_t>(t.numel()), t.dtype()};
}

}  // namespace

std::string_view name(Algorithm a) {
  switch (a) {
    case Algorithm::Auto: return "auto";
    case Algorithm::Ring: return "ring";
    case Algorithm::HalvingDoubling: return "halving_doubling";
    case Algorithm::Tree: return "tree";
    case Algorithm::Hierarchical: return "hierarchical";
    case Algorithm::SharedMemory: return "shm";
  }
  return "?";
}

Algorithm algorithm_from_name(std::string_view s) {
  if (s == "auto") return Algorithm::Auto;
  if (s == "ring") return Algorithm::Ring;
  if (s == "halving_doubling" || s == "halving-doubling" || s == "hd" || s == "rabenseifner") {
    return Algorithm::HalvingDoubling;
  }
  if (s == "tree") return Algorithm::Tree;
  if (s == "hierarchical") return Algorithm::Hierarchical;
  if (s == "shm") return Algorithm::SharedMemory;
  throw ValueError(format(
      "unknown allreduce algorithm '{}' (expected auto, ring, halving_doubling, tree, hierarchical or shm)", s));
}

Algorithm choose_algorithm(const Communicator& c, size_t nbytes) {
  if (c.size == 1) return Algorithm::Ring;
  if (is_multi_host_multi_rank(c)) return Algorithm::Hierarchical;
  if (nbytes <= kTreeMaxBytes) return Algorithm::Tree;
  if (nbytes <= kHalvingDoublingMaxBytes) return Algorithm::HalvingDoubling;
  if (shared_memory_available(c)) return Algorithm::SharedMemory;
  return Algorithm::Ring;
}

Algorithm resolve_algorithm(const Communicator& c, const Tensor& t, const AllreduceOptions& o) {
  return o.algorithm == Algorithm::Auto ? choose_algorithm(c, t.nbytes()) : o.algorithm;
}

void allreduce(Communicator& c, Tensor& t, const AllreduceOptions& o) {
  check_communicator(c, "allreduce");
  check_tensor(t, "allreduce", "t", true);
  if (o.algorithm == Algorithm::SharedMemory) {
    const std::string why = shared_memory_unavailable(c);
    LOOM_CHECK_T(ConfigError, why.empty(), "allreduce: algorithm 'shm' cannot run here: {}", why);
  }
  const Algorithm algo = resolve_algorithm(c, t, o);
  Call call = begin(c, o.timeout);
  if (c.size == 1 || t.numel() == 0) return;

  const Buffer buf = buffer_of(t);
  const size_t seg = detail::segment_elements(o.chunk_bytes, t.dtype());
  const detail::Group world = detail::world_group(c);
  if (o.deterministic) {
    // Tree's shape (rank 0 folds all) suits small messages; the others fold
    // one chunk per rank. Both give the same bits.
    detail::deterministic_allreduce(call, world, buf, o.op, algo == Algorithm::Tree, seg, kPhaseMain);
    return;
  }
  const ReduceOp combine = o.op == ReduceOp::Avg ? ReduceOp::Sum : o.op;
  switch (algo) {
    case Algorithm::Ring: detail::ring_allreduce(call, world, buf, combine, seg, kPhaseMain); break;
    case Algorithm::HalvingDoubling: detail::halving_doubling_allreduce(call, world, buf, combine, seg, kPhaseMain); break;
    case Algorithm::Tree: detail::tree_allreduce(call, world, buf, combine, seg, kPhaseMain); break;
    case Algorithm::Hierarchical: detail::hierarchical_allreduce(call, c, buf, combine, seg, kPhaseMain); break;
    case Algorithm::SharedMemory: detail::shared_memory_allreduce(call, c, buf, combine); break;
    case Algorithm::Auto: LOOM_ASSERT(false);
  }
  if (o.op == ReduceOp::Avg) divide(t.dtype(), t.data_ptr(), buf.numel, c.size);
}

void broadcast(Communicator& c, Tensor& t, int root, const BroadcastOptions& o) {
  check_communicator(c, "broadcast");
  check_tensor(t, "broadcast", "t", false);
  LOOM_CHECK(root >= 0 && root < c.size, "broadcast: root {} out of range for size {}", root, c.size);
  Call call = begin(c, o.timeout);
  if (c.size == 1 || t.numel() == 0) return;
  detail::tree_broadcast(call, detail::world_group(c), buffer_of(t), root,
                         detail::segment_elements(o.chunk_bytes, t.dtype()), kPhaseMain);
}

void all_gather(Communicator& c, const Tensor& in, Tensor& out, const AllGatherOptions& o) {
  check_communicator(c, "all_gather");
  check_tensor(in, "all_gather", "in", false);
  const int64_t total = in.numel() * c.size;
  if (!out.defined()) out = Tensor::empty({total}, in.dtype());
  check_tensor(out, "all_gather", "out", false);
  LOOM_CHECK_T(ShapeError, out.numel() == total, "all_gather: out has {} elements, expected size {} x {} = {}",
               out.numel(), c.size, in.numel(), total);
  LOOM_CHECK_T(TypeError, out.dtype() == in.dtype(), "all_gather: out has dtype {}, in has {}", out.dtype(),
               in.dtype());
  Call call = begin(c, o.timeout);
  if (in.numel() == 0) return;
  const Buffer buf = buffer_of(out);
  std::memmove(buf.at(static_cast<size_t>(in.numel()) * static_cast<size_t>(c.rank)), in.data_ptr(), in.nbytes());
  detail::ring_all_gather(call, detail::world_group(c), buf, detail::segment_elements(o.chunk_bytes, in.dtype()),
                          kPhaseMain);
}

ElementRange reduce_scatter_range(size_t numel, int parts, int index) {
  LOOM_ASSERT(parts >= 1 && index >= 0 && index < parts);
  const size_t p = static_cast<size_t>(parts), i = static_cast<size_t>(index);
  const size_t base = numel / p, extra = numel % p;
  return {i * base + std::min(i, extra), base + (i < extra ? 1 : 0)};
}

void reduce_scatter(Communicator& c, const Tensor& in, Tensor& out, const ReduceScatterOptions& o) {
  check_communicator(c, "reduce_scatter");
  check_tensor(in, "reduce_scatter", "in", true);
  const ElementRange mine = reduce_scatter_range(static_cast<size_t>(in.numel()), c.size, c.rank);
  if (!out.defined()) out = Tensor::empty({static_cast<int64_t>(mine.numel)}, in.dtype());
  check_tensor(out, "reduce_scatter", "out", true);
  LOOM_CHECK_T(ShapeError, out.numel() == static_cast<int64_t>(mine.numel),
               "reduce_scatter: out on rank {} has {} elements, expected {} (chunk {} of {} elements in {} parts)",
               c.rank, out.numel(), mine.numel, c.rank, in.numel(), c.size);
  LOOM_CHECK_T(TypeError, out.dtype() == in.dtype(), "reduce_scatter: out has dtype {}, in has {}", out.dtype(),
               in.dtype());
  Call call = begin(c, o.timeout);
  if (in.numel() == 0) return;
  const Buffer src = buffer_of(in);
  auto* dst = static_cast<std::byte*>(out.data_ptr());
  const detail::Group world = detail::world_group(c);
  if (o.deterministic) {
    detail::deterministic_reduce_scatter(call, world, src, dst, o.op,
                                         detail::segment_elements(o.chunk_bytes, in.dtype()), kPhaseMain);
    return;
  }
  // The ring reduces in place, so it works on a copy of `in`.
  Tensor work = detail::scratch(in.nbytes());
  Buffer buf = src;
  buf.data = static_cast<std::byte*>(work.data_ptr());
  std::memcpy(buf.data, src.data, in.nbytes());
  const ReduceOp combine = o.op == ReduceOp::Avg ? ReduceOp::Sum : o.op;
  detail::ring_reduce_scatter(call, world, buf, combine, detail::segment_elements(o.chunk_bytes, in.dtype()),
                              kPhaseMain);
  std::memcpy(dst, buf.at(mine.offset), buf.nbytes(mine.numel));
  if (o.op == ReduceOp::Avg) divide(in.dtype(), dst, mine.numel, c.size);
}

void barrier(Communicator& c, const BarrierOptions& o) {
  check_communicator(c, "barrier");
  Call call = begin(c, o.timeout);
  // Dissemination: in round k every rank signals rank + 2^k and waits for
  // rank - 2^k; after ceil(log2 size) rounds everyone has heard from everyone.
  uint32_t round = 0;
  for (int dist = 1; dist < c.size; dist *= 2, ++round) {
    call.send((c.rank + dist) % c.size, kPhaseMain + round, nullptr, 0);
    call.recv((c.rank - dist + c.size) % c.size, kPhaseMain + round, nullptr, 0);
  }
}

void send(Communicator& c, const Tensor& t, int peer, const SendRecvOptions& o) {
  check_communicator(c, "send");
  check_tensor(t, "send", "t", false);
  LOOM_CHECK(peer >= 0 && peer < c.size && peer != c.rank, "send: peer {} must be another rank in [0, {})", peer,
             c.size);
  c.transport->send(peer, point_to_point_tag(c, o.tag),
                    {static_cast<const std::byte*>(t.data_ptr()), t.nbytes()}, Deadline::in(timeout_of(c, o.timeout)));
}

void recv(Communicator& c, Tensor& t, int peer, const SendRecvOptions& o) {
  check_communicator(c, "recv");
  check_tensor(t, "recv", "t", false);
  LOOM_CHECK(peer >= 0 && peer < c.size && peer != c.rank, "recv: peer {} must be another rank in [0, {})", peer,
             c.size);
  c.transport->recv(peer, point_to_point_tag(c, o.tag), {static_cast<std::byte*>(t.data_ptr()), t.nbytes()},
                    Deadline::in(timeout_of(c, o.timeout)));
}

}  // namespace loom::comm
