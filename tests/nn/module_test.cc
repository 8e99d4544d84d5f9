// Module: registration, traversal names, modes, state_dict and its errors.
#include <gtest/gtest.h>

#include "loom/autograd/engine.h"
#include "loom/nn/nn.h"
#include "loom/ops/ops.h"

namespace loom::nn {
namespace {

using core::DType;
using core::Tensor;

Sequential make_cnn(uint64_t seed = 0) {
  return Sequential(Conv2d({.in = 1, .out = 8, .kernel = 5, .padding = 2, .seed = seed}), BatchNorm2d({.num_features = 8}),
                    ReLU(), MaxPool2d({.kernel = 2}), Conv2d({.in = 8, .out = 16, .kernel = 3, .seed = seed + 1}),
                    ReLU(), Flatten(), Dropout({.p = 0.5}), Linear({.in = 16 * 12 * 12, .out = 10, .seed = seed + 2}));
}

std::vector<std::string> names_of(const NamedTensors& list) {
  std::vector<std::string> out;
  for (const auto& [name, t] : list) out.push_back(name);
  return out;
}

TEST(Module, CnnParameterNamesAndCounts) {
  Sequential net = make_cnn();
  const NamedTensors params = net.named_parameters();
  EXPECT_EQ(names_of(params), (std::vector<std::string>{"0.weight", "0.bias", "1.weight", "1.bias", "4.weight", "4.bias",
                                                        "8.weight", "8.bias"}));
  int64_t count = 0;
  for (const auto& [name, p] : params) {
    EXPECT_TRUE(p.requires_grad()) << name;
    EXPECT_TRUE(p.is_leaf()) << name;
    count += p.numel();
  }
  EXPECT_EQ(count, (8 * 25 + 8) + (8 + 8) + (16 * 8 * 9 + 16) + (16 * 144 * 10 + 10));
  EXPECT_EQ(net.parameters().size(), 8u);
  EXPECT_EQ(names_of(net.named_buffers()),
            (std::vector<std::string>{"1.running_mean", "1.running_var", "1.num_batches_tracked"}));
  EXPECT_EQ(net.size(), 9u);
  EXPECT_EQ(net.at<Conv2d>(4).weight().shape(), (core::Shape{16, 8, 3, 3}));
  EXPECT_THROW(net.at<Linear>(0), TypeError);
  EXPECT_THROW(net[9], IndexError);

  core::Generator gen(3);
  Tensor y = net(ops::randn({2, 1, 28, 28}, gen));
  EXPECT_EQ(y.shape(), (core::Shape{2, 10}));
}

TEST(Module, StateDictOrderMatchesPyTorch) {
  Sequential net = make_cnn();
  EXPECT_EQ(net.state_dict().keys(),
            (std::vector<std::string>{"0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var",
                                      "1.num_batches_tracked", "4.weight", "4.bias", "8.weight", "8.bias"}));
  // The entries share storage but are detached.
  const StateDict sd = net.state_dict();
  EXPECT_FALSE(sd.at("0.weight").requires_grad());
  EXPECT_EQ(sd.at("0.weight").data_ptr(), net.at<Conv2d>(0).weight().data_ptr());
}

TEST(Module, NestedDottedNames) {
  struct Block : Module {
    std::shared_ptr<Sequential> features =
        register_module("features", Sequential(Conv2d({.in = 3, .out = 4, .kernel = 3}), ReLU()));
    std::shared_ptr<Linear> head = register_module("head", Linear({.in = 4, .out = 2}));
    Tensor scale = register_parameter("scale", ops::ones({1}));
    Tensor forward(const Tensor& x) override { return (*head)(x); }
  };
  Block b;
  EXPECT_EQ(names_of(b.named_parameters()),
            (std::vector<std::string>{"scale", "features.0.weight", "features.0.bias", "head.weight", "head.bias"}));
  EXPECT_EQ(names_of(b.named_parameters(/*recurse=*/false)), (std::vector<std::string>{"scale"}));
  auto modules = b.named_modules();
  ASSERT_EQ(modules.size(), 5u);
  EXPECT_EQ(modules[0].first, "");
  EXPECT_EQ(modules[2].first, "features.0");
  EXPECT_EQ(modules[4].first, "head");
  EXPECT_NE(b.tree_string().find("(features): Sequential"), std::string::npos);
  EXPECT_NE(b.tree_string().find("(head): Linear(4 -> 2)"), std::string::npos);
}

TEST(Module, RegistrationErrors) {
  Linear fc({.in = 2, .out = 3});
  EXPECT_THROW(fc.register_parameter("weight", ops::zeros({1})), ValueError);  // duplicate
  EXPECT_THROW(fc.register_buffer("a.b", ops::zeros({1})), ValueError);       // dot
  EXPECT_THROW(fc.register_parameter("", ops::zeros({1})), ValueError);       // empty
  EXPECT_THROW(fc.register_parameter("idx", ops::zeros({1}, DType::I64)), TypeError);
  EXPECT_THROW(fc.register_module("bias", ReLU()), ValueError);
  Tensor w = ops::ones({2});
  w.set_requires_grad(true);
  EXPECT_THROW(fc.register_parameter("non_leaf", ops::mul(w, 2.0)), ValueError);
}

TEST(Module, SharedLayerIsListedOnce) {
  auto shared = std::make_shared<Linear>(LinearOptions{.in = 4, .out = 4});
  Sequential net(shared, ReLU(), shared);
  EXPECT_EQ(names_of(net.named_parameters()), (std::vector<std::string>{"0.weight", "0.bias"}));
  // The state dict keeps both names, as PyTorch's does.
  EXPECT_EQ(net.state_dict().size(), 4u);
  EXPECT_NO_THROW(net.load_state_dict(net.state_dict()));
}

TEST(Module, StateDictRoundTrip) {
  Sequential a = make_cnn(10), b = make_cnn(20);
  // Give a's BatchNorm some running statistics.
  core::Generator gen(5);
  a(ops::randn({4, 1, 28, 28}, gen));
  ASSERT_NE(a.at<Linear>(8).weight().to_vector<float>(), b.at<Linear>(8).weight().to_vector<float>());

  const std::vector<Tensor> b_params_before = b.parameters();
  b.load_state_dict(a.state_dict());
  const StateDict sa = a.state_dict(), sb = b.state_dict();
  ASSERT_EQ(sa.keys(), sb.keys());
  for (const auto& [name, t] : sa) {
    if (t.dtype() == DType::I64) {
      EXPECT_EQ(t.item<int64_t>(), sb.at(name).item<int64_t>()) << name;
    } else {
      EXPECT_EQ(t.to_vector<float>(), sb.at(name).to_vector<float>()) << name;
    }
  }
  EXPECT_EQ(sb.at("1.num_batches_tracked").item<int64_t>(), 1);
  // Loaded in place: the parameter tensors an optimizer holds are unchanged objects.
  const std::vector<Tensor> b_params_after = b.parameters();
  for (size_t i = 0; i < b_params_before.size(); ++i) {
    EXPECT_TRUE(b_params_before[i].is_same(b_params_after[i]));
    EXPECT_TRUE(b_params_after[i].requires_grad());
  }
  // Same state, same function (eval mode, so Dropout and BatchNorm are deterministic).
  a.eval();
  b.eval();
  Tensor x = ops::randn({3, 1, 28, 28}, gen);
  EXPECT_EQ(a(x).to_vector<float>(), b(x).to_vector<float>());
}

TEST(Module, LoadStateDictConvertsDtype) {
  Linear f32({.in = 3, .out = 2});
  Linear f64({.in = 3, .out = 2, .dtype = DType::F64, .seed = 9});
  f64.load_state_dict(f32.state_dict());
  EXPECT_EQ(f64.weight().dtype(), DType::F64);
  EXPECT_EQ(f64.weight().to_vector<float>(), f32.weight().to_vector<float>());
}

template <class E>
std::string message_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const E& e) {
    return e.what();
  }
  ADD_FAILURE() << "no exception of the expected type";
  return "";
}

TEST(Module, LoadStateDictMissingKey) {
  Sequential net = make_cnn();
  const std::vector<float> before = net.at<Conv2d>(0).weight().to_vector<float>();
  Sequential other = make_cnn(77);
  StateDict sd_other = other.state_dict();
  sd_other.erase("4.bias");
  const std::string msg = message_of<ValueError>([&] { net.load_state_dict(sd_other); });
  EXPECT_NE(msg.find("missing key '4.bias'"), std::string::npos) << msg;
  // Nothing was copied when the load failed.
  EXPECT_EQ(net.at<Conv2d>(0).weight().to_vector<float>(), before);
  // Non-strict loads the rest and reports the key.
  LoadResult r = net.load_state_dict(sd_other, /*strict=*/false);
  EXPECT_EQ(r.missing_keys, (std::vector<std::string>{"4.bias"}));
  EXPECT_TRUE(r.unexpected_keys.empty());
  EXPECT_EQ(net.at<Conv2d>(0).weight().to_vector<float>(), other.at<Conv2d>(0).weight().to_vector<float>());
}

TEST(Module, LoadStateDictUnexpectedKey) {
  Linear fc({.in = 3, .out = 2});
  StateDict sd = fc.state_dict();
  sd.insert("extra.weight", ops::zeros({2}));
  const std::string msg = message_of<ValueError>([&] { fc.load_state_dict(sd); });
  EXPECT_NE(msg.find("unexpected key 'extra.weight'"), std::string::npos) << msg;
  LoadResult r = fc.load_state_dict(sd, /*strict=*/false);
  EXPECT_EQ(r.unexpected_keys, (std::vector<std::string>{"extra.weight"}));
}

TEST(Module, LoadStateDictShapeMismatch) {
  Linear fc({.in = 3, .out = 2});
  StateDict sd = fc.state_dict();
  sd.set("weight", ops::zeros({2, 4}));
  const std::string msg = message_of<ShapeError>([&] { fc.load_state_dict(sd); });
  EXPECT_NE(msg.find("'weight'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[2, 4]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[2, 3]"), std::string::npos) << msg;
  // A shape mismatch is an error even when not strict.
  EXPECT_THROW(fc.load_state_dict(sd, /*strict=*/false), ShapeError);
}

TEST(Module, TrainEvalIsRecursive) {
  Sequential net = make_cnn();
  EXPECT_TRUE(net.is_training());
  net.eval();
  for (auto& [name, m] : net.named_modules()) EXPECT_FALSE(m->is_training()) << name;
  net.train();
  for (auto& [name, m] : net.named_modules()) EXPECT_TRUE(m->is_training()) << name;
}

TEST(Module, ZeroGrad) {
  Linear fc({.in = 3, .out = 2});
  core::Generator gen(1);
  autograd::backward(ops::sum(fc(ops::randn({4, 3}, gen))));
  ASSERT_TRUE(fc.weight().grad().defined());
  const void* buffer = fc.weight().grad().data_ptr();
  fc.zero_grad();
  EXPECT_EQ(fc.weight().grad().data_ptr(), buffer);
  for (float g : fc.weight().grad().to_vector<float>()) EXPECT_EQ(g, 0.0f);
  fc.zero_grad(/*set_to_none=*/true);
  EXPECT_FALSE(fc.weight().grad().defined());
}

TEST(Module, SeedsAndResetParameters) {
  // Same seed, same weights; the seed is the only source of randomness.
  EXPECT_EQ(Linear({.in = 5, .out = 4, .seed = 3}).weight().to_vector<float>(),
            Linear({.in = 5, .out = 4, .seed = 3}).weight().to_vector<float>());
  EXPECT_NE(Linear({.in = 5, .out = 4, .seed = 3}).weight().to_vector<float>(),
            Linear({.in = 5, .out = 4, .seed = 4}).weight().to_vector<float>());
  // reset_parameters(gen) draws the whole model from one stream: equal-shaped layers differ.
  Sequential net(Linear({.in = 4, .out = 4}), Linear({.in = 4, .out = 4}));
  ASSERT_EQ(net.at<Linear>(0).weight().to_vector<float>(), net.at<Linear>(1).weight().to_vector<float>());
  core::Generator gen(42);
  net.reset_parameters(gen);
  EXPECT_NE(net.at<Linear>(0).weight().to_vector<float>(), net.at<Linear>(1).weight().to_vector<float>());
  Sequential again(Linear({.in = 4, .out = 4}), Linear({.in = 4, .out = 4}));
  core::Generator gen2(42);
  again.reset_parameters(gen2);
  EXPECT_EQ(net.at<Linear>(1).weight().to_vector<float>(), again.at<Linear>(1).weight().to_vector<float>());
}

TEST(StateDict, Basics) {
  StateDict sd{{"a", ops::zeros({1})}, {"b", ops::ones({2})}};
  EXPECT_THROW(sd.insert("a", ops::zeros({1})), ValueError);
  EXPECT_TRUE(sd.contains("b"));
  EXPECT_THROW(sd.at("c"), ValueError);
  EXPECT_TRUE(sd.erase("a"));
  EXPECT_FALSE(sd.erase("a"));
  EXPECT_EQ(sd.keys(), (std::vector<std::string>{"b"}));
  EXPECT_EQ(sd.at("b").numel(), 2);
}

}  // namespace
}  // namespace loom::nn
