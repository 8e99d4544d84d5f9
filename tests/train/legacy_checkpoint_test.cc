// Old parameter-server checkpoints ("servers.key<k>") renamed into optim's
// one layout, and every malformed one refused with IoError (the file is
// input: no other exception, no crash). The end-to-end resume of such a
// checkpoint is in tests/parallel/parameter_server_strategy_test.cc.
#include "loom/train/legacy_checkpoint.h"

#include <gtest/gtest.h>

#include <string>

#include "loom/core/error.h"
#include "loom/ops/ops.h"

namespace loom::train {
namespace {

using core::Tensor;

const optim::StateLayout kLayout{.rule = "sgd", .slots = {"momentum_buffer"}, .params = {"w", "b"},
                                 .shapes = {{2, 3}, {3}}};

// The old layout: w updated 5 times with its momentum, b never updated.
io::SafetensorsFile old_file() {
  io::SafetensorsFile f;
  f.tensors = {{"model.w", ops::zeros({2, 3})},
               {"model.b", ops::zeros({3})},
               {"optim.step", Tensor::scalar<int64_t>(0)},
               {"optim.lr", Tensor::scalar<double>(0.1)},
               {"servers.key0", ops::full({2, 3}, 1.5)},
               {"servers.key0.state0", ops::full({2, 3}, 0.25)},
               {"servers.key1", ops::full({3}, 2.5)}};
  f.metadata = {{"loom.step", "5"},          {"servers.format", "loom-kvstore-state-v1"},
                {"servers.key0.updates", "5"}, {"servers.key0.slots", "1"},
                {"servers.key1.updates", "0"}, {"servers.key1.slots", "0"}};
  return f;
}

TEST(LegacyCheckpoint, ServerKeysBecomeTheParametersState) {
  io::SafetensorsFile f = old_file();
  ASSERT_TRUE(upgrade_legacy_server_state(f, kLayout, "old.safetensors"));
  EXPECT_EQ(f.at("model.w").to_vector<float>(), std::vector<float>(6, 1.5f));  // the servers' weights
  EXPECT_EQ(f.at("model.b").to_vector<float>(), std::vector<float>(3, 2.5f));
  EXPECT_EQ(f.at("optim.w.momentum_buffer").to_vector<float>(), std::vector<float>(6, 0.25f));
  EXPECT_EQ(f.at("optim.w.step").item<int64_t>(), 5);
  EXPECT_EQ(f.at("optim.step").item<int64_t>(), 5);  // the run's steps, not the idle local optimizer's 0
  EXPECT_EQ(f.find("optim.b.step"), nullptr);        // never updated: no state
  for (const auto& [name, t] : f.tensors) EXPECT_FALSE(name.starts_with("servers.")) << name;
  for (const auto& [key, v] : f.metadata) EXPECT_FALSE(key.starts_with("servers.")) << key;
  // What it gives is today's layout: the optimizer reads it.
  optim::NamedTensors optim;
  for (const auto& [name, t] : f.tensors) {
    if (name.starts_with("optim.")) optim.emplace_back(name.substr(6), t);
  }
  const optim::OptimizerState s = optim::from_state_dict(kLayout, optim);
  EXPECT_EQ(s.params[0].step, 5);
  EXPECT_EQ(s.params[1].step, 0);

  io::SafetensorsFile today = f;
  EXPECT_FALSE(upgrade_legacy_server_state(today, kLayout, "new.safetensors"));  // nothing to do
  EXPECT_EQ(today.tensors.size(), f.tensors.size());
}

TEST(LegacyCheckpoint, MalformedOldStateIsAnIoError) {
  auto refused = [](const std::string& what, auto change) {
    io::SafetensorsFile f = old_file();
    change(f);
    EXPECT_THROW(upgrade_legacy_server_state(f, kLayout, "old.safetensors"), IoError) << what;
  };
  refused("another format", [](io::SafetensorsFile& f) { f.metadata["servers.format"] = "v9"; });
  for (const char* name : {"servers.ab", "servers.key", "servers.keyx", "servers.key0.state", "servers.key0.statex",
                           "servers.key-1", "servers.key.state0", "servers.key0.state0.x",
                           "servers.key99999999999999999999"}) {
    refused(name, [&](io::SafetensorsFile& f) { f.tensors.emplace_back(name, ops::zeros({1})); });
  }
  refused("a key past the parameters",
          [](io::SafetensorsFile& f) { f.tensors.emplace_back("servers.key2", ops::zeros({1})); });
  refused("no value of a key", [](io::SafetensorsFile& f) { f.tensors.erase(f.tensors.begin() + 6); });
  refused("no update count", [](io::SafetensorsFile& f) { f.metadata.erase("servers.key0.updates"); });
  refused("a bad update count", [](io::SafetensorsFile& f) { f.metadata["servers.key0.updates"] = "-3"; });
  refused("slots miscounted", [](io::SafetensorsFile& f) { f.metadata["servers.key0.slots"] = "2"; });
  refused("a slot past the count", [](io::SafetensorsFile& f) { f.tensors[5].first = "servers.key0.state3"; });
  refused("another rule's slots", [](io::SafetensorsFile& f) {
    f.tensors.emplace_back("servers.key0.state1", ops::zeros({2, 3}));
    f.metadata["servers.key0.slots"] = "2";
  });
  refused("no optim.step", [](io::SafetensorsFile& f) { f.tensors.erase(f.tensors.begin() + 2); });
  refused("no model tensor", [](io::SafetensorsFile& f) { f.tensors.erase(f.tensors.begin()); });
}

}  // namespace
}  // namespace loom::train
