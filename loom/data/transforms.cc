#include "loom/data/transforms.h"

#include <algorithm>
#include <cstring>

#include "loom/core/error.h"
#include "loom/ops/ops.h"

namespace loom::data {
namespace {

// Draw in [0, n) from one uniform (n is a small image extent, far below 2^24).
int64_t draw_below(core::Generator& gen, int64_t n) {
  return std::min<int64_t>(n - 1, static_cast<int64_t>(static_cast<double>(gen.uniform()) * static_cast<double>(n)));
}

}  // namespace

Normalize::Normalize(std::vector<double> mean, std::vector<double> std) : mean_(std::move(mean)) {
  LOOM_CHECK(!mean_.empty() && mean_.size() == std.size(),
             "Normalize: need one mean and one std per channel, got {} means and {} stds", mean_.size(), std.size());
  for (size_t c = 0; c < std.size(); ++c) {
    LOOM_CHECK(std[c] > 0, "Normalize: std[{}] must be > 0, got {}", c, std[c]);
    inv_std_.push_back(1.0 / std[c]);
  }
}

void Normalize::apply(Batch& batch, core::Generator&) const {
  const Tensor& x = batch.inputs;
  LOOM_CHECK_T(ShapeError, x.dim() >= 2, "Normalize: inputs must be [N, C, ...], got {}", core::to_string(x.shape()));
  const int64_t n = x.size(0), c = x.size(1), inner = x.numel() / std::max<int64_t>(1, n * c);
  const int64_t nparams = static_cast<int64_t>(mean_.size());
  LOOM_CHECK_T(ShapeError, nparams == 1 || nparams == c, "Normalize: {} channel values for inputs {} with {} channels",
               nparams, core::to_string(x.shape()), c);
  Tensor src = ops::contiguous(x);
  Tensor out = Tensor::empty(x.shape(), x.dtype());
  core::visit_float_dtype(x.dtype(), "Normalize", [&]<class T>() {
    const T* s = src.data<T>();
    T* o = out.data<T>();
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t ch = 0; ch < c; ++ch) {
        const size_t p = nparams == 1 ? 0 : static_cast<size_t>(ch);
        const T m = static_cast<T>(mean_[p]), k = static_cast<T>(inv_std_[p]);
        const int64_t base = (i * c + ch) * inner;
        for (int64_t j = 0; j < inner; ++j) o[base + j] = (s[base + j] - m) * k;
      }
    }
  });
  batch.inputs = out;
}

RandomHorizontalFlip::RandomHorizontalFlip(double p) : p_(p) {
  LOOM_CHECK(p >= 0 && p <= 1, "RandomHorizontalFlip: p must be in [0, 1], got {}", p);
}

void RandomHorizontalFlip::apply(Batch& batch, core::Generator& gen) const {
  const Tensor& x = batch.inputs;
  LOOM_CHECK_T(ShapeError, x.dim() >= 2, "RandomHorizontalFlip: inputs must be [N, ..., W], got {}",
               core::to_string(x.shape()));
  const int64_t n = x.size(0), w = x.size(-1);
  const int64_t rows = n == 0 ? 0 : x.numel() / (n * std::max<int64_t>(w, 1));  // rows of W per sample
  const size_t isz = core::itemsize(x.dtype());
  Tensor src = ops::contiguous(x);
  Tensor out = Tensor::empty(x.shape(), x.dtype());
  const auto* s = static_cast<const char*>(src.data_ptr());
  auto* o = static_cast<char*>(out.data_ptr());
  const size_t sample_bytes = static_cast<size_t>(rows * w) * isz;
  for (int64_t i = 0; i < n; ++i) {
    const bool flip = static_cast<double>(gen.uniform()) < p_;  // one draw per sample, always
    const char* si = s + static_cast<size_t>(i) * sample_bytes;
    char* oi = o + static_cast<size_t>(i) * sample_bytes;
    if (!flip) {
      std::memcpy(oi, si, sample_bytes);
      continue;
    }
    for (int64_t r = 0; r < rows; ++r) {
      const char* sr = si + static_cast<size_t>(r * w) * isz;
      char* orow = oi + static_cast<size_t>(r * w) * isz;
      for (int64_t j = 0; j < w; ++j) std::memcpy(orow + static_cast<size_t>(j) * isz, sr + static_cast<size_t>(w - 1 - j) * isz, isz);
    }
  }
  batch.inputs = out;
}

RandomCrop::RandomCrop(RandomCropOptions o) : height_(o.height), width_(o.width), padding_(o.padding) {
  LOOM_CHECK(height_ > 0 && width_ > 0, "RandomCrop: size must be positive, got {}x{}", height_, width_);
  LOOM_CHECK(padding_ >= 0, "RandomCrop: padding must be >= 0, got {}", padding_);
}

void RandomCrop::apply(Batch& batch, core::Generator& gen) const {
  const Tensor& x = batch.inputs;
  LOOM_CHECK_T(ShapeError, x.dim() >= 3, "RandomCrop: inputs must be [N, ..., H, W], got {}",
               core::to_string(x.shape()));
  const int64_t n = x.size(0), h = x.size(-2), w = x.size(-1);
  const int64_t ph = h + 2 * padding_, pw = w + 2 * padding_;
  LOOM_CHECK_T(ShapeError, height_ <= ph && width_ <= pw,
               "RandomCrop: crop {}x{} is larger than the padded image {}x{} (inputs {}, padding {})", height_, width_,
               ph, pw, core::to_string(x.shape()), padding_);
  const int64_t planes = n == 0 ? 0 : x.numel() / (n * std::max<int64_t>(h * w, 1));  // channels per sample
  core::Shape shape = x.shape();
  shape[shape.size() - 2] = height_;
  shape[shape.size() - 1] = width_;
  Tensor src = ops::contiguous(x);
  Tensor out = ops::zeros(shape, x.dtype());
  const size_t isz = core::itemsize(x.dtype());
  const auto* s = static_cast<const char*>(src.data_ptr());
  auto* o = static_cast<char*>(out.data_ptr());
  for (int64_t i = 0; i < n; ++i) {
    // Window top-left in padded coordinates; two draws per sample, always.
    const int64_t top = draw_below(gen, ph - height_ + 1) - padding_;
    const int64_t left = draw_below(gen, pw - width_ + 1) - padding_;
    // The part of the window that lies inside the image; the rest stays zero.
    const int64_t r0 = std::max<int64_t>(0, -top), r1 = std::min<int64_t>(height_, h - top);
    const int64_t c0 = std::max<int64_t>(0, -left), c1 = std::min<int64_t>(width_, w - left);
    if (r0 >= r1 || c0 >= c1) continue;
    for (int64_t p = 0; p < planes; ++p) {
      const char* sp = s + static_cast<size_t>((i * planes + p) * h * w) * isz;
      char* op = o + static_cast<size_t>((i * planes + p) * height_ * width_) * isz;
      for (int64_t r = r0; r < r1; ++r) {
        std::memcpy(op + static_cast<size_t>(r * width_ + c0) * isz,
                    sp + static_cast<size_t>((top + r) * w + left + c0) * isz, static_cast<size_t>(c1 - c0) * isz);
      }
    }
  }
  batch.inputs = out;
}

}  // namespace loom::data
