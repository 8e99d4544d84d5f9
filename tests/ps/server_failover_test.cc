// Replication and takeover inside one process (tests/ps/ps_failover.sh
// checks the same with processes and kill -9): two servers with one backup
// per slice and two dist_sync workers; server 0 stops mid-run and server 1
// takes over; every acknowledged push must be in the value exactly once.
// Twice: with the workers played by raw sockets, so that every step of the
// failover happens in a chosen order, and as a whole job (coordinator,
// servers and KVStore workers as threads) whose server 0 goes away while the
// workers train.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "loom/comm/rendezvous/coordinator.h"
#include "loom/comm/wire/endpoint.h"
#include "loom/comm/rendezvous/job_env.h"
#include "loom/comm/rendezvous/join_job.h"
#include "loom/comm/rendezvous/rendezvous_keys.h"
#include "loom/core/error.h"
#include "loom/io/mode.h"
#include "loom/ops/creation.h"
#include "loom/optim/spec.h"
#include "loom/ps/kvstore.h"
#include "loom/ps/messages.h"
#include "loom/ps/placement.h"
#include "loom/ps/protocol.h"
#include "loom/ps/server.h"

namespace loom::ps {
namespace {

using namespace std::chrono_literals;
using comm::FramePtr;
using comm::OutFrame;

constexpr int kWorkers = 2;
constexpr int64_t kRows = 4;

std::vector<std::byte> bytes_of(const std::vector<int64_t>& v) {
  const auto* p = reinterpret_cast<const std::byte*>(v.data());
  return {p, p + v.size() * 8};
}
std::vector<std::byte> bytes_of(const std::vector<float>& v) {
  const auto* p = reinterpret_cast<const std::byte*>(v.data());
  return {p, p + v.size() * sizeof(float)};
}

// A worker speaking the protocol itself: one DEALER per server; it sends a
// request to the server it chooses and waits for that request's reply.
class RawWorker {
 public:
  RawWorker(int rank, const std::vector<std::string>& servers) : rank_(rank), ctx_({.insecure = true}, false) {
    for (const auto& ep : servers) sockets_.push_back(comm::Socket::dealer(ctx_, ep));
  }

  // Sends; returns the request id.
  uint64_t send(int server, Header h, const std::vector<std::vector<std::byte>>& payload) {
    h.sender = rank_;
    h.request_id = next_id_++;
    h.num_frames = static_cast<uint32_t>(payload.size());
    const HeaderBytes b = encode_header(h);
    std::vector<OutFrame> out = {OutFrame::copy(b)};
    for (const auto& p : payload) out.push_back(OutFrame::copy(p));
    sockets_[static_cast<size_t>(server)].send(out);
    return h.request_id;
  }

  // The reply to request `id` from `server` (header first), or nothing within `wait`.
  std::optional<std::vector<FramePtr>> reply(int server, uint64_t id, std::chrono::milliseconds wait) {
    const auto deadline = std::chrono::steady_clock::now() + wait;
    std::vector<FramePtr>& kept = kept_[{server, id}];
    if (!kept.empty()) return std::exchange(kept, {});
    std::vector<FramePtr> frames;
    while (std::chrono::steady_clock::now() < deadline) {
      if (!sockets_[static_cast<size_t>(server)].recv(frames)) {
        std::this_thread::sleep_for(1ms);
        continue;
      }
      const uint64_t got = decode_header(frames[0]->bytes()).request_id;
      if (got == id) return frames;
      kept_[{server, got}] = frames;  // another request's: kept for its own wait
    }
    return std::nullopt;
  }

  // Waits for a reply and checks it is Ok.
  std::vector<FramePtr> ok(int server, uint64_t id, std::chrono::milliseconds wait = 10s) {
    auto r = reply(server, id, wait);
    EXPECT_TRUE(r.has_value()) << "worker " << rank_ << ": no reply from server " << server << " to request " << id;
    if (!r) return {};
    const Header h = decode_header((*r)[0]->bytes());
    EXPECT_EQ(h.status, Status::Ok) << "worker " << rank_ << ": server " << server << " refused request " << id << ": "
                                    << (r->size() > 1 ? std::string((*r)[1]->view()) : "");
    return *r;
  }

 private:
  int rank_;
  comm::ZmqContext ctx_;
  std::vector<comm::Socket> sockets_;
  uint64_t next_id_ = 1;
  std::map<std::pair<int, uint64_t>, std::vector<FramePtr>> kept_;
};

Header about(Op op, int64_t key) {
  return {.op = op, .key = key, .num_rows = kRows, .row_numel = 1, .total_rows = kRows};
}

class Failover : public ::testing::Test {
 protected:
  void SetUp() override {
    for (int s = 0; s < 2; ++s) {
      ServerOptions o{.rank = s, .num_workers = kWorkers, .sync = true, .placement = {.num_servers = 2, .replicas = 1}};
      o.security.insecure = true;
      o.log = [](core::LogLevel, std::string_view) {};  // the takeover's warning is expected
      servers_.push_back(std::make_unique<KVServer>(o));
    }
    std::vector<std::string> endpoints;
    for (auto& s : servers_) endpoints.push_back(s->endpoint());
    for (auto& s : servers_) {
      s->connect_servers(endpoints);
      s->start();
    }
    for (int w = 0; w < kWorkers; ++w) workers_.push_back(std::make_unique<RawWorker>(w, endpoints));
  }
  void TearDown() override {
    for (auto& s : servers_) s->stop();
  }

  // Both workers init keys 0 (on server 0, backed up on 1) and 1 (on server
  // 1, backed up on 0) with zeros, and every server gets SGD with lr 1: a
  // gradient of -1 from each worker adds 1 per worker and round.
  void init_keys() {
    for (int64_t key : {0, 1}) {
      const int primary = static_cast<int>(key);
      Header with_data = about(Op::Init, key);
      with_data.flags = flag::kHasData;
      const auto dims = bytes_of(std::vector<int64_t>{kRows});
      const uint64_t a = workers_[0]->send(primary, with_data, {dims, bytes_of(std::vector<float>(kRows, 0))});
      const uint64_t b = workers_[1]->send(primary, about(Op::Init, key), {dims});
      workers_[0]->ok(primary, a);
      workers_[1]->ok(primary, b);
    }
    const auto spec = optim::encode_spec({.rule = optim::Rule::Sgd, .lr = 1.0});
    for (int s = 0; s < 2; ++s) workers_[0]->ok(s, workers_[0]->send(s, {.op = Op::SetOptimizer}, {spec}));
  }

  uint64_t push(int worker, int server, int64_t key, int64_t round) {
    Header h = about(Op::Push, key);
    h.version = round;
    return workers_[static_cast<size_t>(worker)]->send(server, h, {bytes_of(std::vector<float>(kRows, -1))});
  }

  std::vector<float> pull(int server, int64_t key) {
    const auto r = workers_[0]->ok(server, workers_[0]->send(server, about(Op::Pull, key), {}));
    std::vector<float> v(kRows);
    EXPECT_EQ(r.size(), 2u);
    if (r.size() == 2 && r[1]->bytes().size() == v.size() * 4) {
      std::memcpy(v.data(), r[1]->bytes().data(), v.size() * 4);
    }
    return v;
  }

  std::vector<std::unique_ptr<KVServer>> servers_;
  std::vector<std::unique_ptr<RawWorker>> workers_;
};

TEST_F(Failover, ThePrimaryStopsMidRoundAndItsBackupTakesOverWithNoPushLostOrAppliedTwice) {
  init_keys();
  for (int64_t round = 1; round <= 3; ++round) {  // each key to its primary: key k lives on server k
    uint64_t id[kWorkers][2];
    for (int w = 0; w < kWorkers; ++w) {
      for (int key : {0, 1}) id[w][key] = push(w, key, key, round);
    }
    for (int w = 0; w < kWorkers; ++w) {
      for (int key : {0, 1}) workers_[static_cast<size_t>(w)]->ok(key, id[w][key]);
    }
  }
  EXPECT_EQ(pull(1, 1), std::vector<float>(4, 6));

  // Round 4: worker 0's push of key 0 reaches server 0, which stops before
  // worker 1's does. Nothing of the round is acknowledged.
  const uint64_t lost0 = push(0, 0, 0, 4);
  std::this_thread::sleep_for(100ms);
  servers_[0]->stop();
  const uint64_t lost1 = push(1, 0, 0, 4);
  // Key 1's round 4 completes on server 1, which waits for its backup (server
  // 0) to acknowledge it before answering.
  const uint64_t k1w0 = push(0, 1, 1, 4), k1w1 = push(1, 1, 1, 4);
  EXPECT_FALSE(workers_[0]->reply(1, k1w0, 300ms)) << "answered before the backup held the update";
  // The workers re-send key 0's pushes to the backup, which still believes
  // server 0 alive: it holds them.
  const uint64_t again0 = push(0, 1, 0, 4), again1 = push(1, 1, 0, 4);
  EXPECT_FALSE(workers_[0]->reply(1, again0, 300ms)) << "the backup served a slice whose primary it thought alive";
  EXPECT_FALSE(workers_[0]->reply(0, lost0, 10ms));
  EXPECT_FALSE(workers_[1]->reply(0, lost1, 10ms));

  // Server 1 learns that server 0 is gone: the update waiting for it is
  // answered, it leads key 0 from the state it holds (round 3), and the held
  // pushes make round 4.
  servers_[1]->server_lost(0);
  workers_[0]->ok(1, k1w0);
  workers_[1]->ok(1, k1w1);
  workers_[0]->ok(1, again0);
  workers_[1]->ok(1, again1);

  // A push re-sent after it was applied (its reply lost with the primary) is
  // acknowledged and not applied again.
  workers_[1]->ok(1, push(1, 1, 0, 3));
  workers_[1]->ok(1, push(1, 1, 0, 4));
  EXPECT_EQ(pull(1, 0), std::vector<float>(4, 8));

  const uint64_t a = push(0, 1, 0, 5), b = push(1, 1, 0, 5), c = push(0, 1, 1, 5), d = push(1, 1, 1, 5);
  workers_[0]->ok(1, a);
  workers_[1]->ok(1, b);
  workers_[0]->ok(1, c);
  workers_[1]->ok(1, d);
  // 5 rounds of 2 workers, every one acknowledged, each counted once.
  EXPECT_EQ(pull(1, 0), std::vector<float>(4, 10));
  EXPECT_EQ(pull(1, 1), std::vector<float>(4, 10));
  // Server 1's updates: key 1's five, key 0's three as a backup and two as its primary.
  EXPECT_EQ(servers_[1]->stats().updates, 10u);
}

// A job whose servers can be stopped: what run_server does (join, publish
// the placement, serve until the workers finish), except that a server told
// to stop goes away without leaving, as a crashed one does.
class StoppableJob {
 public:
  static constexpr int kServers = 2;

  StoppableJob() {
    comm::CoordinatorOptions o{.num_workers = kWorkers, .num_servers = kServers, .heartbeat_interval = 200ms,
                               .heartbeat_timeout = 3000ms};
    o.security.secret = "failover-test-secret";
    coordinator_ = std::make_unique<comm::Coordinator>(o);
    const std::string ep = coordinator_->endpoint();  // tcp://127.0.0.1:PORT
    env_.coordinator_host = "127.0.0.1";
    env_.coordinator_port = std::stoi(ep.substr(ep.rfind(':') + 1));
    env_.world_size = kWorkers;
    env_.num_servers = kServers;
    env_.secret = "failover-test-secret";
    env_.source = "LOOM";
    for (int s = 0; s < kServers; ++s) {
      threads_.emplace_back([this, s] {
        try {
          serve(s);
        } catch (const std::exception& e) {
          ADD_FAILURE() << "server " << s << ": " << e.what();
        }
      });
    }
  }
  ~StoppableJob() {
    for (auto& t : threads_) t.join();
  }

  // Returns once server `s` is gone.
  void stop_server(int s) {
    stop_[s] = true;
    while (!gone_[s]) std::this_thread::sleep_for(1ms);
  }
  comm::JobEnv worker_env(int rank) const {
    comm::JobEnv env = env_;
    env.role = "worker";
    env.rank = rank;
    return env;
  }
  std::vector<std::string> log() const {
    std::lock_guard lock(log_mu_);
    return log_;
  }

 private:
  void serve(int s) {
    comm::JobEnv env = env_;
    env.role = "server";
    env.rank = s;
    const PlacementOptions placement{.num_servers = kServers, .replicas = 1, .split_bound = 1000};
    std::optional<KVServer> server;
    comm::JoinedJob job = comm::join_job(env, {.role = "server", .timeout = 30s, .data_endpoint = [&] {
      ServerOptions o{.num_workers = kWorkers, .placement = placement, .security = env.security()};
      o.log = [this](core::LogLevel, std::string_view line) {
        std::lock_guard lock(log_mu_);
        log_.emplace_back(line);
      };
      server.emplace(o);
      return server->endpoint();
    }});
    comm::CoordinatorClient& client = *job.client;
    const int64_t slice_elements = slice_elements_for(job.membership.num_hosts);
    server->set_slice_elements(slice_elements);
    if (job.membership.rank == 0) {
      client.set(comm::rendezvous::kPsConfig,
                 encode_config({.replicas = 1, .split_bound = placement.split_bound, .slice_elements = slice_elements}),
                 30s);
    }
    const bool sync = io::parse_mode(client.get(comm::rendezvous::kPsType, 30s)) == io::Mode::DistSync;
    server->set_role(job.membership.rank, sync);
    server->connect_servers(job.membership.endpoints("server"));
    client.on_peer_lost([&server](const comm::LostPeer& p) {
      if (p.role == "server") server->server_lost(p.rank);
    });
    server->start();
    while (!stop_[s]) {
      try {
        client.get(comm::rendezvous::kPsFinished, 20ms);
        break;
      } catch (const TimeoutError&) {
      }
    }
    server->stop();
    if (!stop_[s]) client.leave();
    job.client.reset();  // without leave(): the others hear that this server is lost
    gone_[s] = true;
  }

  std::unique_ptr<comm::Coordinator> coordinator_;
  comm::JobEnv env_;
  std::atomic<bool> stop_[kServers] = {false, false};
  std::atomic<bool> gone_[kServers] = {false, false};
  mutable std::mutex log_mu_;
  std::vector<std::string> log_;
  std::vector<std::thread> threads_;
};

// As tests/ps/kv_counter.cc: every step each worker pushes -1 under SGD with
// lr 1 to a key on server 0, a key split over both servers and four rows of
// a table split over both (row-sparse), so each acknowledged push adds 1.
TEST(FailoverJob, AServerStoppedWhileTheWorkersTrainLosesNoAcknowledgedPush) {
  constexpr int kSteps = 100;
  StoppableJob job;
  std::atomic<int> steps_done{0}, finished{0};
  std::vector<std::thread> workers;
  for (int r = 0; r < kWorkers; ++r) {
    workers.emplace_back([&, r] {
      try {
        auto kv = join_kvstore(job.worker_env(r), io::Mode::DistSync, {.timeout = 30s});
        const std::vector<int64_t> keys = {0, 1};
        kv->init(keys, std::vector<core::Tensor>{ops::zeros({4}), ops::zeros({5000})});
        kv->set_optimizer({.rule = optim::Rule::Sgd, .lr = 1.0});
        kv->init(2, ops::zeros({40000, 4}));
        const std::vector<core::Tensor> grads = {ops::full({4}, -1.0), ops::full({5000}, -1.0)};
        const core::Tensor rows = core::Tensor::from_vector<int64_t>({0, 7, 20000, 39999}, {4});
        int acked = 0;
        for (int t = 1; t <= kSteps; ++t) {
          kv->push(keys, grads);  // returns once the servers (and their backups) hold the update
          kv->row_sparse_push(2, rows, ops::full({4, 4}, -1.0));
          ++acked;
          ++steps_done;
          std::this_thread::sleep_for(5ms);
        }
        kv->barrier();
        std::vector<core::Tensor> outs = {ops::zeros({4}), ops::zeros({5000})};
        kv->pull(keys, outs);
        core::Tensor pulled_rows = ops::zeros({4, 4});
        kv->row_sparse_pull(2, pulled_rows, rows);
        outs.push_back(pulled_rows);
        const float expected = static_cast<float>(acked * kWorkers);
        int wrong = 0;
        for (const auto& o : outs) {
          for (float v : o.to_vector<float>()) wrong += v != expected;
        }
        EXPECT_EQ(wrong, 0) << "worker " << r << ": values other than " << expected << " acknowledged pushes";
        kv->close();
      } catch (const std::exception& e) {
        ADD_FAILURE() << "worker " << r << ": " << e.what();
      }
      ++finished;
    });
  }
  // Mid-run: server 0 (a primary of every key) goes away.
  while (steps_done < kSteps * kWorkers / 4 && finished < kWorkers) std::this_thread::sleep_for(1ms);
  job.stop_server(0);
  const int before = steps_done;
  for (auto& t : workers) t.join();
  EXPECT_LT(before, kSteps * kWorkers) << "the workers were done before server 0 went";
  bool took_over = false;
  for (const auto& line : job.log()) {
    took_over = took_over || line == "server 1: server 0 lost; taking over its slices where this server is next";
  }
  EXPECT_TRUE(took_over) << "server 1 never heard that server 0 was lost";
}

}  // namespace
}  // namespace loom::ps
