// Everything in loom/optim: `#include "loom/optim/optim.h"`.
//
//   // given: optim::NamedTensors params
//   auto opt = optim::adamw(params, {.lr = 3e-4, .weight_decay = 0.1});   // params: model.named_parameters()
//   optim::LRScheduler sched(opt, optim::cosine_annealing({.base_lr = 3e-4, .t_max = 10000}));
#pragma once

#include "loom/optim/optimizer.h"
#include "loom/optim/schedule.h"
#include "loom/optim/spec.h"
#include "loom/optim/state_dict.h"
#include "loom/optim/update_rule.h"
