#include "loom/parallel/server_embedding.h"

#include <algorithm>
#include <vector>

#include "loom/autograd/engine.h"
#include "loom/core/error.h"
#include "loom/ops/ops.h"

namespace loom::parallel {

using core::Tensor;

ServerEmbedding::ServerEmbedding(ServerEmbeddingOptions options) : options_(options) {
  LOOM_CHECK(options_.rows > 0 && options_.dim > 0, "ServerEmbedding: rows {} and dim {} must be positive", options_.rows,
             options_.dim);
}

std::string ServerEmbedding::describe() const {
  return format("ServerEmbedding({}, {}, key {})", options_.rows, options_.dim, key_);
}

void ServerEmbedding::bind(ps::KVStore& kv, int64_t key) {
  kv_ = &kv;
  key_ = key;
  // Only rank 0's value is kept: the others give the shape without drawing.
  if (kv.rank() == 0) {
    core::Generator gen(options_.seed);
    kv.init(key, ops::randn({options_.rows, options_.dim}, gen, core::DType::F32, 0.0, options_.init_std));
  } else {
    kv.init(key, ops::zeros({options_.rows, options_.dim}));
  }
}

core::Tensor ServerEmbedding::forward(const core::Tensor& ids) {
  LOOM_CHECK(kv_ != nullptr, "ServerEmbedding: not bound to a KVStore (train it with ParameterServerStrategy)");
  LOOM_CHECK_T(TypeError, ids.dtype() == core::DType::I64, "ServerEmbedding: ids must be i64, got {}", ids.dtype());
  const Tensor flat = ops::contiguous(ids);
  const int64_t* p = flat.data<int64_t>();
  std::vector<int64_t> unique(p, p + flat.numel());
  std::sort(unique.begin(), unique.end());
  unique.erase(std::unique(unique.begin(), unique.end()), unique.end());
  std::vector<int64_t> index;
  index.reserve(static_cast<size_t>(flat.numel()));
  for (int64_t i = 0; i < flat.numel(); ++i) {
    index.push_back(std::lower_bound(unique.begin(), unique.end(), p[i]) - unique.begin());
  }
  const auto u = static_cast<int64_t>(unique.size());
  Tensor row_ids = Tensor::from_vector<int64_t>(unique, {u});
  Tensor rows = ops::zeros({u, options_.dim});
  kv_->row_sparse_pull(key_, rows, row_ids);
  if (core::GradMode::is_enabled()) {
    rows.set_requires_grad(true);
    pulled_ids_ = row_ids;
    pulled_rows_ = rows;
    rows_pulled_ = u;
  }
  return ops::embedding(rows, Tensor::from_vector<int64_t>(index, ids.shape()));
}

void ServerEmbedding::push_gradients() {
  if (!pulled_rows_.defined()) return;
  const Tensor grad = pulled_rows_.grad();
  if (grad.defined()) kv_->row_sparse_push(key_, pulled_ids_, ops::contiguous(grad));
  pulled_ids_ = Tensor();
  pulled_rows_ = Tensor();
}

}  // namespace loom::parallel
