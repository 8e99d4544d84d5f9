#include "loom/data/fashion_mnist.h"

#include <filesystem>

#include "loom/core/error.h"
#include "loom/data/idx.h"
#include "loom/ops/ops.h"

namespace loom::data {
namespace {

namespace fs = std::filesystem;

// The file for `stem` under root: the gzipped name if present, else the plain one.
std::string find_file(const std::string& root, const std::string& stem) {
  std::error_code ec;
  const fs::path dir(root);
  for (const char* suffix : {".gz", ""}) {
    fs::path p = dir / (stem + suffix);
    if (fs::is_regular_file(p, ec)) return p.string();
  }
  throw IoError(format(
      "Fashion-MNIST not found: '{}' has no {}.gz (nor {}). Install the data set with "
      "`apt-get install dataset-fashion-mnist` (it goes to {}), or set `data.root` in the job file "
      "to the folder that holds train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
      "t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz",
      root, stem, stem, kFashionMnistRoot));
}

}  // namespace

TensorDataset load_fashion_mnist(const std::string& root, bool train) {
  const std::string prefix = train ? "train" : "t10k";
  const std::string images_path = find_file(root, prefix + "-images-idx3-ubyte");
  const std::string labels_path = find_file(root, prefix + "-labels-idx1-ubyte");
  Tensor images = read_idx(images_path);
  Tensor labels = read_idx(labels_path);
  LOOM_CHECK_T(IoError, images.dtype() == core::DType::U8 && images.dim() == 3 && images.size(1) == 28 &&
                            images.size(2) == 28,
               "load_fashion_mnist: '{}' should hold u8 images [N, 28, 28], holds {} {}", images_path,
               images.dtype(), core::to_string(images.shape()));
  LOOM_CHECK_T(IoError, labels.dtype() == core::DType::U8 && labels.dim() == 1,
               "load_fashion_mnist: '{}' should hold u8 labels [N], holds {} {}", labels_path, labels.dtype(),
               core::to_string(labels.shape()));
  LOOM_CHECK_T(IoError, labels.size(0) == images.size(0), "load_fashion_mnist: '{}' has {} images but '{}' has {} labels",
               images_path, images.size(0), labels_path, labels.size(0));
  const auto* lp = labels.data<uint8_t>();
  for (int64_t i = 0; i < labels.numel(); ++i) {
    LOOM_CHECK_T(IoError, lp[i] < kFashionMnistClasses.size(), "load_fashion_mnist: '{}' label {} is {} (expected 0..9)",
                 labels_path, i, static_cast<int>(lp[i]));
  }

  const int64_t n = images.size(0);
  Tensor x = Tensor::empty({n, 1, 28, 28}, core::DType::F32);
  const uint8_t* src = images.data<uint8_t>();
  float* dst = x.data<float>();
  const int64_t total = x.numel();
  for (int64_t i = 0; i < total; ++i) dst[i] = static_cast<float>(src[i]) / 255.0f;
  return TensorDataset(std::move(x), ops::to_dtype(labels, core::DType::I64));
}

}  // namespace loom::data
