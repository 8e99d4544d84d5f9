// The in-process transport: ranks are threads of one process sharing a hub.
// Used by tests (eight ranks as threads, DESIGN.md) and as the reference the
// other transports are compared with.
//
//   comm::InProcHub hub(8);
//   std::vector<std::thread> ranks;
//   for (int r = 0; r < 8; ++r) ranks.emplace_back([&, r] { auto t = hub.transport(r); ... });
//   for (auto& t : ranks) t.join();
#pragma once

#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "loom/comm/transport/transport.h"

namespace loom::comm {

class InProcHub : public std::enable_shared_from_this<InProcHub> {
 public:
  explicit InProcHub(int size);
  int size() const { return size_; }
  // The endpoint of `rank` (the hub must outlive it).
  std::shared_ptr<Transport> transport(int rank);

 private:
  friend class InProcTransport;
  struct Mailbox {  // messages to one rank
    std::mutex mu;
    std::condition_variable cv;
    std::map<std::pair<int, uint64_t>, std::deque<std::vector<std::byte>>> queues;  // (from, tag) -> messages
    std::map<int, std::string> lost;                                                 // peers declared gone
  };
  int size_;
  std::vector<std::unique_ptr<Mailbox>> boxes_;
};

}  // namespace loom::comm
