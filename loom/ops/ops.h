// Everything in loom/ops: `#include "loom/ops/ops.h"` and call loom::ops::*.
//
//   // given: Tensor x, Tensor w
//   Tensor y = ops::relu(ops::matmul(x, w));
#pragma once

#include "loom/ops/backend.h"
#include "loom/ops/creation.h"
#include "loom/ops/math.h"
#include "loom/ops/nn_ops.h"
#include "loom/ops/view.h"

