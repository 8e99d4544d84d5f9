// The "local" KVStore and the Shard logic every server runs: MXNet's push/pull
// semantics, the server-side update equal to loom/optim's, sparse rows, state.
#include <gtest/gtest.h>

#include <filesystem>

#include "loom/core/error.h"
#include "loom/ops/creation.h"
#include "loom/optim/optimizer.h"
#include "loom/ps/kvstore.h"
#include "loom/ps/shard.h"

namespace loom::ps {
namespace {

using core::Tensor;

Tensor values(std::vector<float> v, core::Shape shape) { return Tensor::from_vector<float>(v, shape); }

TEST(LocalKVStore, PushReplacesWithoutOptimizerAndPullCopies) {
  auto kv = KVStore::create(io::Mode::Local);
  EXPECT_EQ(kv->type(), io::Mode::Local);
  kv->init(3, values({1, 2, 3, 4}, {2, 2}));
  Tensor out = ops::zeros({2, 2});
  kv->pull(3, out);
  EXPECT_EQ(out.to_vector<float>(), (std::vector<float>{1, 2, 3, 4}));
  kv->push(3, values({5, 6, 7, 8}, {2, 2}));
  kv->pull(3, out);
  EXPECT_EQ(out.to_vector<float>(), (std::vector<float>{5, 6, 7, 8}));
}

TEST(LocalKVStore, ServerSideSgdMatchesTheLocalOptimizer) {
  auto kv = KVStore::create(io::Mode::Local);
  Tensor w0 = Tensor::from_vector<float>({0.5f, -1.0f, 2.0f}, {3});
  kv->init(0, w0);
  kv->set_optimizer({.rule = optim::Rule::Sgd, .lr = 0.1, .momentum = 0.9, .weight_decay = 0.01});
  Tensor w = Tensor::from_vector<float>({0.5f, -1.0f, 2.0f}, {3});
  w.set_requires_grad(true);
  auto opt = optim::sgd(std::vector<Tensor>{w}, {.lr = 0.1, .momentum = 0.9, .weight_decay = 0.01});
  Tensor pulled = ops::zeros({3});
  for (int step = 0; step < 5; ++step) {
    Tensor g = Tensor::from_vector<float>({0.1f * step, -0.2f, 0.3f}, {3});
    kv->push(0, g);
    kv->pull(0, pulled);
    w.set_grad(Tensor::from_vector<float>(g.to_vector<float>(), {3}));
    opt.step();
  }
  EXPECT_EQ(pulled.to_vector<float>(), w.to_vector<float>());  // the same rule, the same bits
}

TEST(LocalKVStore, RowSparsePushUpdatesOnlyTouchedRows) {
  auto kv = KVStore::create(io::Mode::Local);
  kv->init(1, ops::ones({6, 2}));
  kv->set_optimizer({.rule = optim::Rule::Sgd, .lr = 1.0});
  kv->row_sparse_push(1, Tensor::from_vector<int64_t>({1, 4}, {2}), ops::full({2, 2}, 0.5));
  Tensor rows = ops::zeros({3, 2});
  kv->row_sparse_pull(1, rows, Tensor::from_vector<int64_t>({4, 0, 1}, {3}));
  EXPECT_EQ(rows.to_vector<float>(), (std::vector<float>{0.5f, 0.5f, 1, 1, 0.5f, 0.5f}));
  EXPECT_THROW(kv->row_sparse_push(1, Tensor::from_vector<int64_t>({4, 1}, {2}), ops::ones({2, 2})), IndexError);
  EXPECT_THROW(kv->row_sparse_pull(1, ops::zeros({1, 2}), Tensor::from_vector<int64_t>({6}, {1})), IndexError);
}

TEST(LocalKVStore, BadRequestsNameTheProblem) {
  auto kv = KVStore::create(io::Mode::Local);
  kv->init(0, ops::zeros({4}));
  try {
    kv->push(9, ops::zeros({4}));
    FAIL();
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("key 9"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("not initialized"), std::string::npos) << e.what();
  }
  EXPECT_THROW(kv->push(0, ops::zeros({5})), ShapeError);
  EXPECT_THROW(kv->push(0, ops::zeros({4}, core::DType::F64)), TypeError);
  EXPECT_THROW(kv->init(2, ops::zeros({4}, core::DType::I64)), TypeError);
  EXPECT_THROW(kv->init(0, ops::zeros({4})), ValueError);  // twice
  EXPECT_THROW(KVStore::create(io::Mode::Allreduce), ConfigError);  // not a store type
  EXPECT_THROW(kv->set_optimizer({.lr = -1.0}), ValueError);
}

TEST(LocalKVStore, OptimizerStateSavesAndLoads) {
  const auto path = std::filesystem::temp_directory_path() / "loom_kv_state_test.safetensors";
  auto run = [](KVStore& kv, int steps) {
    for (int i = 0; i < steps; ++i) kv.push(0, ops::full({3}, 0.1 * (i + 1)));
  };
  auto a = KVStore::create(io::Mode::Local);
  a->init(0, ops::ones({3}));
  a->set_optimizer({.rule = optim::Rule::Adam, .lr = 0.01});
  run(*a, 3);
  a->save_optimizer_states(path);
  run(*a, 2);
  Tensor wa = ops::zeros({3});
  a->pull(0, wa);

  auto b = KVStore::create(io::Mode::Local);
  b->init(0, ops::zeros({3}));
  b->set_optimizer({.rule = optim::Rule::Adam, .lr = 0.01});
  b->load_optimizer_states(path);
  run(*b, 2);  // continues as if never stopped (Adam's moments and step count restored)
  Tensor wb = ops::zeros({3});
  b->pull(0, wb);
  EXPECT_EQ(wa.to_vector<float>(), wb.to_vector<float>());
  std::filesystem::remove(path);
}

TEST(LocalKVStore, KeyStatesAreTheShardsStateTyped) {
  auto a = KVStore::create(io::Mode::Local);
  a->init(std::vector<int64_t>{0, 1}, std::vector<Tensor>{ops::ones({3}), ops::ones({2, 2})});
  a->set_optimizer({.rule = optim::Rule::Sgd, .lr = 0.1, .momentum = 0.9});
  a->push(0, ops::full({3}, 0.5));
  const std::vector<int64_t> keys = {0, 1};
  auto states = a->key_states(keys);
  ASSERT_EQ(states.size(), 2u);
  EXPECT_EQ(states[0].updates, 1);
  ASSERT_EQ(states[0].slots.size(), 1u);                                   // momentum_buffer
  EXPECT_EQ(states[0].slots[0].to_vector<float>(), std::vector<float>(3, 0.5f));  // the first gradient
  EXPECT_EQ(states[1].updates, 0);
  EXPECT_TRUE(states[1].slots.empty());  // never updated
  const std::vector<int64_t> unknown = {7};
  EXPECT_THROW(a->key_states(unknown), ValueError);

  auto b = KVStore::create(io::Mode::Local);
  b->init(std::vector<int64_t>{0, 1}, std::vector<Tensor>{ops::zeros({3}), ops::zeros({2, 2})});
  b->set_optimizer({.rule = optim::Rule::Sgd, .lr = 0.1, .momentum = 0.9});
  b->restore_key_states(states);
  a->push(0, ops::full({3}, 0.25));
  b->push(0, ops::full({3}, 0.25));
  Tensor wa = ops::zeros({3}), wb = ops::zeros({3});
  a->pull(0, wa);
  b->pull(0, wb);
  EXPECT_EQ(wa.to_vector<float>(), wb.to_vector<float>());
}

TEST(Shard, SyncRoundMergesInRankOrderAndIgnoresReplays) {
  Shard s({.key = 0, .dtype = core::DType::F32, .key_shape = {2}, .num_rows = 2, .num_workers = 3, .sync = true});
  const std::vector<float> z = {0, 0};
  s.init(std::as_bytes(std::span(z)));
  std::vector<std::vector<float>> pushes = {{1e8f, 1}, {1, 2}, {-1e8f, 3}};
  auto bytes = [&](int w) { return Payload::copy_of(std::as_bytes(std::span(pushes[static_cast<size_t>(w)]))); };
  EXPECT_EQ(s.push(2, 1, {.data = bytes(2)}), PushResult::Pending);
  EXPECT_EQ(s.push(0, 1, {.data = bytes(0)}), PushResult::Pending);
  EXPECT_EQ(s.push(1, 1, {.data = bytes(1)}), PushResult::Applied);
  std::vector<float> w(2);
  std::memcpy(w.data(), s.weights().data(), 8);
  EXPECT_EQ(w[0], (1e8f + 1.0f) + -1e8f);  // rank order, not arrival order
  EXPECT_EQ(w[1], 6.0f);
  EXPECT_EQ(s.push(1, 1, {.data = bytes(1)}), PushResult::Duplicate);  // a retry after failover
  EXPECT_THROW(s.push(0, 3, {.data = bytes(0)}), ValueError);          // a round ahead
}

}  // namespace
}  // namespace loom::ps
