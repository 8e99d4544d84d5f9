// libFuzzer target for the KVStore state files (loom/ps/kvstore.h
// load_optimizer_states, and the servers' part of a Trainer checkpoint):
// a safetensors file whose tensors "key<k>" and "key<k>.state<j>" and metadata
// "format", "key<k>.updates", "key<k>.slots" are decoded (kvstore_internal.h
// get_states) and put into the shards (Shard::set_state, as a server's
// SetState does).
//
//   scripts/fuzz kvstore_state 600
//
// Input: the file. It is restored into three local stores holding keys 0
// (f32 [4]), 1 (f64 [2, 3]) and 2 (f32 scalar), one without an optimizer,
// one with SGD momentum (one state slot), one with Adam (two). The property:
// the restore either throws IoError (the file) or ValueError (a file that
// does not fit the store: shape, dtype, slots), or succeeds, and then a push
// and a pull of every key work and the state saved again holds the restored
// update counts. Anything else (another exception, a crash, a sanitizer
// report) is a bug.
#include <cstddef>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "loom/core/error.h"
#include "loom/core/tensor.h"
#include "loom/io/safetensors.h"
#include "loom/optim/spec.h"
#include "loom/ps/kvstore.h"
#include "loom/ps/kvstore_internal.h"

namespace {

using loom::core::DType;
using loom::core::Tensor;

const std::vector<int64_t> kKeys = {0, 1, 2};

std::vector<Tensor> values() {
  return {Tensor::from_vector<float>({1, 2, 3, 4}, {4}), Tensor::from_vector<double>({1, 2, 3, 4, 5, 6}, {2, 3}),
          Tensor::from_vector<float>({7}, {})};
}

void check(bool ok, const char* what) {
  if (!ok) throw loom::InternalError(std::string("kvstore_state_fuzz: ") + what);
}

void restore_into(const loom::io::SafetensorsFile& file, const loom::optim::OptimizerSpec* spec) {
  auto kv = loom::ps::detail::create_local_kvstore();
  const std::vector<Tensor> init = values();
  kv->init(kKeys, init);
  if (spec) kv->set_optimizer(*spec);
  try {
    kv->restore_optimizer_states(file, "", "fuzz");
  } catch (const loom::IoError&) {
    return;
  } catch (const loom::ValueError&) {
    return;
  }
  // A restored store trains on: one push and one pull of every key.
  std::vector<Tensor> grads = values();
  kv->push(kKeys, grads);
  std::vector<Tensor> outs = values();
  kv->pull(kKeys, outs);
  // Saved again, every key the file held keeps its update count (plus the push just applied).
  const auto restored = loom::ps::detail::get_states(file, "", "fuzz");
  loom::io::NamedTensors tensors;
  loom::io::Metadata meta;
  kv->optimizer_states("", tensors, meta);
  const auto saved =
      loom::ps::detail::get_states(loom::io::SafetensorsFile{std::move(tensors), std::move(meta)}, "", "again");
  for (const auto& [key, s] : restored) {
    auto it = saved.find(key);
    check(it != saved.end(), "a restored key is not saved again");
    check(it->second.updates == s.updates + 1, "a restored key's update count is not kept");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  loom::io::SafetensorsFile file;
  try {
    file = loom::io::read_safetensors_from_memory(std::span<const uint8_t>(data, size), "fuzz");
  } catch (const loom::IoError&) {
    return 0;
  }
  const loom::optim::OptimizerSpec sgd{.rule = loom::optim::Rule::Sgd, .lr = 0.1, .momentum = 0.9};
  const loom::optim::OptimizerSpec adam{.rule = loom::optim::Rule::Adam, .lr = 0.01};
  restore_into(file, nullptr);
  restore_into(file, &sgd);
  restore_into(file, &adam);
  return 0;
}
