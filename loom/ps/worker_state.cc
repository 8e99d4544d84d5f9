#include "loom/ps/worker_state.h"

#include <algorithm>
#include <cstring>
#include <memory>

#include "loom/core/error.h"

namespace loom::ps {
namespace {

using comm::FramePtr;
using comm::OutFrame;

// A slice's state to send, and its frames (which borrow it).
struct SliceState {
  ShardState state;
  EncodedShardState frames;
};

// What a GetState reply of the slice at [offset, offset + n) of a key's
// `total` bytes goes to: its part of each of the key's tensors.
OnPayload gather_into(detail::KeyState& st, size_t offset, size_t n, size_t total, int64_t key) {
  return [&st, offset, n, total, key](std::span<const FramePtr> f) {
    std::vector<std::span<const std::byte>> frames;
    for (const FramePtr& m : f) frames.push_back(m->bytes());
    ShardState s = decode_shard_state(frames);
    LOOM_CHECK_T(CommError, s.weights.size() == n, "kvstore: state of key {}: part of the wrong size", key);
    const size_t parts = 1 + s.slots.size();
    if (st.parts.empty()) st.parts.assign(parts, std::vector<std::byte>(total));
    LOOM_CHECK_T(CommError, st.parts.size() == parts, "kvstore: state of key {}: slices disagree", key);
    for (size_t j = 0; j < parts; ++j) {
      std::memcpy(st.parts[j].data() + offset, (j == 0 ? s.weights : s.slots[j - 1]).data(), n);
    }
    st.updates = std::max(st.updates, s.updates);
  };
}

// The slice `r` of a key's saved state, as the frames of a SetState request.
std::shared_ptr<SliceState> slice_of(const detail::KeyState& st, const DenseRequest& r, int num_workers) {
  auto slice = std::make_shared<SliceState>();
  auto part = [&](size_t j) {
    const auto b = std::span(st.parts[j]).subspan(r.offset, r.nbytes);
    return std::vector<std::byte>(b.begin(), b.end());
  };
  slice->state.weights = part(0);
  for (size_t j = 1; j < st.parts.size(); ++j) slice->state.slots.push_back(part(j));
  slice->state.updates = st.updates;
  slice->state.versions.assign(static_cast<size_t>(num_workers), 0);
  slice->frames = encode_shard_state(slice->state);
  return slice;
}

}  // namespace

std::map<int64_t, detail::KeyState> fetch_key_states(ServerCalls& servers, std::span<const int64_t> keys,
                                                     const LayoutOf& layout_of, const WorkerStateOptions& o) {
  std::map<int64_t, detail::KeyState> states;
  RequestBatch batch(o.rank);
  for (int64_t key : keys) {
    const KeyLayout& layout = layout_of(key);
    detail::KeyState& st = states[key];  // a map's elements stay where they are: the replies write into them
    st.shape = layout.shape;
    st.dtype = layout.dtype;
    for (DenseRequest& r : plan_dense(Op::GetState, key, layout, 0, o.placement)) {
      batch.add(r.header, std::move(r.chain), {}, gather_into(st, r.offset, r.nbytes, layout.nbytes(), key));
    }
  }
  servers.run(batch, "save_optimizer_states");
  return states;
}

void send_key_states(ServerCalls& servers, const std::map<int64_t, detail::KeyState>& states,
                     const LayoutOf& layout_of, const std::string& source, const WorkerStateOptions& o) {
  RequestBatch batch(o.rank);
  for (const auto& [key, st] : states) {
    const KeyLayout& layout = layout_of(key);
    LOOM_CHECK_T(ShapeError, layout.shape == st.shape && layout.dtype == st.dtype,
                 "{}: key {} is {} {} there, {} {} here", source, key, core::name(st.dtype),
                 core::to_string(st.shape), core::name(layout.dtype), core::to_string(layout.shape));
    const std::vector<int64_t> dims(layout.shape.begin(), layout.shape.end());
    for (DenseRequest& r : plan_dense(Op::SetState, key, layout, 0, o.placement)) {
      // The slice's part of each tensor; update count kept, rounds and
      // versions from 0 (the workers count their pushes from 0 again).
      const std::shared_ptr<SliceState> slice = slice_of(st, r, o.num_workers);
      std::vector<OutFrame> payload = {OutFrame::copy(i64_bytes(dims))};
      for (const auto& f : slice->frames.frames) payload.push_back(OutFrame::lend(f, slice));
      batch.add(r.header, std::move(r.chain), std::move(payload));
    }
  }
  servers.run(batch, "load_optimizer_states");
}

}  // namespace loom::ps
