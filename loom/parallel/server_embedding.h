// An embedding table that lives on the parameter servers, for tables larger
// than a worker should hold (recommendation models): forward pulls only the
// rows its batch touches (row_sparse_pull), and the parameter-server
// strategy pushes only those rows' gradients (row_sparse_push) after
// backward; the servers' optimizer updates just those rows.
//
//   // given: Tensor ids
//   auto table = std::make_shared<parallel::ServerEmbedding>(parallel::ServerEmbeddingOptions{.rows = 1000, .dim = 16});
//   // ParameterServerStrategy::attach binds it to a key after the dense parameters' keys.
//   // Then, with ids i64 [B, F] table rows: (*table)(ids) is [B, F, dim].
//
// The module has no parameters of its own (the table is not in the worker's
// state dict; the servers' state goes into checkpoints under "servers.*").
#pragma once

#include <cstdint>

#include "loom/nn/module.h"
#include "loom/ps/kvstore.h"

namespace loom::parallel {

struct ServerEmbeddingOptions {
  int64_t rows = 0;
  int64_t dim = 0;
  double init_std = 0.05;  // the table starts as N(0, init_std^2), drawn by rank 0
  uint64_t seed = 0;
};

class ServerEmbedding final : public nn::Module {
 public:
  explicit ServerEmbedding(ServerEmbeddingOptions options);

  // ids: i64 [...] table rows -> f32 [..., dim]. Pulls the distinct rows
  // (ascending); in grad mode, remembers them for push_gradients().
  core::Tensor forward(const core::Tensor& ids) override;
  std::string describe() const override;

  // Called by the strategy: init `key` on the servers (every worker; rank 0's
  // draw is kept).
  void bind(ps::KVStore& kv, int64_t key);
  // Pushes the gradients of the rows the last forward pulled, and forgets
  // them; a forward without a gradient pushes nothing.
  void push_gradients();
  int64_t key() const { return key_; }
  // Distinct rows the last training forward pulled (U).
  int64_t rows_pulled() const { return rows_pulled_; }

 private:
  ServerEmbeddingOptions options_;
  ps::KVStore* kv_ = nullptr;
  int64_t key_ = -1;
  int64_t rows_pulled_ = 0;
  core::Tensor pulled_ids_;   // i64 [U], ascending
  core::Tensor pulled_rows_;  // f32 [U, dim], a leaf that collects the rows' gradients
};

}  // namespace loom::parallel
