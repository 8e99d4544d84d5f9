// Internal to loom_ps: how a worker's dense slice requests travel. A slice
// whose every server (its replica chain) shares this host and has mapped the
// worker's staging region (shm_staging.h) goes through it: the pushed bytes
// are copied in now, the header carries flag::kShm and the slot's offset, and
// the pulled bytes are copied out of the slot when the reply comes. Any
// other slice goes over the socket, its pushed bytes lent to ZeroMQ with
// their owner. Owns the staging region and counts the bytes it carried.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "loom/core/log.h"
#include "loom/ps/request_plan.h"
#include "loom/ps/server_calls.h"
#include "loom/ps/shm_staging.h"

namespace loom::ps {

// One dense slice request: what it sends (push) and where its reply's bytes go (pull).
struct DenseSlice {
  DenseRequest r;
  int64_t key = 0;
  std::span<const std::byte> in;       // empty: nothing to send (r.nbytes, or more for a fixed-point push)
  std::shared_ptr<const void> owner;   // keeps `in` alive while ZeroMQ sends it
  std::span<std::byte> out;            // empty: nothing comes back
};

struct DenseTransferOptions {
  int worker = 0;
  std::vector<bool> on_my_host;  // [s]: server s may share memory with this worker
  core::LogSink log = core::log_to_stderr;  // a server that cannot map the region is told here
};

class DenseTransfer {
 public:
  // `servers` runs the attach requests a bigger region needs; it must outlive this.
  DenseTransfer(ServerCalls& servers, DenseTransferOptions o);

  // Adds a request to `batch` for each slice (taking their requests). Grows
  // the staging region first if this call's on-host slices need more room,
  // having the servers map it (a batch of its own, run now). The slices'
  // `in` bytes must stay valid until this returns (the on-host ones are
  // copied now); their `out` spans until `batch` has run.
  void add(RequestBatch& batch, std::vector<DenseSlice>& slices);

  uint64_t shm_bytes_sent() const { return shm_bytes_sent_; }
  uint64_t shm_bytes_received() const { return shm_bytes_received_; }

 private:
  void attach(const std::vector<int>& servers);

  ServerCalls& servers_;
  DenseTransferOptions o_;
  ShmStaging staging_;
  uint64_t shm_bytes_sent_ = 0, shm_bytes_received_ = 0;
};

}  // namespace loom::ps
