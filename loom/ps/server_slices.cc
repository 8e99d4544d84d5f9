#include "loom/ps/server_slices.h"


#include "loom/core/error.h"

namespace loom::ps::detail {

Entry& SliceTable::create(const SliceId& id, const Header& h, const std::vector<int64_t>& dims, int owner) {
  auto [it, inserted] = entries_.try_emplace(id);
  Entry& e = it->second;
  if (inserted) {
    e.shard = std::make_unique<Shard>(ShardOptions{.key = h.key, .dtype = h.dtype,
                                                   .key_shape = core::Shape(dims.begin(), dims.end()),
                                                   .row_begin = h.row_begin, .num_rows = h.num_rows,
                                                   .num_workers = o_.num_workers, .sync = o_.sync});
    e.chain = replica_chain(owner, o_.placement);
    if (optimizer_) e.shard->set_optimizer(optimizer_);
    for (int w : retired_) e.shard->retire(w);
  }
  return e;
}

Entry& SliceTable::at(const SliceId& id, const char* what) {
  auto it = entries_.find(id);
  LOOM_CHECK(it != entries_.end() && it->second.shard->initialized(),
             "kvstore: {} of key {}, which is not initialized (call init first)", what, id.key);
  return it->second;
}

Entry* SliceTable::find(const SliceId& id) {
  auto it = entries_.find(id);
  return it == entries_.end() ? nullptr : &it->second;
}

void SliceTable::set_optimizer(std::shared_ptr<const ServerOptimizer> optimizer) {
  optimizer_ = std::move(optimizer);
  for (auto& [id, e] : entries_) e.shard->set_optimizer(optimizer_);
}

void SliceTable::retire(int worker, const std::function<void(const SliceId&, Entry&)>& applied) {
  retired_.insert(worker);
  for (auto& [id, e] : entries_) {
    if (e.shard->retire(worker) == PushResult::Applied) applied(id, e);
  }
}

Slice SliceTable::slice_at(const Header& h, int64_t row_begin) const {
  const auto s = slice_starting_at(h.key, h.total_rows, h.row_numel, row_begin, o_.placement);
  LOOM_CHECK_T(ShapeError, s.has_value(),
               "kvstore: key {} has no slice starting at row {} (the worker's placement differs)", h.key, row_begin);
  return *s;
}

int SliceTable::owner_of(const Header& h) const {
  const Slice s = slice_at(h, h.row_begin);
  LOOM_CHECK_T(ShapeError, s.num_rows == h.num_rows, "kvstore: key {}: the slice at row {} has {} rows, not {}", h.key,
               s.row_begin, s.num_rows, h.num_rows);
  return s.server;
}

Payload aligned(const MsgPtr& m, core::DType dtype) {
  const auto b = m->bytes();
  if (reinterpret_cast<uintptr_t>(b.data()) % core::itemsize(dtype) != 0) return Payload::copy_of(b);
  return {m, b};
}

std::vector<std::span<const std::byte>> spans(const std::vector<MsgPtr>& frames, size_t from) {
  std::vector<std::span<const std::byte>> out;
  for (size_t i = from; i < frames.size(); ++i) out.push_back(frames[i]->bytes());
  return out;
}

}  // namespace loom::ps::detail
