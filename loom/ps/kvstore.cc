#include "loom/ps/kvstore.h"

#include <cstring>
#include <map>

#include "loom/core/error.h"
#include "loom/io/safetensors.h"
#include "loom/ops/creation.h"
#include "loom/ops/view.h"
#include "loom/ps/kvstore_internal.h"

namespace loom::ps {

namespace detail {

void check_value(int64_t key, const core::Tensor& t, const char* what) {
  LOOM_CHECK(t.defined(), "kvstore: {} of key {}: undefined tensor", what, key);
  LOOM_CHECK_T(TypeError, t.dtype() == core::DType::F32 || t.dtype() == core::DType::F64,
               "kvstore: {} of key {}: dtype {} (the store holds f32 or f64)", what, key, core::name(t.dtype()));
  LOOM_CHECK(t.device().is_cpu() && t.is_contiguous(), "kvstore: {} of key {}: needs a contiguous CPU tensor", what, key);
}

void check_matches(int64_t key, const core::Tensor& t, const core::Shape& shape, core::DType dtype, const char* what) {
  check_value(key, t, what);
  LOOM_CHECK_T(ShapeError, t.shape() == shape, "kvstore: {} of key {}: shape {}, the key is {}", what, key,
               core::to_string(t.shape()), core::to_string(shape));
  LOOM_CHECK_T(TypeError, t.dtype() == dtype, "kvstore: {} of key {}: dtype {}, the key holds {}", what, key,
               core::name(t.dtype()), core::name(dtype));
}

std::span<const std::byte> bytes_of(const core::Tensor& t) {
  return {static_cast<const std::byte*>(t.data_ptr()), t.nbytes()};
}

std::span<std::byte> mutable_bytes_of(const core::Tensor& t) { return {static_cast<std::byte*>(t.data_ptr()), t.nbytes()}; }

std::vector<int64_t> row_ids_of(int64_t key, const core::Tensor& ids, bool sorted_unique) {
  LOOM_CHECK_T(TypeError, ids.defined() && ids.dtype() == core::DType::I64 && ids.dim() == 1,
               "kvstore: row ids for key {} must be a 1-D i64 tensor", key);
  std::vector<int64_t> out = ids.to_vector<int64_t>();
  for (size_t i = 1; sorted_unique && i < out.size(); ++i) {
    LOOM_CHECK_T(IndexError, out[i] > out[i - 1],
                 "kvstore: row_sparse_push to key {}: row ids must be ascending and unique ({} after {})", key, out[i],
                 out[i - 1]);
  }
  return out;
}

namespace {

// The names of the store's own file (save_optimizer_states) and of what
// optimizer_states hands over: a key's value, its slot j, its counters.
constexpr const char* kFormat = "loom-kvstore-state-v1";
std::string value_name(const std::string& prefix, int64_t key) { return format("{}key{}", prefix, key); }
std::string slot_name(const std::string& prefix, int64_t key, size_t j) { return format("{}key{}.state{}", prefix, key, j); }
std::string updates_name(const std::string& prefix, int64_t key) { return format("{}key{}.updates", prefix, key); }
std::string slots_name(const std::string& prefix, int64_t key) { return format("{}key{}.slots", prefix, key); }

}  // namespace

void put_states(const std::map<int64_t, KeyState>& states, const std::string& prefix, io::NamedTensors& tensors,
                io::Metadata& meta) {
  meta[prefix + "format"] = kFormat;
  for (const auto& [key, s] : states) {
    for (size_t j = 0; j < s.parts.size(); ++j) {
      core::Tensor t = ops::empty(s.shape, s.dtype);
      LOOM_CHECK(t.nbytes() == s.parts[j].size(), "kvstore: key {}: state part of {} bytes", key, s.parts[j].size());
      if (t.nbytes() > 0) std::memcpy(t.data_ptr(), s.parts[j].data(), t.nbytes());
      tensors.emplace_back(j == 0 ? value_name(prefix, key) : slot_name(prefix, key, j - 1), t);
    }
    meta[updates_name(prefix, key)] = std::to_string(s.updates);
    meta[slots_name(prefix, key)] = std::to_string(s.parts.size() - 1);
  }
}

std::map<int64_t, KeyState> get_states(const io::SafetensorsFile& f, const std::string& prefix,
                                       const std::string& source) {
  auto it = f.metadata.find(prefix + "format");
  LOOM_CHECK_T(IoError, it != f.metadata.end() && it->second == kFormat,
               "{}: no KVStore state (no {}format = {} in its metadata)", source, prefix, kFormat);
  std::map<int64_t, KeyState> out;
  auto number = [&](const std::string& name) {
    auto m = f.metadata.find(name);
    LOOM_CHECK_T(IoError, m != f.metadata.end(), "{}: metadata '{}' missing", source, name);
    try {
      return std::stoll(m->second);
    } catch (const std::exception&) {
      throw IoError(format("{}: metadata '{}' = '{}' is not a number", source, name, m->second));
    }
  };
  for (const auto& [full, t] : f.tensors) {
    if (full.rfind(prefix, 0) != 0) continue;
    const std::string name = full.substr(prefix.size());
    if (name.find('.') != std::string::npos) continue;
    LOOM_CHECK_T(IoError, name.rfind("key", 0) == 0, "{}: unexpected tensor '{}'", source, full);
    int64_t key = 0;
    try {
      key = std::stoll(name.substr(3));
    } catch (const std::exception&) {
      throw IoError(format("{}: unexpected tensor '{}'", source, full));
    }
    KeyState s{.shape = t.shape(), .dtype = t.dtype(), .updates = number(updates_name(prefix, key))};
    const int64_t slots = number(slots_name(prefix, key));
    for (int64_t j = -1; j < slots; ++j) {
      const core::Tensor& part = j < 0 ? t : f.at(slot_name(prefix, key, static_cast<size_t>(j)));
      LOOM_CHECK_T(IoError, part.shape() == s.shape && part.dtype() == s.dtype, "{}: key {}: state {} has another shape",
                   source, key, j);
      const core::Tensor dense = ops::contiguous(part);
      const auto b = bytes_of(dense);
      s.parts.emplace_back(b.begin(), b.end());
    }
    out.emplace(key, std::move(s));
  }
  return out;
}

}  // namespace detail

namespace {

// "local": one process holds every key; the same Shard code as a server.
class LocalKVStore final : public KVStore {
 public:
  io::Mode type() const override { return io::Mode::Local; }
  int rank() const override { return 0; }
  int num_workers() const override { return 1; }

  void init(std::span<const int64_t> keys, std::span<const Tensor> values) override {
    LOOM_CHECK(keys.size() == values.size(), "kvstore: init of {} keys with {} values", keys.size(), values.size());
    for (size_t i = 0; i < keys.size(); ++i) {
      detail::check_value(keys[i], values[i], "init");
      LOOM_CHECK(!shards_.contains(keys[i]), "kvstore: key {} is already initialized", keys[i]);
      const core::Shape& shape = values[i].shape();
      auto shard = std::make_unique<Shard>(ShardOptions{.key = keys[i], .dtype = values[i].dtype(), .key_shape = shape,
                                                        .row_begin = 0, .num_rows = key_rows(shape)});
      shard->init(detail::bytes_of(values[i]));
      if (optimizer_) shard->set_optimizer(optimizer_);
      shards_.emplace(keys[i], Entry{std::move(shard), 0});
    }
  }

  void push(std::span<const int64_t> keys, std::span<const Tensor> values) override {
    LOOM_CHECK(keys.size() == values.size(), "kvstore: push of {} keys with {} values", keys.size(), values.size());
    for (size_t i = 0; i < keys.size(); ++i) {
      Entry& e = entry(keys[i], "push");
      check_same(e, keys[i], values[i], "push");
      stats_.bytes_sent += values[i].nbytes();
      e.shard->push(0, ++e.version, PushData{.data = {nullptr, detail::bytes_of(values[i])}});
    }
  }

  void pull(std::span<const int64_t> keys, std::span<const Tensor> outs) override {
    LOOM_CHECK(keys.size() == outs.size(), "kvstore: pull of {} keys into {} tensors", keys.size(), outs.size());
    for (size_t i = 0; i < keys.size(); ++i) {
      Entry& e = entry(keys[i], "pull");
      check_same(e, keys[i], outs[i], "pull");
      const auto w = e.shard->weights();
      std::memcpy(outs[i].data_ptr(), w.data(), w.size());
      stats_.bytes_received += w.size();
    }
  }

  void pushpull(std::span<const int64_t> keys, std::span<const Tensor> values, std::span<const Tensor> outs) override {
    push(keys, values);
    pull(keys, outs);
  }

  void row_sparse_push(int64_t key, const Tensor& row_ids, const Tensor& rows) override {
    Entry& e = entry(key, "row_sparse_push");
    auto ids = detail::row_ids_of(key, row_ids, true);
    detail::check_value(key, rows, "row_sparse_push");
    stats_.bytes_sent += rows.nbytes() + ids.size() * 8;
    e.shard->push(0, ++e.version, PushData{.data = {nullptr, detail::bytes_of(rows)}, .rows = std::move(ids)});
  }

  void row_sparse_pull(int64_t key, const Tensor& out, const Tensor& row_ids) override {
    Entry& e = entry(key, "row_sparse_pull");
    auto ids = detail::row_ids_of(key, row_ids, false);
    detail::check_value(key, out, "row_sparse_pull");
    e.shard->read_rows(ids, detail::mutable_bytes_of(out));
    stats_.bytes_sent += ids.size() * 8;  // counted as the distributed store counts them
    stats_.bytes_received += out.nbytes();
  }

  void set_optimizer(const optim::OptimizerSpec& spec) override {
    optimizer_ = make_server_optimizer(spec);
    for (auto& [k, e] : shards_) e.shard->set_optimizer(optimizer_);
  }
  void barrier(std::optional<std::chrono::milliseconds>) override {}

  void optimizer_states(const std::string& prefix, io::NamedTensors& tensors, io::Metadata& meta) override {
    std::map<int64_t, detail::KeyState> states;
    for (auto& [k, e] : shards_) {
      ShardState s = e.shard->state();
      std::vector<std::vector<std::byte>> parts = {std::move(s.weights)};
      for (auto& slot : s.slots) parts.push_back(std::move(slot));
      states.emplace(k, detail::KeyState{.shape = e.shard->options().key_shape, .dtype = e.shard->options().dtype,
                                         .parts = std::move(parts), .updates = s.updates});
    }
    detail::put_states(states, prefix, tensors, meta);
  }

  void restore_optimizer_states(const io::SafetensorsFile& file, const std::string& prefix,
                                const std::string& source) override {
    for (auto& [k, s] : detail::get_states(file, prefix, source)) {
      Entry& e = entry(k, "load_optimizer_states");
      LOOM_CHECK_T(ShapeError, e.shard->options().key_shape == s.shape && e.shard->options().dtype == s.dtype,
                   "{}: key {} is {} {} in the file, {} {} here", source, k, core::name(s.dtype),
                   core::to_string(s.shape), core::name(e.shard->options().dtype),
                   core::to_string(e.shard->options().key_shape));
      // Rounds and versions from 0: this store counts its pushes from 0 again.
      ShardState state{.weights = s.parts[0], .updates = s.updates, .versions = {0}};
      state.slots.assign(s.parts.begin() + 1, s.parts.end());
      e.shard->set_state(std::move(state));
      e.version = 0;
    }
  }

  std::map<int64_t, KeySnapshot> key_states(std::span<const int64_t> keys) override {
    std::map<int64_t, KeySnapshot> out;
    for (int64_t k : keys) {
      const Shard& shard = *entry(k, "key_states").shard;
      const ShardState s = shard.state();
      auto tensor_of = [&](const std::vector<std::byte>& bytes) {
        Tensor t = ops::empty(shard.options().key_shape, shard.options().dtype);
        if (!bytes.empty()) std::memcpy(t.data_ptr(), bytes.data(), bytes.size());
        return t;
      };
      KeySnapshot& snap = out[k];
      snap.value = tensor_of(s.weights);
      for (const auto& slot : s.slots) snap.slots.push_back(tensor_of(slot));
      snap.updates = s.updates;
    }
    return out;
  }

  KVStoreStats stats() const override { return stats_; }

 private:
  struct Entry {
    std::unique_ptr<Shard> shard;
    int64_t version = 0;
  };
  Entry& entry(int64_t key, const char* what) {
    auto it = shards_.find(key);
    LOOM_CHECK(it != shards_.end(), "kvstore: {} of key {}, which is not initialized (call init first)", what, key);
    return it->second;
  }
  static void check_same(const Entry& e, int64_t key, const Tensor& t, const char* what) {
    detail::check_matches(key, t, e.shard->options().key_shape, e.shard->options().dtype, what);
  }

  std::map<int64_t, Entry> shards_;
  std::shared_ptr<const ServerOptimizer> optimizer_;
  KVStoreStats stats_;
};

}  // namespace

void KVStore::save_optimizer_states(const std::filesystem::path& path) {
  io::NamedTensors tensors;
  io::Metadata meta;
  optimizer_states("", tensors, meta);
  if (rank() == 0) io::write_safetensors(path, tensors, meta);
  barrier();
}

void KVStore::load_optimizer_states(const std::filesystem::path& path) {
  restore_optimizer_states(rank() == 0 ? io::read_safetensors(path) : io::SafetensorsFile{}, "", path.string());
}

void KVStore::pushpull_fixed_point(std::span<const int64_t>, std::span<const Tensor>, std::span<const Tensor>) {
  throw ConfigError(format("kvstore {}: fixed-point pushes (deterministic mode) need dist_sync, whose servers add "
                           "every worker's push of a round before updating", type()));
}

std::map<int64_t, KeySnapshot> KVStore::key_states(std::span<const int64_t> keys) {
  io::NamedTensors tensors;
  io::Metadata meta;
  optimizer_states("", tensors, meta);
  std::map<int64_t, KeySnapshot> out;
  if (rank() != 0) return out;
  std::map<std::string, const Tensor*, std::less<>> by_name;
  for (const auto& [name, t] : tensors) by_name.emplace(name, &t);
  auto find = [&](const std::string& name) {
    auto it = by_name.find(name);
    LOOM_CHECK(it != by_name.end(), "kvstore: key_states: the store handed over no '{}'", name);
    return *it->second;
  };
  for (int64_t k : keys) {
    auto m = meta.find(detail::slots_name("", k));
    LOOM_CHECK(m != meta.end(), "kvstore: key_states of key {}, which is not initialized (call init first)", k);
    KeySnapshot& snap = out[k];
    snap.value = find(detail::value_name("", k));
    const size_t slots = std::stoull(m->second);
    for (size_t j = 0; j < slots; ++j) snap.slots.push_back(find(detail::slot_name("", k, j)));
    snap.updates = std::stoll(meta.at(detail::updates_name("", k)));
  }
  return out;
}

void KVStore::restore_key_states(const std::map<int64_t, KeySnapshot>& states) {
  io::SafetensorsFile f;
  if (rank() == 0) {
    f.metadata["format"] = detail::kFormat;
    for (const auto& [k, snap] : states) {
      f.tensors.emplace_back(detail::value_name("", k), snap.value);
      for (size_t j = 0; j < snap.slots.size(); ++j) f.tensors.emplace_back(detail::slot_name("", k, j), snap.slots[j]);
      f.metadata[detail::updates_name("", k)] = std::to_string(snap.updates);
      f.metadata[detail::slots_name("", k)] = std::to_string(snap.slots.size());
    }
  }
  restore_optimizer_states(f, "", "the state put back");
}

void KVStore::broadcast(std::span<const int64_t> keys, std::span<const Tensor> values, std::span<const Tensor> outs) {
  init(keys, values);
  pull(keys, outs);
}

std::unique_ptr<KVStore> detail::create_local_kvstore() { return std::make_unique<LocalKVStore>(); }

}  // namespace loom::ps
