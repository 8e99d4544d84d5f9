#include "loom/nn/normalization.h"

#include <limits>

#include <utility>

#include "loom/nn/init.h"
#include "loom/ops/ops.h"

namespace loom::nn {

using core::to_string;

BatchNorm2d::BatchNorm2d(const BatchNorm2dOptions& o) : o_(o) {
  LOOM_CHECK(o.num_features >= 1, "BatchNorm2d: num_features {} must be at least 1", o.num_features);
  LOOM_CHECK(o.eps >= 0, "BatchNorm2d: eps {} must not be negative", o.eps);
  LOOM_CHECK(!o.momentum || (*o.momentum >= 0 && *o.momentum <= 1), "BatchNorm2d: momentum {} must be in [0, 1]",
             o.momentum.value_or(0));
  LOOM_CHECK_T(TypeError, core::is_floating(o.dtype), "BatchNorm2d: dtype must be floating, got {}", o.dtype);
  const int64_t c = o.num_features;
  if (o.affine) {
    weight_ = register_parameter("weight", ops::ones({c}, o.dtype));
    bias_ = register_parameter("bias", ops::zeros({c}, o.dtype));
  }
  if (o.track_running_stats) {
    running_mean_ = register_buffer("running_mean", ops::zeros({c}, o.dtype));
    running_var_ = register_buffer("running_var", ops::ones({c}, o.dtype));
    num_batches_tracked_ = register_buffer("num_batches_tracked", ops::zeros({}, core::DType::I64));
  }
}

void BatchNorm2d::reset_running_stats() {
  if (!o_.track_running_stats) return;
  init::zeros_(running_mean_);
  init::ones_(running_var_);
  init::zeros_(num_batches_tracked_);
}

void BatchNorm2d::reset_parameters(core::Generator&) {
  reset_running_stats();
  if (o_.affine) {
    init::ones_(weight_);
    init::zeros_(bias_);
  }
}

void BatchNorm2d::defer_running_stats(bool on) {
  defer_ = on;
  recorded_.clear();
}

std::vector<BatchNorm2d::BatchStatistics> BatchNorm2d::take_batch_statistics() { return std::exchange(recorded_, {}); }

namespace {

// running = (1 - m) running + m batch in double, rounded once to running's dtype.
void blend_into(Tensor& running, const Tensor& batch, double m) {
  const Tensor r = ops::to_dtype(running, core::DType::F64), b = ops::to_dtype(batch, core::DType::F64);
  ops::copy_(running, ops::to_dtype(ops::add(ops::mul(r, 1.0 - m), ops::mul(b, m)), running.dtype()));
}

}  // namespace

void BatchNorm2d::apply_batch_statistics(const BatchStatistics& stats) {
  LOOM_CHECK(o_.track_running_stats, "{}: has no running statistics to update", describe());
  for (const Tensor* t : {&stats.mean, &stats.var}) {
    LOOM_CHECK_T(ShapeError, t->defined() && t->dim() == 1 && t->size(0) == o_.num_features,
                 "{}: batch statistics must be [{}], got {}", describe(), o_.num_features,
                 t->defined() ? to_string(t->shape()) : std::string("undefined"));
  }
  int64_t& count = *num_batches_tracked_.data<int64_t>();
  if (count < std::numeric_limits<int64_t>::max()) count += 1;  // a loaded counter may be anything
  const double m = o_.momentum ? *o_.momentum : 1.0 / static_cast<double>(count);
  blend_into(running_mean_, stats.mean, m);
  blend_into(running_var_, stats.var, m);
}

std::string BatchNorm2d::describe() const {
  std::string s = format("BatchNorm2d({}", o_.num_features);
  if (o_.eps != 1e-5) s += format(", eps {}", o_.eps);
  if (o_.momentum != 0.1) s += o_.momentum ? format(", momentum {}", *o_.momentum) : ", cumulative average";
  if (!o_.affine) s += ", no affine";
  if (!o_.track_running_stats) s += ", no running stats";
  return s + ")";
}

Tensor BatchNorm2d::forward(const Tensor& x) {
  LOOM_CHECK(x.defined(), "{}: input is undefined", describe());
  LOOM_CHECK_T(ShapeError, x.dim() == 4, "{}: input {} must be 4-D [N, C, H, W]", describe(), to_string(x.shape()));
  LOOM_CHECK_T(ShapeError, x.size(1) == o_.num_features, "{}: input {} has {} channels, expected {}", describe(),
               to_string(x.shape()), x.size(1), o_.num_features);
  const bool use_batch_stats = is_training() || !o_.track_running_stats;
  LOOM_CHECK_T(ShapeError, !use_batch_stats || x.size(0) * x.size(2) * x.size(3) > 1,
               "{}: training needs more than 1 value per channel, got input {}", describe(), to_string(x.shape()));
  if (is_training() && o_.track_running_stats && defer_) {
    // Fresh running tensors and momentum 1: the op's update
    // (1 - m) running + m batch leaves exactly the batch statistics in them.
    BatchStatistics stats{ops::zeros({o_.num_features}, running_mean_.dtype()),
                          ops::ones({o_.num_features}, running_var_.dtype())};
    Tensor y = ops::batch_norm(x, weight_, bias_, stats.mean, stats.var, true, 1.0, o_.eps);
    recorded_.push_back(std::move(stats));
    return y;
  }
  double momentum = o_.momentum.value_or(0.0);
  if (is_training() && o_.track_running_stats) {
    // num_batches_tracked is a host-side i64 scalar, as in PyTorch.
    int64_t& count = *num_batches_tracked_.data<int64_t>();
    if (count < std::numeric_limits<int64_t>::max()) count += 1;  // a loaded counter may be anything
    if (!o_.momentum) momentum = 1.0 / static_cast<double>(count);
  }
  if (!o_.track_running_stats) return ops::batch_norm(x, weight_, bias_, Tensor(), Tensor(), true, momentum, o_.eps);
  return ops::batch_norm(x, weight_, bias_, running_mean_, running_var_, is_training(), momentum, o_.eps);
}

LayerNorm::LayerNorm(const LayerNormOptions& o) : o_(o) {
  LOOM_CHECK(!o.normalized_shape.empty(), "LayerNorm: normalized_shape is empty");
  for (int64_t d : o.normalized_shape) {
    LOOM_CHECK(d >= 1, "LayerNorm: normalized_shape {} has a dim below 1", to_string(o.normalized_shape));
  }
  LOOM_CHECK(o.eps >= 0, "LayerNorm: eps {} must not be negative", o.eps);
  LOOM_CHECK_T(TypeError, core::is_floating(o.dtype), "LayerNorm: dtype must be floating, got {}", o.dtype);
  if (o.affine) {
    weight_ = register_parameter("weight", ops::ones(o.normalized_shape, o.dtype));
    if (o.bias) bias_ = register_parameter("bias", ops::zeros(o.normalized_shape, o.dtype));
  }
}

void LayerNorm::reset_parameters(core::Generator&) {
  if (weight_.defined()) init::ones_(weight_);
  if (bias_.defined()) init::zeros_(bias_);
}

std::string LayerNorm::describe() const {
  std::string s = format("LayerNorm({}", to_string(o_.normalized_shape));
  if (o_.eps != 1e-5) s += format(", eps {}", o_.eps);
  if (!o_.affine) s += ", no affine";
  else if (!o_.bias) s += ", no bias";
  return s + ")";
}

Tensor LayerNorm::forward(const Tensor& x) {
  LOOM_CHECK(x.defined(), "{}: input is undefined", describe());
  const auto& ns = o_.normalized_shape;
  const int64_t k = static_cast<int64_t>(ns.size());
  bool ok = x.dim() >= k;
  for (int64_t i = 0; ok && i < k; ++i) ok = x.shape()[x.dim() - k + i] == ns[i];
  LOOM_CHECK_T(ShapeError, ok, "{}: input {} does not end with the normalized shape {}", describe(),
               to_string(x.shape()), to_string(ns));
  LOOM_CHECK_T(TypeError, !weight_.defined() || x.dtype() == weight_.dtype(),
               "{}: input dtype {} differs from weight dtype {}", describe(), x.dtype(), weight_.dtype());
  return ops::layer_norm(x, ns, weight_, bias_, o_.eps);
}

}  // namespace loom::nn
