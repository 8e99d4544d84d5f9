// Test helper: runs fn(communicator) on n ranks as threads over an in-process
// hub (DESIGN.md: distributed tests run ranks as threads); rethrows the first error.
#pragma once

#include <exception>
#include <thread>
#include <vector>

#include "loom/comm/collectives/communicator.h"
#include "loom/comm/transport/inproc_transport.h"

namespace loom::comm::testing {

template <class F>
void run_ranks(int n, const std::vector<int>& hosts, F&& fn) {
  InProcHub hub(n);
  std::vector<std::exception_ptr> errors(static_cast<size_t>(n));
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      try {
        Communicator c = make_communicator(hub.transport(r), hosts);
        fn(c);
      } catch (...) {
        errors[static_cast<size_t>(r)] = std::current_exception();
      }
    });
  }
  for (auto& t : threads) t.join();
  for (auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }
}

}  // namespace loom::comm::testing
