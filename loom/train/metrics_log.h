// An append-only JSON Lines log of metrics: one JSON object per line, each
// line flushed as it is written, so `tail -f` and a crash both see whole lines.
//
//   // given: int64_t epoch, double wall_s, const train::ClassificationResult& result
//   train::MetricsLog log("runs/mnist/metrics.jsonl");          // appends
//   log.write({{"epoch", 1}, {"train_loss", 0.25}, {"phase", "train"}});
//
//   train::LogRecord r;                                          // built up in parts
//   r.add("epoch", epoch).add("wall_s", wall_s).add(result.as_map("test_"));
//   log.write(r);
//   // {"epoch":1,"wall_s":12.5,"test_accuracy":0.98,...}
//
// Keys keep the order they were added in. Values are numbers, booleans or
// strings; a NaN or infinite double is written as null (JSON has no NaN).
// Every I/O failure throws IoError naming the file.
#pragma once

#include <concepts>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <initializer_list>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace loom::train {

// One value of a record: any integer, floating point, bool or string.
class LogValue {
 public:
  using Storage = std::variant<int64_t, uint64_t, double, bool, std::string>;

  LogValue(bool v) : v_(v) {}
  template <std::signed_integral T>
  LogValue(T v) : v_(static_cast<int64_t>(v)) {}
  template <std::unsigned_integral T>
  requires(!std::same_as<T, bool>) LogValue(T v) : v_(static_cast<uint64_t>(v)) {}
  template <std::floating_point T>
  LogValue(T v) : v_(static_cast<double>(v)) {}
  LogValue(const char* v) : v_(std::string(v)) {}
  LogValue(std::string_view v) : v_(std::string(v)) {}
  LogValue(std::string v) : v_(std::move(v)) {}

  const Storage& get() const { return v_; }

 private:
  Storage v_;
};

// An ordered set of key -> value pairs; adding a key again replaces its value.
class LogRecord {
 public:
  LogRecord() = default;
  LogRecord(std::initializer_list<std::pair<std::string, LogValue>> fields);

  LogRecord& add(std::string key, LogValue value);
  LogRecord& add(const std::map<std::string, double>& values);  // e.g. ClassificationResult::as_map

  const std::vector<std::pair<std::string, LogValue>>& fields() const { return fields_; }
  // The record as one line of JSON, without the newline.
  std::string to_json() const;

 private:
  std::vector<std::pair<std::string, LogValue>> fields_;
};

enum class OpenMode { Append, Truncate };

class MetricsLog {
 public:
  explicit MetricsLog(const std::filesystem::path& path, OpenMode mode = OpenMode::Append);
  ~MetricsLog();  // close(), swallowing errors
  MetricsLog(const MetricsLog&) = delete;
  MetricsLog& operator=(const MetricsLog&) = delete;

  void write(const LogRecord& record);  // one line, flushed
  void close();                         // idempotent; later writes throw ValueError

  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  std::FILE* file_ = nullptr;
  std::string line_;  // reused
};

}  // namespace loom::train
