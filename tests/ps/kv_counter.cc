// A worker for the replication test (tests/ps/ps_failover.sh): every step
// pushes a gradient of -1 to two keys under SGD with lr 1, and row-sparse to
// four rows of a third (rows in every slice of it), so each acknowledged push
// adds exactly 1 to every element (the sparse key: to every pushed row). A server is killed
// mid-run; at the end the value must equal the number of acknowledged pushes
// of all workers: none lost, none applied twice.
//
//   loom launch --workers 2 --servers 2 --replicas 1 --split-bound 1000 -- loom_kv_counter dist_sync 200
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include "loom/core/error.h"
#include "loom/ops/creation.h"
#include "loom/ps/kvstore.h"

int main(int argc, char** argv) {
  using namespace loom;
  if (argc != 3) {
    std::fprintf(stderr, "usage: loom_kv_counter TYPE STEPS\n");
    return 2;
  }
  const std::string type = argv[1];
  const int steps = std::stoi(argv[2]);
  try {
    const std::optional<io::Mode> mode = io::parse_mode(type);
    LOOM_CHECK(mode.has_value(), "loom_kv_counter: unknown type '{}'", type);
    auto kv = ps::KVStore::create(*mode);
    const std::vector<int64_t> keys = {0, 1};
    const std::vector<core::Tensor> init = {ops::zeros({4}), ops::zeros({5000})};  // key 1 is split over both servers
    kv->init(keys, init);
    kv->set_optimizer({.rule = optim::Rule::Sgd, .lr = 1.0});
    const std::vector<core::Tensor> grads = {ops::full({4}, -1.0), ops::full({5000}, -1.0)};
    // Key 2: 40000 x 4, three slices over the two servers; rows in each.
    const int64_t table_rows = 40000;
    kv->init(2, ops::zeros({table_rows, 4}));
    const core::Tensor pushed = core::Tensor::from_vector<int64_t>({0, 7, 20000, 39999}, {4});
    const core::Tensor sparse_grad = ops::full({4, 4}, -1.0);
    int64_t acked = 0;
    for (int t = 1; t <= steps; ++t) {
      kv->push(keys, grads);  // returns once the servers (and their backups) hold the update
      kv->row_sparse_push(2, pushed, sparse_grad);
      ++acked;
      if (t % 25 == 0) std::printf("worker %d: step %d\n", kv->rank(), t), std::fflush(stdout);
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    kv->barrier();
    std::vector<core::Tensor> outs = {ops::zeros({4}), ops::zeros({5000}), ops::zeros({4, 4})};
    kv->pull(keys, std::span(outs).first(2));
    kv->row_sparse_pull(2, outs[2], core::Tensor::from_vector<int64_t>({39999, 0, 20000, 7}, {4}));
    core::Tensor untouched = ops::full({3, 4}, -1.0);
    kv->row_sparse_pull(2, untouched, core::Tensor::from_vector<int64_t>({1, 19999, 39998}, {3}));
    int64_t wrong = 0;
    for (float v : untouched.to_vector<float>()) wrong += v != 0.0f;
    const double expected = static_cast<double>(acked) * kv->num_workers();
    double seen = 0;
    for (const auto& o : outs) {
      for (float v : o.to_vector<float>()) {
        wrong += v != expected;
        seen = v;
      }
    }
    std::printf("worker %d: %lld acknowledged pushes per worker, value %.0f, expected %.0f: %s\n", kv->rank(),
                static_cast<long long>(acked), seen, expected, wrong == 0 ? "OK" : "MISMATCH");
    kv->close();
    return wrong == 0 ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "loom_kv_counter: %s\n", e.what());
    return 1;
  }
}
