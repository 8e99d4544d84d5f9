#include "loom/train/zoo.h"

#include "loom/autograd/engine.h"
#include "loom/nn/nn.h"
#include "loom/ops/ops.h"

namespace loom::train {
namespace {

using core::Shape;
using core::Tensor;

int64_t flat(const Shape& s) { return core::numel(s); }

// Two 3x3 convolutions with batch norm and a skip connection (1x1 conv when the shape changes).
class BasicBlock final : public nn::Module {
 public:
  BasicBlock(int64_t in, int64_t out, int64_t stride) {
    conv1_ = register_module("conv1", nn::Conv2d({.in = in, .out = out, .kernel = 3, .stride = stride, .padding = 1, .bias = false}));
    bn1_ = register_module("bn1", nn::BatchNorm2d({.num_features = out}));
    conv2_ = register_module("conv2", nn::Conv2d({.in = out, .out = out, .kernel = 3, .padding = 1, .bias = false}));
    bn2_ = register_module("bn2", nn::BatchNorm2d({.num_features = out}));
    if (stride != 1 || in != out) {
      down_ = register_module("downsample", nn::Sequential(nn::Conv2d({.in = in, .out = out, .kernel = 1, .stride = stride, .bias = false}),
                                                           nn::BatchNorm2d({.num_features = out})));
    }
  }
  Tensor forward(const Tensor& x) override {
    Tensor h = ops::relu((*bn1_)((*conv1_)(x)));
    h = (*bn2_)((*conv2_)(h));
    return ops::relu(ops::add(h, down_ ? (*down_)(x) : x));
  }
  std::string describe() const override { return "BasicBlock"; }

 private:
  std::shared_ptr<nn::Conv2d> conv1_, conv2_;
  std::shared_ptr<nn::BatchNorm2d> bn1_, bn2_;
  std::shared_ptr<nn::Sequential> down_;
};

template <class T>
T arg(const io::LayerSpec& spec, const std::string& key, T fallback, std::vector<std::string>& used) {
  used.push_back(key);
  auto it = spec.args.find(key);
  if (it == spec.args.end()) return fallback;
  if constexpr (std::is_same_v<T, double>) {
    if (auto* i = std::get_if<int64_t>(&it->second)) return static_cast<double>(*i);
  }
  if (auto* v = std::get_if<T>(&it->second)) return *v;
  throw ConfigError(format("{}: layer '{}': '{}' has the wrong type", spec.where, spec.type, key));
}

void reject_unused(const io::LayerSpec& spec, const std::vector<std::string>& used) {
  for (const auto& [k, v] : spec.args) {
    if (std::find(used.begin(), used.end(), k) != used.end()) continue;
    auto hint = io::closest_name(k, used);
    throw ConfigError(format("{}: layer '{}' has no option '{}'{}", spec.where, spec.type, k,
                             hint ? format(" (did you mean '{}'?)", *hint) : std::string()));
  }
}

// One layer from its spec; `shape` is the per-example shape flowing in.
std::shared_ptr<nn::Module> make_layer(const io::LayerSpec& s, const Shape& shape, uint64_t seed) {
  std::vector<std::string> used;
  std::shared_ptr<nn::Module> m;
  const std::string& t = s.type;
  auto need_chw = [&] {
    if (shape.size() != 3) {
      throw ShapeError(format("{}: layer '{}' needs a [C, H, W] input, got {}", s.where, t, core::to_string(shape)));
    }
  };
  if (t == "conv2d") {
    need_chw();
    m = std::make_shared<nn::Conv2d>(nn::Conv2dOptions{
        .in = arg<int64_t>(s, "in", shape[0], used), .out = arg<int64_t>(s, "out", 0, used),
        .kernel = arg<int64_t>(s, "kernel", 3, used), .stride = arg<int64_t>(s, "stride", 1, used),
        .padding = arg<int64_t>(s, "padding", 0, used), .dilation = arg<int64_t>(s, "dilation", 1, used),
        .groups = arg<int64_t>(s, "groups", 1, used), .bias = arg<bool>(s, "bias", true, used), .seed = seed});
  } else if (t == "linear") {
    m = std::make_shared<nn::Linear>(nn::LinearOptions{.in = arg<int64_t>(s, "in", shape.back(), used),
                                                       .out = arg<int64_t>(s, "out", 0, used),
                                                       .bias = arg<bool>(s, "bias", true, used), .seed = seed});
  } else if (t == "maxpool2d" || t == "avgpool2d") {
    nn::Pool2dOptions o{.kernel = arg<int64_t>(s, "kernel", 2, used), .stride = arg<int64_t>(s, "stride", 0, used),
                        .padding = arg<int64_t>(s, "padding", 0, used)};
    if (t == "maxpool2d") m = std::make_shared<nn::MaxPool2d>(o);
    else m = std::make_shared<nn::AvgPool2d>(o);
  } else if (t == "batchnorm2d") {
    need_chw();
    m = std::make_shared<nn::BatchNorm2d>(nn::BatchNorm2dOptions{.num_features = shape[0], .eps = arg<double>(s, "eps", 1e-5, used)});
  } else if (t == "layernorm") {
    m = std::make_shared<nn::LayerNorm>(nn::LayerNormOptions{.normalized_shape = {shape.back()}, .eps = arg<double>(s, "eps", 1e-5, used)});
  } else if (t == "dropout") {
    m = std::make_shared<nn::Dropout>(nn::DropoutOptions{.p = arg<double>(s, "p", 0.5, used), .seed = seed});
  } else if (t == "flatten") {
    m = std::make_shared<nn::Flatten>();
  } else if (t == "relu") {
    m = std::make_shared<nn::ReLU>();
  } else if (t == "gelu") {
    m = std::make_shared<nn::GELU>();
  } else if (t == "sigmoid") {
    m = std::make_shared<nn::Sigmoid>();
  } else if (t == "tanh") {
    m = std::make_shared<nn::Tanh>();
  } else {
    static const std::vector<std::string> kTypes = {"conv2d", "linear", "maxpool2d", "avgpool2d", "batchnorm2d",
                                                    "layernorm", "dropout", "flatten", "relu", "gelu", "sigmoid", "tanh"};
    auto hint = io::closest_name(t, kTypes);
    throw ConfigError(format("{}: unknown layer type '{}'{}", s.where, t,
                             hint ? format(" (did you mean '{}'?)", *hint) : std::string(" (known: conv2d, linear, "
                             "maxpool2d, avgpool2d, batchnorm2d, layernorm, dropout, flatten, relu, gelu, sigmoid, tanh)")));
  }
  reject_unused(s, used);
  return m;
}

}  // namespace

std::shared_ptr<nn::Module> mlp(const Shape& input, int64_t num_classes) {
  return std::make_shared<nn::Sequential>(nn::Flatten(), nn::Linear({.in = flat(input), .out = 256, .seed = 1}), nn::ReLU(),
                                          nn::Linear({.in = 256, .out = 128, .seed = 2}), nn::ReLU(),
                                          nn::Linear({.in = 128, .out = num_classes, .seed = 3}));
}

std::shared_ptr<nn::Module> cnn(const Shape& input, int64_t num_classes) {
  LOOM_CHECK_T(ShapeError, input.size() == 3, "cnn: needs [C, H, W] inputs, got {}", core::to_string(input));
  const int64_t h = input[1] / 4, w = input[2] / 4;
  return std::make_shared<nn::Sequential>(
      nn::Conv2d({.in = input[0], .out = 32, .kernel = 5, .padding = 2, .seed = 1}), nn::ReLU(), nn::MaxPool2d({.kernel = 2}),
      nn::Conv2d({.in = 32, .out = 64, .kernel = 5, .padding = 2, .seed = 2}), nn::ReLU(), nn::MaxPool2d({.kernel = 2}),
      nn::Flatten(), nn::Linear({.in = 64 * h * w, .out = 1024, .seed = 3}), nn::ReLU(),
      nn::Linear({.in = 1024, .out = num_classes, .seed = 4}));
}

std::shared_ptr<nn::Module> lenet(const Shape& input, int64_t num_classes) {
  LOOM_CHECK_T(ShapeError, input.size() == 3, "lenet: needs [C, H, W] inputs, got {}", core::to_string(input));
  const int64_t h = (input[1] / 2 - 4) / 2, w = (input[2] / 2 - 4) / 2;
  return std::make_shared<nn::Sequential>(
      nn::Conv2d({.in = input[0], .out = 6, .kernel = 5, .padding = 2, .seed = 1}), nn::ReLU(), nn::MaxPool2d({.kernel = 2}),
      nn::Conv2d({.in = 6, .out = 16, .kernel = 5, .seed = 2}), nn::ReLU(), nn::MaxPool2d({.kernel = 2}), nn::Flatten(),
      nn::Linear({.in = 16 * h * w, .out = 120, .seed = 3}), nn::ReLU(), nn::Linear({.in = 120, .out = 84, .seed = 4}),
      nn::ReLU(), nn::Linear({.in = 84, .out = num_classes, .seed = 5}));
}

std::shared_ptr<nn::Module> resnet18(const Shape& input, int64_t num_classes) {
  LOOM_CHECK_T(ShapeError, input.size() == 3, "resnet18: needs [C, H, W] inputs, got {}", core::to_string(input));
  auto net = std::make_shared<nn::Sequential>(nn::Conv2d({.in = input[0], .out = 64, .kernel = 3, .padding = 1, .bias = false}),
                                              nn::BatchNorm2d({.num_features = 64}), nn::ReLU());
  int64_t in = 64, h = input[1], w = input[2];
  for (int64_t width : {64, 128, 256, 512}) {
    const int64_t stride = width == 64 ? 1 : 2;
    net->push_back(std::make_shared<BasicBlock>(in, width, stride));
    net->push_back(std::make_shared<BasicBlock>(width, width, 1));
    in = width;
    if (stride == 2) h = (h + 1) / 2, w = (w + 1) / 2;
  }
  net->push_back(nn::AvgPool2d({.kernel = nn::Size2d{h, w}}));
  net->push_back(nn::Flatten());
  net->push_back(nn::Linear({.in = 512, .out = num_classes}));
  core::Generator gen(7);
  net->reset_parameters(gen);  // one stream: equal-shaped layers start different
  return net;
}

std::shared_ptr<nn::Gpt> gpt(const nn::GptOptions& options) { return std::make_shared<nn::Gpt>(options); }

std::shared_ptr<nn::Module> build_model(const io::ModelConfig& config, const Shape& input, int64_t num_classes) {
  if (config.name == "gpt") {
    return gpt({.vocab = num_classes, .context = config.context, .blocks = config.blocks, .heads = config.heads,
                .embed = config.embed, .mlp_ratio = config.mlp_ratio, .dropout = config.dropout, .tied = config.tied,
                .seed = config.init_seed});
  }
  std::shared_ptr<nn::Module> model;
  if (config.name == "mlp") model = mlp(input, num_classes);
  else if (config.name == "cnn") model = cnn(input, num_classes);
  else if (config.name == "lenet") model = lenet(input, num_classes);
  else if (config.name == "resnet18") model = resnet18(input, num_classes);
  if (model) {
    if (config.init_seed != 0) {
      core::Generator gen(config.init_seed);
      model->reset_parameters(gen);
    }
    return model;
  }
  LOOM_CHECK_T(ConfigError, !config.layers.empty(), "model: unknown model '{}'", config.name);
  // Build layer by layer, pushing one example through to learn each layer's input shape.
  auto net = std::make_shared<nn::Sequential>();
  autograd::NoGradGuard no_grad;
  Shape probe_shape = input;
  probe_shape.insert(probe_shape.begin(), 1);
  Tensor probe = ops::zeros(probe_shape);
  for (size_t i = 0; i < config.layers.size(); ++i) {
    const auto& spec = config.layers[i];
    Shape shape(probe.shape().begin() + 1, probe.shape().end());
    auto layer = make_layer(spec, shape, config.init_seed + i + 1);
    try {
      probe = (*layer)(probe);
    } catch (const ValueError& e) {
      throw ShapeError(format("{}: layer {} ({}) does not fit its input [{}]: {}", spec.where, i, layer->describe(),
                              core::to_string(shape).substr(1, core::to_string(shape).size() - 2), e.what()));
    }
    net->push_back(layer);
  }
  LOOM_CHECK_T(ShapeError, probe.dim() == 2 && probe.shape()[1] == num_classes,
               "model: the last layer gives per-example shape {}, but the data has {} classes (expected [{}])",
               core::to_string(Shape(probe.shape().begin() + 1, probe.shape().end())), num_classes, num_classes);
  return net;
}

}  // namespace loom::train
