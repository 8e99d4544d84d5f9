// ZeroMQ transports for the comm tests: endpoints, options and worlds of
// ranks as threads (zmq_transport_test.cc, zmq_peers_test.cc).
#pragma once

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "loom/comm/wire/security.h"
#include "loom/comm/transport/zmq_transport.h"
#include "transport_contract.h"

namespace loom::comm::testing_worlds {

using namespace std::chrono_literals;
using contract::World;

inline constexpr char kSecret[] = "loom-test-secret-d2c4";

inline std::vector<std::string> tcp_endpoints(int n) {
  std::vector<std::string> e;
  for (int r = 0; r < n; ++r) e.push_back(pick_free_tcp_endpoint("127.0.0.1"));
  return e;
}

inline std::vector<std::string> ipc_endpoints(int n) {
  static std::atomic<int> counter{0};
  const int id = counter++;
  std::vector<std::string> e;
  for (int r = 0; r < n; ++r) {
    e.push_back("ipc:///tmp/loom-zmq-test-" + std::to_string(::getpid()) + "-" + std::to_string(id) + "-" +
                std::to_string(r));
  }
  return e;
}

inline ZmqOptions test_options() {
  ZmqOptions o;
  o.linger = 200ms;  // keeps teardown short when a test leaves messages behind
  return o;
}

inline SecurityOptions curve() { return {.secret = kSecret}; }
inline SecurityOptions plaintext() { return {.secret = {}, .insecure = true}; }

inline World make_zmq(const std::vector<std::string>& endpoints, const SecurityOptions& security,
               ZmqOptions options = test_options()) {
  World world;
  for (int r = 0; r < static_cast<int>(endpoints.size()); ++r) {
    world.push_back(std::make_shared<ZmqTransport>(r, endpoints, security, options));
  }
  return world;
}

}  // namespace loom::comm::testing_worlds
