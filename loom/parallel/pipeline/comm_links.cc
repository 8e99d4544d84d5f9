#include "loom/parallel/pipeline/comm_links.h"

#include <algorithm>

#include "loom/comm/collectives/collectives.h"
#include "loom/core/error.h"
#include "loom/ops/creation.h"
#include "loom/ops/ops.h"

namespace loom::parallel::pipeline {
namespace {

constexpr int kMaxDims = 8;
constexpr int64_t kHeaderWords = 2 + kMaxDims;  // dtype, rank, dimensions
constexpr int kMicrobatchBits = 24;
constexpr int kChunkBits = 28;

uint64_t tag_of(bool gradient, int to_chunk, int microbatch) {
  LOOM_CHECK_T(ConfigError, microbatch >= 0 && microbatch < (1 << kMicrobatchBits) && to_chunk >= 0 &&
                                to_chunk < (1 << kChunkBits),
               "pipeline: micro-batch {} or chunk {} out of range for a message tag", microbatch, to_chunk);
  return (uint64_t{gradient} << (kMicrobatchBits + kChunkBits)) | (static_cast<uint64_t>(to_chunk) << kMicrobatchBits) |
         static_cast<uint64_t>(microbatch);
}

std::chrono::milliseconds left(Deadline deadline) {
  const auto d = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
  return std::max(d, std::chrono::milliseconds(1));
}

}  // namespace

CommLinks::CommLinks(comm::Communicator& comm, std::vector<int> stage_ranks)
    : comm_(comm), stage_ranks_(std::move(stage_ranks)) {
  for (int r : stage_ranks_) {
    LOOM_CHECK_T(ConfigError, r >= 0 && r < comm_.size, "pipeline: stage rank {} is not one of the {} ranks", r,
                 comm_.size);
  }
}

void CommLinks::send(int peer, bool gradient, int to_chunk, int microbatch, const core::Tensor& t) {
  LOOM_CHECK(t.defined(), "pipeline: nothing to send for micro-batch {} to chunk {}", microbatch, to_chunk);
  LOOM_CHECK_T(ShapeError, t.dim() <= kMaxDims, "pipeline: a {}-dimensional activation (at most {})", t.dim(),
               kMaxDims);
  std::vector<int64_t> header(kHeaderWords, 0);
  header[0] = static_cast<int64_t>(t.dtype());
  header[1] = t.dim();
  for (int64_t d = 0; d < t.dim(); ++d) header[static_cast<size_t>(2 + d)] = t.size(d);
  const comm::SendRecvOptions o{.tag = tag_of(gradient, to_chunk, microbatch)};
  const int to = stage_ranks_.at(static_cast<size_t>(peer));
  comm::send(comm_, core::Tensor::from_vector(header, {kHeaderWords}), to, o);
  comm::send(comm_, ops::contiguous(t), to, o);
}

core::Tensor CommLinks::recv(int peer, bool gradient, int chunk, int microbatch, Deadline deadline) {
  const int from = stage_ranks_.at(static_cast<size_t>(peer));
  const char* what = gradient ? "gradient" : "activation";
  try {
    const comm::SendRecvOptions o{.tag = tag_of(gradient, chunk, microbatch), .timeout = left(deadline)};
    core::Tensor header = ops::zeros({kHeaderWords}, core::DType::I64);
    comm::recv(comm_, header, from, o);
    const auto h = header.to_vector<int64_t>();
    LOOM_CHECK_T(CommError, h[1] >= 0 && h[1] <= kMaxDims && h[0] >= 0 && h[0] <= static_cast<int64_t>(core::DType::Bool),
                 "pipeline: a malformed {} header from rank {}", what, from);
    const core::Shape shape(h.begin() + 2, h.begin() + 2 + h[1]);
    core::Tensor t = ops::empty(shape, static_cast<core::DType>(h[0]));
    comm::recv(comm_, t, from, {.tag = o.tag, .timeout = left(deadline)});
    return t;
  } catch (const TimeoutError& e) {
    throw TimeoutError(format("pipeline: waited in vain for the {} of micro-batch {} for chunk {} from rank {}: {}",
                              what, microbatch, chunk, from, e.what()));
  }
}

void CommLinks::send_activation(int peer, int chunk, int microbatch, core::Tensor activation) {
  send(peer, false, chunk + 1, microbatch, activation);
}
void CommLinks::send_gradient(int peer, int chunk, int microbatch, core::Tensor gradient) {
  send(peer, true, chunk - 1, microbatch, gradient);
}
core::Tensor CommLinks::recv_activation(int peer, int chunk, int microbatch, Deadline deadline) {
  return recv(peer, false, chunk, microbatch, deadline);
}
core::Tensor CommLinks::recv_gradient(int peer, int chunk, int microbatch, Deadline deadline) {
  return recv(peer, true, chunk, microbatch, deadline);
}

}  // namespace loom::parallel::pipeline
