// A parameter-server job inside one test process: a coordinator, S servers
// (each run_server() on its own thread, over real TCP sockets with CURVE) and
// N workers, each a thread with its own KVStore.
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "loom/comm/rendezvous/coordinator.h"
#include "loom/comm/rendezvous/job_env.h"
#include "loom/core/error.h"
#include "loom/ps/kvstore.h"
#include "loom/ps/server_process.h"

namespace loom::ps::testing {

struct ClusterOptions {
  int workers = 2;
  int servers = 2;
  int replicas = 0;
  int64_t split_bound = kDefaultSplitBound;
  io::Mode type = io::Mode::DistSync;
  int staleness = 0;
  std::chrono::milliseconds heartbeat_timeout{3000};
  std::chrono::milliseconds timeout{30000};
  bool shared_memory = true;  // the workers' KVStoreOptions::shared_memory (all share one host here)
};

class Cluster {
 public:
  explicit Cluster(const ClusterOptions& o) : o_(o) {
    coordinator_ = std::make_unique<comm::Coordinator>(comm::CoordinatorOptions{
        .num_workers = o.workers, .num_servers = o.servers, .security = {.secret = "ps-test-secret"},
        .heartbeat_interval = std::chrono::milliseconds(200), .heartbeat_timeout = o.heartbeat_timeout});
    const std::string ep = coordinator_->endpoint();  // tcp://127.0.0.1:PORT
    const auto colon = ep.rfind(':');
    env_.coordinator_host = "127.0.0.1";
    env_.coordinator_port = std::stoi(ep.substr(colon + 1));
    env_.world_size = o.workers;
    env_.num_servers = o.servers;
    env_.secret = "ps-test-secret";
    env_.source = "LOOM";
    server_status_.assign(static_cast<size_t>(o.servers), -1);
    for (int s = 0; s < o.servers; ++s) {
      servers_.emplace_back([this, s] {
        comm::JobEnv env = env_;
        env.role = "server";
        env.rank = s;
        try {
          server_status_[static_cast<size_t>(s)] =
              run_server(env, {.replicas = o_.replicas, .split_bound = o_.split_bound});
        } catch (const std::exception& e) {
          ADD_FAILURE() << "server " << s << ": " << e.what();
        }
      });
    }
  }

  ~Cluster() {
    for (auto& t : servers_) t.join();
  }

  comm::JobEnv worker_env(int rank) const {
    comm::JobEnv env = env_;
    env.role = "worker";
    env.rank = rank;
    return env;
  }

  // Runs fn(rank, kv) on every worker thread; failures are reported per worker.
  void run(const std::function<void(int, KVStore&)>& fn) {
    std::vector<std::thread> threads;
    for (int r = 0; r < o_.workers; ++r) {
      threads.emplace_back([this, r, &fn] {
        try {
          auto kv = join_kvstore(worker_env(r), o_.type,
                                 {.staleness = o_.staleness, .timeout = o_.timeout, .shared_memory = o_.shared_memory});
          fn(r, *kv);
          kv->close();
        } catch (const std::exception& e) {
          ADD_FAILURE() << "worker " << r << ": " << e.what();
        }
      });
    }
    for (auto& t : threads) t.join();
  }

  int server_status(int s) const { return server_status_[static_cast<size_t>(s)]; }

 private:
  ClusterOptions o_;
  comm::JobEnv env_;
  std::unique_ptr<comm::Coordinator> coordinator_;
  std::vector<std::thread> servers_;
  std::vector<int> server_status_;
};

}  // namespace loom::ps::testing
