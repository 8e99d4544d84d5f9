#include "loom/io/checkpoint.h"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <string_view>
#include <system_error>

#include "loom/core/error.h"

namespace loom::io {
namespace fs = std::filesystem;
namespace {

constexpr std::string_view kPrefix = "ckpt-";
constexpr std::string_view kSuffix = ".safetensors";

// "ckpt-000001200.safetensors" -> 1200; nullopt for any other name.
std::optional<int64_t> step_from_filename(std::string_view name) {
  if (name.size() <= kPrefix.size() + kSuffix.size() || !name.starts_with(kPrefix) || !name.ends_with(kSuffix)) {
    return std::nullopt;
  }
  std::string_view digits = name.substr(kPrefix.size(), name.size() - kPrefix.size() - kSuffix.size());
  if (!std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) return std::nullopt;
  int64_t step = 0;
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), step);
  if (ec != std::errc() || end != digits.data() + digits.size()) return std::nullopt;
  return step;
}

}  // namespace

CheckpointManager::CheckpointManager(fs::path dir, CheckpointOptions options)
    : dir_(std::move(dir)), options_(options) {
  LOOM_CHECK(options_.keep_last >= 0, "CheckpointManager: keep_last is {}, expected >= 0 (0 keeps all)",
             options_.keep_last);
  std::error_code ec;
  fs::create_directories(dir_, ec);
  LOOM_CHECK_T(IoError, !ec, "{}: cannot create checkpoint directory: {}", dir_.string(), ec.message());
  LOOM_CHECK_T(IoError, fs::is_directory(dir_, ec), "{}: not a directory", dir_.string());
}

fs::path CheckpointManager::path_for(int64_t step) const {
  LOOM_CHECK(step >= 0, "CheckpointManager: step {} is negative", step);
  char name[64];
  std::snprintf(name, sizeof(name), "ckpt-%09lld.safetensors", static_cast<long long>(step));
  return dir_ / name;
}

fs::path CheckpointManager::save(int64_t step, const NamedTensors& tensors, const Metadata& metadata) {
  fs::path path = path_for(step);
  write_safetensors(path, tensors, metadata);
  prune(step);
  return path;
}

std::vector<Checkpoint> CheckpointManager::list() const {
  std::vector<Checkpoint> out;
  std::error_code ec;
  fs::directory_iterator it(dir_, ec);
  LOOM_CHECK_T(IoError, !ec, "{}: cannot list checkpoint directory: {}", dir_.string(), ec.message());
  for (; it != fs::directory_iterator(); it.increment(ec)) {
    auto step = step_from_filename(it->path().filename().string());
    if (step && it->is_regular_file(ec)) out.push_back({*step, it->path()});
  }
  LOOM_CHECK_T(IoError, !ec, "{}: cannot list checkpoint directory: {}", dir_.string(), ec.message());
  // Two names can carry one step ("ckpt-5" and "ckpt-000000005"): order by name then.
  std::sort(out.begin(), out.end(), [](const Checkpoint& a, const Checkpoint& b) {
    return a.step != b.step ? a.step < b.step : a.path < b.path;
  });
  return out;
}

std::optional<fs::path> CheckpointManager::latest() const {
  auto all = list();
  if (all.empty()) return std::nullopt;
  return all.back().path;
}

void CheckpointManager::prune(int64_t just_saved) const {
  if (options_.keep_last == 0) return;
  auto all = list();
  const fs::path keep = path_for(just_saved);
  size_t kept = 0;
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    if (it->path == keep) continue;  // counted below, never removed
    if (kept + 1 < static_cast<size_t>(options_.keep_last)) {
      ++kept;
      continue;
    }
    std::error_code ec;
    fs::remove(it->path, ec);
    LOOM_CHECK_T(IoError, !ec, "{}: cannot remove old checkpoint: {}", it->path.string(), ec.message());
  }
}

}  // namespace loom::io
