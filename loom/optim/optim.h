// Everything in loom/optim: `#include "loom/optim/optim.h"`.
//
//   auto opt = optim::adamw(model.named_parameters(), {.lr = 3e-4, .weight_decay = 0.1});
//   optim::LRScheduler sched(opt, optim::cosine_annealing({.base_lr = 3e-4, .t_max = 10000}));
#pragma once

#include "loom/optim/optimizer.h"
#include "loom/optim/schedule.h"
#include "loom/optim/spec.h"
#include "loom/optim/update_rule.h"
