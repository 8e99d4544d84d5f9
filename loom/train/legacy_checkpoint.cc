#include "loom/train/legacy_checkpoint.h"

#include <charconv>
#include <map>
#include <optional>
#include <string_view>

#include "loom/core/error.h"
#include "loom/ops/creation.h"

namespace loom::train {
namespace {

constexpr std::string_view kOldPrefix = "servers.";
constexpr std::string_view kOldFormat = "loom-kvstore-state-v1";

std::optional<int64_t> number(std::string_view digits) {
  int64_t v = 0;
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), v);
  if (digits.empty() || ec != std::errc() || end != digits.data() + digits.size() || v < 0) return std::nullopt;
  return v;
}

// One key's old entries.
struct OldKey {
  const core::Tensor* value = nullptr;
  std::map<int64_t, const core::Tensor*> slots;
};

int64_t metadata_number(const io::Metadata& m, const std::string& key, const std::string& source) {
  auto it = m.find(key);
  std::optional<int64_t> v = it == m.end() ? std::nullopt : number(it->second);
  LOOM_CHECK_T(IoError, v.has_value(), "{}: old parameter-server layout: metadata '{}' is missing or not a count",
               source, key);
  return *v;
}

}  // namespace

bool upgrade_legacy_server_state(io::SafetensorsFile& f, const optim::StateLayout& layout, const std::string& source) {
  auto format_it = f.metadata.find(std::string(kOldPrefix) + "format");
  if (format_it == f.metadata.end()) return false;
  LOOM_CHECK_T(IoError, format_it->second == kOldFormat,
               "{}: 'servers.format' is '{}'; the only old parameter-server layout is '{}'", source, format_it->second,
               kOldFormat);
  const size_t n = layout.params.size();
  std::map<int64_t, OldKey> keys;
  for (const auto& [name, t] : f.tensors) {
    std::string_view rest(name);
    if (!rest.starts_with(kOldPrefix)) continue;
    rest.remove_prefix(kOldPrefix.size());
    const size_t dot = rest.find(".state");
    const bool is_key = rest.starts_with("key") && (dot == rest.npos || dot >= 3);
    std::optional<int64_t> key = is_key ? number(rest.substr(3, dot == rest.npos ? rest.npos : dot - 3)) : std::nullopt;
    std::optional<int64_t> slot = dot == rest.npos ? std::optional<int64_t>(-1) : number(rest.substr(dot + 6));
    LOOM_CHECK_T(IoError, key && slot, "{}: old parameter-server layout: unexpected tensor '{}'", source, name);
    LOOM_CHECK_T(IoError, static_cast<size_t>(*key) < n,
                 "{}: written in the old parameter-server layout (servers.key<k>) with a key past the model's {} "
                 "parameters (key {}: a server-embedding table), which cannot be named from its key: resume it with "
                 "the Loom version that wrote it", source, n, *key);
    OldKey& k = keys[*key];
    if (*slot < 0) k.value = &t;
    else k.slots[*slot] = &t;
  }

  io::NamedTensors out;
  std::map<std::string, core::Tensor> weights;  // model.<p> -> the servers' value
  for (size_t i = 0; i < n; ++i) {
    const std::string& p = layout.params[i];
    auto it = keys.find(static_cast<int64_t>(i));
    LOOM_CHECK_T(IoError, it != keys.end() && it->second.value,
                 "{}: old parameter-server layout: no 'servers.key{}' for parameter '{}'", source, i, p);
    const OldKey& k = it->second;
    const std::string meta = format("{}key{}", kOldPrefix, i);
    const int64_t updates = metadata_number(f.metadata, meta + ".updates", source);
    const int64_t slots = metadata_number(f.metadata, meta + ".slots", source);
    const bool numbered = slots == 0 || (!k.slots.empty() && k.slots.rbegin()->first == slots - 1);  // state0 .. state<slots-1>
    LOOM_CHECK_T(IoError, static_cast<size_t>(slots) == k.slots.size() && numbered,
                 "{}: old parameter-server layout: key {} says {} slots and has {}", source, i, slots, k.slots.size());
    LOOM_CHECK_T(IoError, slots == 0 || static_cast<size_t>(slots) == layout.slots.size(),
                 "{}: old parameter-server layout: the servers kept {} optimizer slots for '{}', rule '{}' keeps {}",
                 source, slots, p, layout.rule, layout.slots.size());
    weights.emplace("model." + p, *k.value);
    if (updates == 0) continue;  // never updated: no state
    for (size_t j = 0; j < layout.slots.size(); ++j) {
      // A key updated before the servers had an optimizer has no slots: zero, as the rule starts them.
      core::Tensor slot =
          slots == 0 ? ops::zeros(k.value->shape(), k.value->dtype()) : *k.slots.at(static_cast<int64_t>(j));
      out.emplace_back(format("optim.{}.{}", p, layout.slots[j]), slot);
    }
    out.emplace_back(format("optim.{}.step", p), core::Tensor::scalar<int64_t>(updates));
  }

  // The model's tensors (weights from the servers), the optimizer's state, the rest as it was.
  io::NamedTensors rest;
  bool had_step = false;
  for (auto& [name, t] : f.tensors) {
    if (name.starts_with(kOldPrefix)) continue;
    if (auto w = weights.find(name); w != weights.end()) {
      rest.emplace_back(name, w->second);
      weights.erase(w);
    } else if (name == "optim.step") {
      had_step = true;
      rest.emplace_back(name, core::Tensor::scalar<int64_t>(metadata_number(f.metadata, "loom.step", source)));
    } else {
      rest.emplace_back(name, t);
    }
  }
  LOOM_CHECK_T(IoError, weights.empty() && had_step, "{}: old parameter-server layout without {}", source,
               weights.empty() ? std::string("'optim.step'") : format("'{}'", weights.begin()->first));
  for (auto& e : out) rest.push_back(std::move(e));
  f.tensors = std::move(rest);
  for (auto it = f.metadata.begin(); it != f.metadata.end();) {
    it = it->first.starts_with(kOldPrefix) ? f.metadata.erase(it) : std::next(it);
  }
  return true;
}

}  // namespace loom::train
