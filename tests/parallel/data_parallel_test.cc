// DataParallel with ranks as threads over the in-process transport: summed
// gradients equal one process's gradients on the whole batch; deterministic
// mode is bitwise identical for any number of ranks; buckets, accumulation
// without sync, and errors.
#include <gtest/gtest.h>

#include <thread>

#include "loom/autograd/engine.h"
#include "loom/comm/transport/inproc_transport.h"
#include "loom/nn/nn.h"
#include "loom/ops/ops.h"
#include "loom/parallel/data_parallel.h"

namespace loom {
namespace {

using core::Tensor;

std::shared_ptr<nn::Sequential> make_model() {
  return std::make_shared<nn::Sequential>(nn::Conv2d({.in = 1, .out = 4, .kernel = 3, .padding = 1, .seed = 1}),
                                          nn::ReLU(), nn::Flatten(), nn::Linear({.in = 4 * 6 * 6, .out = 16, .seed = 2}),
                                          nn::Tanh(), nn::Linear({.in = 16, .out = 3, .seed = 3}));
}

struct Data {
  Tensor x, y;
  Data() {
    core::Generator g(5);
    x = ops::randn({24, 1, 6, 6}, g);
    y = ops::to_dtype(ops::mul(ops::rand({24}, g), 3.0), core::DType::I64);
  }
};

// Gradients (by parameter name) after one step on `world` ranks.
std::vector<std::vector<float>> run(int world, bool deterministic, size_t bucket_bytes = 2048) {
  Data data;
  comm::InProcHub hub(world);
  std::vector<std::vector<std::vector<float>>> grads(world);
  std::vector<std::thread> threads;
  std::vector<std::exception_ptr> errors(world);
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      try {
        auto model = make_model();
        if (r > 0) {  // different local weights: DataParallel must broadcast rank 0's
          core::Generator g(100 + r);
          model->reset_parameters(g);
        }
        comm::Communicator c = comm::make_communicator(hub.transport(r));
        c.timeout = std::chrono::milliseconds(10000);
        parallel::DataParallel dp(*model, c, {.bucket_bytes = bucket_bytes, .first_bucket_bytes = 512,
                                              .timeout = std::chrono::milliseconds(10000),
                                              .deterministic = deterministic});
        const int64_t b = data.x.size(0), begin = b * r / world, end = b * (r + 1) / world;
        Tensor x = ops::slice(data.x, 0, begin, end), y = ops::slice(data.y, 0, begin, end);
        if (deterministic) {
          for (int64_t i = 0; i < end - begin; ++i) {
            Tensor loss = ops::cross_entropy((*model)(ops::slice(x, 0, i, i + 1)), ops::slice(y, 0, i, i + 1),
                                             {.reduction = ops::Reduction::Sum});
            autograd::backward(ops::mul(loss, 1.0 / static_cast<double>(b)));
            dp.accumulate_fixed_point();
          }
        } else {
          Tensor loss = ops::cross_entropy((*model)(x), y);
          autograd::backward(ops::mul(loss, static_cast<double>(end - begin) / static_cast<double>(b)));
        }
        dp.finish_gradient_sync();
        for (auto& [name, p] : model->named_parameters()) grads[r].push_back(p.grad().to_vector<float>());
      } catch (...) {
        errors[r] = std::current_exception();
      }
    });
  }
  for (auto& t : threads) t.join();
  // The first rank's own error is the cause; the others usually just time out waiting for it.
  std::string what;
  for (int r = 0; r < world; ++r) {
    if (!errors[r]) continue;
    try {
      std::rethrow_exception(errors[r]);
    } catch (const std::exception& e) {
      what += format("rank {}: {}\n", r, e.what());
    }
  }
  if (!what.empty()) throw Error(what);
  for (int r = 1; r < world; ++r) EXPECT_EQ(grads[r], grads[0]) << "rank " << r << " disagrees with rank 0";
  return grads[0];
}

TEST(DataParallel, SummedGradientsEqualTheWholeBatch) {
  auto want = run(1, false);
  for (int world : {2, 3, 4}) {
    auto got = run(world, false);
    ASSERT_EQ(got.size(), want.size());
    for (size_t p = 0; p < want.size(); ++p) {
      float scale = 0;
      for (float v : want[p]) scale = std::max(scale, std::abs(v));
      for (size_t i = 0; i < want[p].size(); ++i) {
        EXPECT_NEAR(got[p][i], want[p][i], 1e-6f * std::max(scale, 1e-3f)) << "world " << world << " param " << p;
      }
    }
  }
}

TEST(DataParallel, DeterministicModeIsBitwiseEqualForAnyWorldSize) {
  auto want = run(1, true);
  for (int world : {2, 3, 4}) EXPECT_EQ(run(world, true), want) << "world " << world;
}

TEST(DataParallel, BucketsFollowReverseOrderAndSizes) {
  auto model = make_model();
  comm::InProcHub hub(1);
  comm::Communicator c = comm::make_communicator(hub.transport(0));
  parallel::DataParallel dp(*model, c, {.bucket_bytes = 4096, .first_bucket_bytes = 64});
  auto layout = dp.bucket_layout();
  ASSERT_GE(layout.size(), 2u);
  EXPECT_EQ(layout.front().front(), "5.bias");  // the last layer's parameters come first
  EXPECT_EQ(layout.back().back(), "0.weight");
  // .grad is a view into the bucket: backward writes into the buffer that is sent.
  auto params = model->named_parameters();
  EXPECT_TRUE(params.front().second.grad().defined());
}

TEST(DataParallel, NoSyncAccumulatesLocally) {
  // Two half-batches under no_sync + one synced pass equal the sum of three passes.
  Data data;
  auto model = make_model();
  comm::InProcHub hub(1);
  comm::Communicator c = comm::make_communicator(hub.transport(0));
  parallel::DataParallel dp(*model, c);
  for (int i = 0; i < 2; ++i) {
    auto guard = dp.no_sync();
    autograd::backward(ops::cross_entropy((*model)(data.x), data.y));
  }
  autograd::backward(ops::cross_entropy((*model)(data.x), data.y));
  dp.finish_gradient_sync();
  auto model2 = make_model();
  autograd::backward(ops::mul(ops::cross_entropy((*model2)(data.x), data.y), 3.0));
  auto a = model->named_parameters(), b = model2->named_parameters();
  for (size_t p = 0; p < a.size(); ++p) {
    auto ga = a[p].second.grad().to_vector<float>(), gb = b[p].second.grad().to_vector<float>();
    for (size_t i = 0; i < ga.size(); ++i) EXPECT_NEAR(ga[i], gb[i], 1e-5f) << a[p].first;
  }
}

TEST(DataParallel, LostPeerSurfacesFromFinish) {
  comm::InProcHub hub(2);
  auto model = make_model();
  comm::Communicator c = comm::make_communicator(hub.transport(0));
  std::thread peer([&] {
    // Rank 1 broadcasts with rank 0, then dies before the gradient all-reduce.
    auto m1 = make_model();
    comm::Communicator c1 = comm::make_communicator(hub.transport(1));
    parallel::DataParallel dp1(*m1, c1);
  });
  parallel::DataParallel dp(*model, c, {.timeout = std::chrono::milliseconds(5000)});
  peer.join();
  c.transport->fail_peer(1, "worker 1 on host test lost: killed");
  Data data;
  autograd::backward(ops::cross_entropy((*model)(data.x), data.y));
  EXPECT_THROW(dp.finish_gradient_sync(), PeerLostError);
}

}  // namespace
}  // namespace loom
