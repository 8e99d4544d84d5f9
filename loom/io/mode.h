// How a job trains: the one list of modes, their names in job files, in
// `--type` flags and in the coordinator's store ("ps/type"), and what each
// implies. Everything else compares the enum, never the text.
//
//   io::Mode m = io::parse_mode("dist_sync").value();   // nullopt for an unknown name
//   if (io::uses_servers(m)) ...;                        // dist_sync, dist_async, dist_ssp
//   std::string_view text = io::name(m);                 // "dist_sync"
#pragma once

#include <cstdint>
#include <iosfwd>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace loom::io {

enum class Mode : uint8_t {
  Local,      // one process (a KVStore: the store lives in this process)
  Allreduce,  // synchronous data parallel over collectives
  DistSync,   // parameter servers, rounds merged over all workers
  DistAsync,  // parameter servers, each push applied on arrival
  DistSsp,    // dist_async with a bound on staleness
  Pipeline,   // the model's layers in stages on different processes (pipeline parallelism)
};

std::string_view name(Mode mode);
std::optional<Mode> parse_mode(std::string_view text);
// Every name(Mode), in enum order: for messages and "did you mean" hints.
const std::vector<std::string>& mode_names();
// Writes name(mode), so that format("{}", mode) reads as the job file does.
std::ostream& operator<<(std::ostream& os, Mode mode);

inline bool uses_servers(Mode m) { return m == Mode::DistSync || m == Mode::DistAsync || m == Mode::DistSsp; }

}  // namespace loom::io
