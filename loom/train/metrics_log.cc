#include "loom/train/metrics_log.h"

#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>

#include "loom/core/error.h"

namespace loom::train {

LogRecord::LogRecord(std::initializer_list<std::pair<std::string, LogValue>> fields) {
  for (const auto& [key, value] : fields) add(key, value);
}

LogRecord& LogRecord::add(std::string key, LogValue value) {
  for (auto& [k, v] : fields_) {
    if (k == key) {
      v = std::move(value);
      return *this;
    }
  }
  fields_.emplace_back(std::move(key), std::move(value));
  return *this;
}

LogRecord& LogRecord::add(const std::map<std::string, double>& values) {
  for (const auto& [key, value] : values) add(key, value);
  return *this;
}

std::string LogRecord::to_json() const {
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  for (const auto& field : fields_) {
    const std::string& key = field.first;  // a plain reference: clang 14 cannot capture bindings
    std::visit([&j, &key](const auto& v) { j[key] = v; }, field.second.get());
  }
  // Invalid UTF-8 in a string is replaced rather than thrown about: a log line
  // must not stop training.
  return j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

MetricsLog::MetricsLog(const std::filesystem::path& path, OpenMode mode) : path_(path) {
  if (path.has_parent_path()) {
    std::error_code ec;
    std::filesystem::create_directories(path.parent_path(), ec);
    if (ec) {
      throw IoError(
          format("MetricsLog: cannot create directory {}: {}", path.parent_path().string(), ec.message()));
    }
  }
  file_ = std::fopen(path.c_str(), mode == OpenMode::Append ? "ae" : "we");
  if (file_ == nullptr)
    throw IoError(format("MetricsLog: cannot open {}: {}", path.string(), std::strerror(errno)));
}

MetricsLog::~MetricsLog() {
  try {
    close();
  } catch (const std::exception&) {
    // A destructor must not throw; close() explicitly to get the error.
  }
}

void MetricsLog::write(const LogRecord& record) {
  LOOM_CHECK(file_ != nullptr, "MetricsLog: {} is closed", path_.string());
  line_ = record.to_json();
  line_ += '\n';
  if (std::fwrite(line_.data(), 1, line_.size(), file_) != line_.size() || std::fflush(file_) != 0) {
    throw IoError(format("MetricsLog: cannot write {}: {}", path_.string(), std::strerror(errno)));
  }
}

void MetricsLog::close() {
  if (file_ == nullptr) return;
  std::FILE* f = file_;
  file_ = nullptr;
  if (std::fclose(f) != 0)
    throw IoError(format("MetricsLog: cannot close {}: {}", path_.string(), std::strerror(errno)));
}

}  // namespace loom::train
