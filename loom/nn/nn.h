// Everything in loom/nn: `#include "loom/nn/nn.h"` and use loom::nn::*.
//
//   // given: Tensor x
//   auto net = nn::Sequential(nn::Linear({.in = 784, .out = 256}), nn::ReLU(), nn::Linear({.in = 256, .out = 10}));
//   Tensor logits = net(x);
//   nn::StateDict saved = net.state_dict();
#pragma once

#include "loom/nn/activation.h"
#include "loom/nn/attention.h"
#include "loom/nn/conv_pool.h"
#include "loom/nn/dropout.h"
#include "loom/nn/init.h"
#include "loom/nn/linear.h"
#include "loom/nn/module.h"
#include "loom/nn/normalization.h"
#include "loom/nn/sequential.h"
#include "loom/nn/state_dict.h"
#include "loom/nn/transformer.h"
