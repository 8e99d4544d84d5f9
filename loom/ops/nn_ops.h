// Neural-network ops: convolution, pooling, normalisation, softmax, dropout,
// embedding, indexing and losses. All differentiable.
//
//   // given: Tensor x, Tensor w, Tensor b, Tensor logits, Tensor labels
//   auto y = ops::conv2d(x, w, b, {.stride_h = 1, .stride_w = 1, .pad_h = 2, .pad_w = 2});
//   auto p = ops::max_pool2d(y, {.kernel_h = 2, .kernel_w = 2, .stride_h = 2, .stride_w = 2});
//   auto loss = ops::cross_entropy(logits, labels, {.label_smoothing = 0.1});
#pragma once

#include "loom/core/rng.h"
#include "loom/core/tensor.h"
#include "loom/ops/backend.h"

namespace loom::ops {

using core::Tensor;

Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv2dParams& p = {});
Tensor max_pool2d(const Tensor& x, const Pool2dParams& p = {});
Tensor avg_pool2d(const Tensor& x, const Pool2dParams& p = {});
// x is [N, C] or [N, C, H, W]; running stats are updated in training mode.
Tensor batch_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor running_mean,
                  Tensor running_var, bool training, double momentum = 0.1, double eps = 1e-5);
// Normalises over the last normalized_shape.size() dims.
Tensor layer_norm(const Tensor& x, const core::Shape& normalized_shape, const Tensor& weight,
                  const Tensor& bias, double eps = 1e-5);
Tensor softmax(const Tensor& x, int64_t dim);
Tensor log_softmax(const Tensor& x, int64_t dim);
// Zeroes each element with probability p and scales the rest by 1/(1-p).
Tensor dropout(const Tensor& x, double p, bool training, core::Generator& gen);
// weight [num, dim], indices i64 of any shape -> [..., dim].
Tensor embedding(const Tensor& weight, const Tensor& indices);
Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index);
Tensor gather(const Tensor& x, int64_t dim, const Tensor& index);

enum class Reduction : uint8_t { Mean, Sum, None };
struct CrossEntropyOptions {
  Reduction reduction = Reduction::Mean;
  double label_smoothing = 0.0;
};
// logits [N, C], target class indices (i64) [N].
Tensor cross_entropy(const Tensor& logits, const Tensor& target, const CrossEntropyOptions& o = {});
Tensor mse_loss(const Tensor& input, const Tensor& target, Reduction reduction = Reduction::Mean);
// Numerically stable: max(x, 0) - x * t + log(1 + exp(-|x|)).
Tensor binary_cross_entropy_with_logits(const Tensor& logits, const Tensor& target,
                                        Reduction reduction = Reduction::Mean);

}  // namespace loom::ops
