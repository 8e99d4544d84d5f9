// Everything in loom/data: `#include "loom/data/data.h"` and use loom::data::*.
//
//   // given: std::string root, int64_t epoch
//   auto ds = std::make_shared<data::TensorDataset>(data::load_fashion_mnist(root, true));
//   data::DataLoader loader(ds, {.batch_size = 64, .shuffle = true, .seed = 1, .num_workers = 2});
//   for (data::Batch& b : loader.begin(epoch)) { ... }
#pragma once

#include "loom/data/csv.h"
#include "loom/data/dataset.h"
#include "loom/data/fashion_mnist.h"
#include "loom/data/idx.h"
#include "loom/data/loader.h"
#include "loom/data/sampler.h"
#include "loom/data/seeding.h"
#include "loom/data/splits.h"
#include "loom/data/text.h"
#include "loom/data/transforms.h"
