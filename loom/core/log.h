// Where library code running on its own threads (a parameter server's loop,
// a KVStore closing) sends what it has to say, instead of writing to stderr
// itself: an embedding program decides where the lines go.
//
//   std::vector<std::string> lines;  // (guard it with a mutex: sinks run on library threads)
//   core::LogSink sink = [&](core::LogLevel, std::string_view m) { lines.emplace_back(m); };
//   core::log(sink, core::LogLevel::Warning, "server 1: dropped a message");
//
// Long-lived objects take a sink in their options (ps::ServerOptions::log,
// ps::ServerProcessOptions::log, ps::KVStoreOptions::log), defaulting to
// log_to_stderr, which writes each message as one line to stderr: what the
// `loom` command shows. An empty sink discards. A sink may be called from the
// object's own threads, so it must be thread-safe. No global logger: two
// servers in one process (tests run them as threads) can log apart.
#pragma once

#include <functional>
#include <string_view>

namespace loom::core {

enum class LogLevel { Info, Warning, Error };

using LogSink = std::function<void(LogLevel, std::string_view)>;

// The default sink: the message and a newline, in one write.
void log_to_stderr(LogLevel level, std::string_view message);

inline void log(const LogSink& sink, LogLevel level, std::string_view message) {
  if (sink) sink(level, message);
}

}  // namespace loom::core
