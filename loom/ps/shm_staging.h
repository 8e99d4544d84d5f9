// The worker side of the parameter servers' one-host data path: a shared
// region (comm::SharedRegion) the worker stages a call's dense slices in, so
// that a server on the same host reads the pushed bytes and writes the pulled
// ones there, and only a header and an offset cross the socket. Over loopback
// TCP every byte is copied four times by the kernel (send and receive, each
// way); here it is copied once each way by the worker and the server.
//
//   // given: std::vector<bool> on_my_host, std::vector<int> chain, size_t total
//   ps::ShmStaging staging(/*worker=*/0, on_my_host);
//   for (int s : staging.reserve(total)) { /* send Op::ShmAttach with staging.name() to s; */ staging.attached(s, true); }
//   staging.attach_done();                       // the name goes; the servers keep their mappings
//   if (staging.covers(chain)) { /* copy the slice to staging.data() + offset, send Flag::Shm with the offset */ }
//
// A request uses the region only when every server of its replica chain is on
// this host and has mapped the current region (a re-sent request must find
// its bytes wherever it lands). A server that cannot map it (another mount
// namespace, an older build) is told apart by its error reply and served over
// the socket from then on. Not thread-safe, like the KVStore that owns it;
// the region is reused by the next call, so a call's replies must all be in
// before the next call writes (the KVStore's calls are synchronous).
#pragma once

#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "loom/comm/transport/shared_region.h"

namespace loom::ps {

class ShmStaging {
 public:
  // Slices are placed at multiples of this in the region.
  static constexpr size_t kAlign = 64;
  // Every staging region's name starts so ("/loom-ps-w<rank>-<random>"); servers map no other.
  static constexpr const char* kNamePrefix = "/loom-ps-w";

  // `on_my_host[s]`: server s runs on this worker's host.
  ShmStaging(int worker, std::vector<bool> on_my_host);

  bool any() const;  // some server may use the region
  // Every server of `chain` is on this host (and has not refused the region).
  bool on_host(std::span<const int> chain) const;
  // Every server of `chain` is on this host and has mapped the current region.
  bool covers(std::span<const int> chain) const;

  // Makes the region hold at least `bytes`. Returns the servers that must map
  // the new region (Op::ShmAttach) before it is used, or none if it is big enough.
  std::vector<int> reserve(size_t bytes);
  // Server `s` answered the attach request: mapped (`ok`) or not (then it is
  // served over the socket from now on).
  void attached(int server, bool ok);
  // Every attach is answered: the region's name is removed.
  void attach_done();

  std::byte* data() const { return region_ ? region_->data() : nullptr; }
  size_t size() const { return region_ ? region_->size() : 0; }
  const std::string& name() const { return region_->name(); }

 private:
  int worker_;
  std::vector<bool> local_;     // on this host and not refused
  std::vector<bool> attached_;  // mapped the current region
  std::shared_ptr<comm::SharedRegion> region_;
};

}  // namespace loom::ps
