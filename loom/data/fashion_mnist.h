// Fashion-MNIST (Xiao et al., 2017): 28x28 grey images of clothes in 10 classes,
// 60000 for training and 10000 for testing, in IDX files.
//
//   auto train = std::make_shared<data::TensorDataset>(
//       data::load_fashion_mnist(data::kFashionMnistRoot, /*train=*/true));
//   // inputs f32 [60000, 1, 28, 28] in [0, 1], targets i64 [60000] in 0..9
//
// Debian's package `dataset-fashion-mnist` installs the files in
// kFashionMnistRoot; a job file points elsewhere with the key `data.root`.
// Both the gzipped (train-images-idx3-ubyte.gz) and the plain names are found.
#pragma once

#include <array>
#include <string>
#include <string_view>

#include "loom/data/dataset.h"

namespace loom::data {

inline constexpr const char* kFashionMnistRoot = "/usr/share/datasets/fashion-mnist";

inline constexpr std::array<std::string_view, 10> kFashionMnistClasses = {
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"};

// Throws IoError if a file is missing (saying how to install the data set and
// which job-file key sets the folder) or malformed.
TensorDataset load_fashion_mnist(const std::string& root = kFashionMnistRoot, bool train = true);

}  // namespace loom::data
