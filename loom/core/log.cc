#include "loom/core/log.h"

#include <cstdio>
#include <string>

namespace loom::core {

void log_to_stderr(LogLevel, std::string_view message) {
  std::string line(message);
  line += '\n';
  std::fwrite(line.data(), 1, line.size(), stderr);  // one write: lines from threads do not interleave
}

}  // namespace loom::core
