// Internal to loom/ps: what the local and the distributed KVStore share.
#pragma once

#include <cstddef>
#include <filesystem>
#include <map>
#include <vector>

#include "loom/core/tensor.h"
#include "loom/io/safetensors.h"
#include "loom/ps/kvstore.h"
#include "loom/ps/shard.h"

namespace loom::ps::detail {

std::unique_ptr<KVStore> create_local_kvstore();

// A value passed to the store: CPU, contiguous, f32 or f64 (TypeError/ValueError naming the key otherwise).
void check_value(int64_t key, const core::Tensor& t, const char* what);
// check_value, plus the key's shape and dtype (ShapeError/TypeError naming both).
void check_matches(int64_t key, const core::Tensor& t, const core::Shape& shape, core::DType dtype, const char* what);
std::span<const std::byte> bytes_of(const core::Tensor& t);
std::span<std::byte> mutable_bytes_of(const core::Tensor& t);
// Row ids of a sparse call: i64, 1-D, contiguous.
std::vector<int64_t> row_ids_of(int64_t key, const core::Tensor& ids, bool sorted_unique);

// One key's saved state: the whole value and each optimizer slot, plus its update count.
struct KeyState {
  core::Shape shape;
  core::DType dtype = core::DType::F32;
  std::vector<std::vector<std::byte>> parts;  // [value] [slot 0] ...
  int64_t updates = 0;
};
// As tensors "<prefix>key<k>" (the value) and "<prefix>key<k>.state<j>", with
// metadata "<prefix>format", "<prefix>key<k>.updates" and "<prefix>key<k>.slots".
void put_states(const std::map<int64_t, KeyState>& states, const std::string& prefix, io::NamedTensors& tensors,
                io::Metadata& meta);
// Back from such tensors (IoError naming `source` when they are not there or malformed).
std::map<int64_t, KeyState> get_states(const io::SafetensorsFile& file, const std::string& prefix,
                                       const std::string& source);

}  // namespace loom::ps::detail
