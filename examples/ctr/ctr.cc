// loom_ctr: a CTR-style model trained on the parameter servers. A large
// embedding table (key 0, [rows, dim]) lives on the servers and travels
// row-sparse: each step pulls only the rows its batch touches and pushes only
// their gradients. An MLP over the concatenated field embeddings (keys 1..4)
// is dense and goes through pushpull. The update rule runs on the servers.
//
//   loom_ctr --type local --steps 2000                                   # one process
//   loom launch --workers 2 --servers 2 -- loom_ctr --type dist_async    # 2 workers, 2 servers
//
// Each step, per worker:
//   ids    = unique(batch rows), ascending          [U]
//   table  = row_sparse_pull(0, ids)                [U, dim]   requires_grad
//   logits = MLP(concat_f table[index[:, f]])       [B]        index: batch rows -> positions in ids
//   loss   = BCE-with-logits(logits, clicks); backward
//   row_sparse_push(0, ids, table.grad)             only the U touched rows travel
//   pushpull(1..4, MLP grads -> MLP params)
// Worker 0 reports test logloss and AUC, and the bytes per step (KVStore::stats).
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <string>
#include <vector>

#include "examples/ctr/synthetic_clicks.h"
#include "loom/autograd/engine.h"
#include "loom/core/error.h"
#include "loom/core/parallel.h"
#include "loom/nn/activation.h"
#include "loom/nn/linear.h"
#include "loom/nn/sequential.h"
#include "loom/ops/creation.h"
#include "loom/ops/nn_ops.h"
#include "loom/ops/view.h"
#include "loom/ps/kvstore.h"

namespace {

using loom::core::Tensor;
namespace ops = loom::ops;
namespace nn = loom::nn;
namespace ps = loom::ps;
namespace io = loom::io;
namespace optim = loom::optim;
using Clock = std::chrono::steady_clock;

constexpr int64_t kTableKey = 0;

struct Args {
  std::string type = "local";
  int64_t steps = 2000;
  int64_t batch = 256;      // per worker
  int64_t rows = 1000000;   // embedding table rows (all fields)
  int64_t fields = 8;
  int64_t dim = 16;
  int64_t hidden = 64;
  std::string optimizer = "adam";
  double lr = 0.01;
  double init_std = 0.05;
  double zipf = 1.1;
  int64_t train_size = 10000000;  // samples in the training stream (then it repeats)
  int64_t test_size = 20000;
  int64_t eval_every = 500;
  std::string scores_out;  // CSV of the final test predictions
  int staleness = 2;  // dist_ssp
  int threads = 1;    // kernel threads per worker (0: OpenMP's default)
  uint64_t seed = 1;
};

// A batch of samples: B x F table rows and B clicks.
struct Batch {
  int64_t size = 0;
  std::vector<int64_t> rows;  // [B, F], row-major
  std::vector<float> clicks;  // [B]
  std::vector<double> probs;  // [B], the hidden model's probability
};

// Samples first, first + stride, ... of a stream (indices wrap at `modulo`).
Batch make_batch(const ctr::ClickData& data, ctr::Stream stream, uint64_t first, int64_t count, uint64_t stride,
                 uint64_t modulo) {
  Batch b;
  b.size = count;
  b.rows.resize(static_cast<size_t>(count * data.fields()));
  b.clicks.resize(static_cast<size_t>(count));
  b.probs.resize(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) {
    const uint64_t index = (first + static_cast<uint64_t>(i) * stride) % modulo;
    const auto k = static_cast<size_t>(i);
    b.clicks[k] = data.sample(stream, index, &b.rows[k * static_cast<size_t>(data.fields())], &b.probs[k]);
  }
  return b;
}

// The rows a batch touches, ascending and unique (what row_sparse_push wants),
// and for every batch entry its position among them.
struct CompactRows {
  std::vector<int64_t> ids;    // [U]
  std::vector<int64_t> index;  // [B * F], into ids
};

CompactRows compact_rows(const std::vector<int64_t>& rows) {
  CompactRows c;
  c.ids = rows;
  std::sort(c.ids.begin(), c.ids.end());
  c.ids.erase(std::unique(c.ids.begin(), c.ids.end()), c.ids.end());
  c.index.reserve(rows.size());
  for (int64_t r : rows) c.index.push_back(std::lower_bound(c.ids.begin(), c.ids.end(), r) - c.ids.begin());
  return c;
}

Tensor i64_tensor(const std::vector<int64_t>& v, const loom::core::Shape& shape) {
  return Tensor::from_vector<int64_t>(v, shape);
}

// The worker's copy of the dense part; the embedding rows come in per step.
class CtrModel {
 public:
  CtrModel(const Args& a, uint64_t seed)
      : fields_(a.fields), dim_(a.dim),
        mlp_(nn::Linear({.in = a.fields * a.dim, .out = a.hidden, .seed = seed}), nn::ReLU(),
             nn::Linear({.in = a.hidden, .out = 1, .seed = seed + 1})) {
    for (auto& [name, p] : mlp_.named_parameters()) params_.push_back(p);
  }

  // table [U, dim] (the pulled rows), index i64 [B, F] into it -> logits [B].
  Tensor logits(const Tensor& table, const Tensor& index) {
    const int64_t b = index.size(0);
    Tensor x = ops::reshape(ops::embedding(table, index), {b, fields_ * dim_});
    return ops::reshape(mlp_(x), {b});
  }

  std::vector<Tensor>& params() { return params_; }  // keys 1, 2, ... in this order

 private:
  int64_t fields_, dim_;
  nn::Sequential mlp_;
  std::vector<Tensor> params_;
};

// Exact ROC AUC (the Mann-Whitney statistic; tied scores share their mean rank).
double roc_auc(const std::vector<double>& scores, const std::vector<float>& labels) {
  std::vector<size_t> order(scores.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return scores[a] < scores[b]; });
  double positive_rank_sum = 0, positives = 0;
  for (size_t i = 0; i < order.size();) {
    size_t j = i;
    while (j < order.size() && scores[order[j]] == scores[order[i]]) ++j;
    const double mean_rank = 0.5 * static_cast<double>(i + 1 + j);  // ranks i+1 .. j
    for (size_t k = i; k < j; ++k) {
      if (labels[order[k]] > 0.5f) positive_rank_sum += mean_rank, positives += 1;
    }
    i = j;
  }
  const double negatives = static_cast<double>(scores.size()) - positives;
  if (positives == 0 || negatives == 0) return 0.5;
  return (positive_rank_sum - positives * (positives + 1) / 2) / (positives * negatives);
}

struct Metrics {
  double logloss = 0;
  double auc = 0;
  std::vector<double> probs;  // per test sample
};

Metrics metrics_of(const std::vector<double>& probs, const std::vector<float>& labels) {
  double loss = 0;
  for (size_t i = 0; i < probs.size(); ++i) {
    const double p = std::clamp(probs[i], 1e-7, 1 - 1e-7);
    loss -= labels[i] > 0.5f ? std::log(p) : std::log(1 - p);
  }
  return {loss / static_cast<double>(probs.size()), roc_auc(probs, labels), probs};
}

// Test logloss and AUC with the servers' current table and the local MLP.
Metrics evaluate(ps::KVStore& kv, CtrModel& model, const Batch& test, const CompactRows& rows, int64_t fields,
                 int64_t dim) {
  loom::autograd::NoGradGuard no_grad;
  Tensor table = ops::zeros({static_cast<int64_t>(rows.ids.size()), dim});
  kv.row_sparse_pull(kTableKey, table, i64_tensor(rows.ids, {static_cast<int64_t>(rows.ids.size())}));
  std::vector<double> probs;
  probs.reserve(static_cast<size_t>(test.size));
  constexpr int64_t kChunk = 4096;
  for (int64_t begin = 0; begin < test.size; begin += kChunk) {
    const int64_t n = std::min(kChunk, test.size - begin);
    const auto first = rows.index.begin() + begin * fields;
    Tensor index = i64_tensor(std::vector<int64_t>(first, first + n * fields), {n, fields});
    for (float z : model.logits(table, index).to_vector<float>()) probs.push_back(1.0 / (1.0 + std::exp(-double{z})));
  }
  return metrics_of(probs, test.clicks);
}

// "probability,click" per test sample, to check the AUC elsewhere (e.g. sklearn's roc_auc_score).
void write_scores(const std::string& path, const std::vector<double>& probs, const std::vector<float>& clicks) {
  std::FILE* f = std::fopen(path.c_str(), "w");
  LOOM_CHECK_T(IoError, f != nullptr, "cannot write {}", path);
  std::fprintf(f, "probability,click\n");
  for (size_t i = 0; i < probs.size(); ++i) std::fprintf(f, "%.9g,%d\n", probs[i], clicks[i] > 0.5f ? 1 : 0);
  LOOM_CHECK_T(IoError, std::fclose(f) == 0, "writing {} failed", path);
}

std::string human_bytes(double n) {
  const char* units[] = {"B", "KiB", "MiB", "GiB"};
  int u = 0;
  while (n >= 1024 && u < 3) n /= 1024, ++u;
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", n, units[u]);
  return buf;
}

int run(const Args& a) {
  // The model's kernels are tiny; several workers and servers sharing a few
  // cores lose far more to spinning OpenMP threads than they gain.
  if (a.threads > 0) loom::core::set_num_threads(a.threads);
  ps::KVStoreOptions kv_options;
  kv_options.staleness = a.staleness;
  const io::Mode type = io::parse_mode(a.type).value();  // CLI11 checked the name
  auto kv = ps::KVStore::create(type, kv_options);
  const int rank = kv->rank(), workers = kv->num_workers();
  const bool lead = rank == 0;

  const ctr::ClickData data({.fields = a.fields, .rows = a.rows, .zipf = a.zipf, .seed = a.seed});
  CtrModel model(a, a.seed + 1000);

  // The table: rank 0's initial value is the one kept (the others only give the shape).
  {
    loom::core::Generator gen(a.seed + 2000);
    kv->init(kTableKey, lead ? ops::randn({a.rows, a.dim}, gen, loom::core::DType::F32, 0.0, a.init_std)
                             : ops::zeros({a.rows, a.dim}));
  }
  std::vector<int64_t> mlp_keys(model.params().size());
  std::iota(mlp_keys.begin(), mlp_keys.end(), kTableKey + 1);
  kv->broadcast(mlp_keys, model.params(), model.params());
  // dist_sync sums the workers' pushes: rescale to their mean.
  kv->set_optimizer({.rule = optim::parse_rule(a.optimizer).value(), .lr = a.lr,
                     .rescale_grad = type == io::Mode::DistSync ? 1.0 / workers : 1.0});

  const double table_bytes = static_cast<double>(a.rows * a.dim) * 4;
  Batch test;
  CompactRows test_rows;
  if (lead) {
    test = make_batch(data, ctr::Stream::Test, 0, a.test_size, 1, static_cast<uint64_t>(a.test_size));
    test_rows = compact_rows(test.rows);
    const double ctr_rate = std::accumulate(test.clicks.begin(), test.clicks.end(), 0.0) / static_cast<double>(test.size);
    const Metrics oracle = metrics_of(test.probs, test.clicks);
    std::printf("loom_ctr: %s, %d worker(s); table %lld x %lld f32 (%s) on the %s; %lld fields x %lld ids, zipf %.2f; "
                "MLP %lld -> %lld -> 1; %s lr %g; batch %lld per worker\n",
                a.type.c_str(), workers, static_cast<long long>(a.rows), static_cast<long long>(a.dim),
                human_bytes(table_bytes).c_str(), type == io::Mode::Local ? "local store" : "servers",
                static_cast<long long>(a.fields), static_cast<long long>(data.vocab_per_field()), a.zipf,
                static_cast<long long>(a.fields * a.dim), static_cast<long long>(a.hidden), a.optimizer.c_str(), a.lr,
                static_cast<long long>(a.batch));
    std::printf("test set: %lld samples, CTR %.3f, %zu distinct rows; the hidden model itself scores logloss %.4f AUC %.4f\n",
                static_cast<long long>(test.size), ctr_rate, test_rows.ids.size(), oracle.logloss, oracle.auc);
    std::fflush(stdout);
  }

  // Traffic and time of training steps only (evaluation is left out). Step 1
  // is timed apart: the servers allocate the optimizer state (O(table)) on the first push.
  double first_step_seconds = 0, seconds = 0, sent = 0, received = 0, touched = 0, loss_sum = 0;
  double window_seconds = 0, window_sent = 0, window_received = 0, window_touched = 0;
  int64_t window_steps = 0, window_timed = 0;
  for (int64_t step = 1; step <= a.steps; ++step) {
    const auto t0 = Clock::now();
    const ps::KVStoreStats before = kv->stats();
    // This worker's shard of the stream: samples rank, rank + W, rank + 2W, ...
    const Batch batch = make_batch(data, ctr::Stream::Train, static_cast<uint64_t>((step - 1) * a.batch * workers + rank),
                                   a.batch, static_cast<uint64_t>(workers), static_cast<uint64_t>(a.train_size));
    const CompactRows rows = compact_rows(batch.rows);
    const auto u = static_cast<int64_t>(rows.ids.size());
    const Tensor ids = i64_tensor(rows.ids, {u});

    Tensor table = ops::zeros({u, a.dim});
    kv->row_sparse_pull(kTableKey, table, ids);
    table.set_requires_grad(true);
    Tensor loss = ops::binary_cross_entropy_with_logits(
        model.logits(table, i64_tensor(rows.index, {a.batch, a.fields})),
        Tensor::from_vector<float>(batch.clicks, {a.batch}));
    loom::autograd::backward(loss);

    kv->row_sparse_push(kTableKey, ids, ops::contiguous(table.grad()));
    std::vector<Tensor> grads;
    for (Tensor& p : model.params()) grads.push_back(ops::contiguous(p.grad()));
    kv->pushpull(mlp_keys, grads, model.params());
    for (Tensor& p : model.params()) loom::autograd::zero_grad(p, /*set_to_none=*/true);
    kv->advance_clock();

    const ps::KVStoreStats after = kv->stats();
    const double dt = std::chrono::duration<double>(Clock::now() - t0).count();
    const auto ds = static_cast<double>(after.bytes_sent - before.bytes_sent);
    const auto dr = static_cast<double>(after.bytes_received - before.bytes_received);
    if (step == 1) {
      first_step_seconds = dt;
    } else {
      seconds += dt, window_seconds += dt;
      ++window_timed;
    }
    sent += ds, received += dr, touched += static_cast<double>(u);
    window_sent += ds, window_received += dr, window_touched += static_cast<double>(u);
    loss_sum += loss.item<double>();
    ++window_steps;

    if (lead && step % a.eval_every == 0 && step != a.steps) {
      const Metrics m = evaluate(*kv, model, test, test_rows, a.fields, a.dim);
      const double n = static_cast<double>(window_steps);
      std::printf("step %6lld  train loss %.4f  test logloss %.4f  AUC %.4f  | %.0f rows/step, sent %s/step, "
                  "received %s/step (table %s) | %.1f steps/s\n",
                  static_cast<long long>(step), loss_sum / n, m.logloss, m.auc, window_touched / n,
                  human_bytes(window_sent / n).c_str(), human_bytes(window_received / n).c_str(),
                  human_bytes(table_bytes).c_str(),
                  window_timed > 0 ? static_cast<double>(window_timed) / window_seconds : 0.0);
      std::fflush(stdout);
    }
    if (step % a.eval_every == 0) {
      loss_sum = window_seconds = window_sent = window_received = window_touched = 0;
      window_steps = window_timed = 0;
    }
  }

  const double n = static_cast<double>(a.steps);
  const double steps_per_s = a.steps > 1 ? (n - 1) / seconds : 1 / first_step_seconds;
  std::printf("worker %d: %lld steps, %.1f steps/s after the first (%.3f s), %.0f rows/step, sent %s/step, "
              "received %s/step\n", rank, static_cast<long long>(a.steps), steps_per_s, first_step_seconds, touched / n,
              human_bytes(sent / n).c_str(), human_bytes(received / n).c_str());
  std::fflush(stdout);
  kv->barrier();  // every worker's updates are in before the final evaluation
  if (lead) {
    const Metrics m = evaluate(*kv, model, test, test_rows, a.fields, a.dim);
    std::printf("final: test logloss %.4f  AUC %.4f\n", m.logloss, m.auc);
    if (!a.scores_out.empty()) write_scores(a.scores_out, m.probs, test.clicks);
    std::printf("result: type=%s workers=%d steps=%lld auc=%.4f logloss=%.4f steps_per_s=%.2f first_step_s=%.3f "
                "rows_per_step=%.0f sent_per_step=%.0f received_per_step=%.0f table_bytes=%.0f\n",
                a.type.c_str(), workers, static_cast<long long>(a.steps), m.auc, m.logloss, steps_per_s,
                first_step_seconds, touched / n, sent / n, received / n, table_bytes);
    std::fflush(stdout);
  }
  kv->close();  // waits for every worker, so the servers stay up until worker 0 has evaluated
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  CLI::App app{"A CTR-style model (embedding table + MLP) on synthetic clicks, on Loom's parameter servers", "loom_ctr"};
  app.add_option("--type", a.type, "KVStore type")->check(CLI::IsMember({"local", "dist_sync", "dist_async", "dist_ssp"}));
  app.add_option("--steps", a.steps, "training steps per worker")->check(CLI::PositiveNumber);
  app.add_option("--batch", a.batch, "samples per step per worker")->check(CLI::PositiveNumber);
  app.add_option("--rows", a.rows, "embedding table rows (split evenly over the fields)")->check(CLI::PositiveNumber);
  app.add_option("--fields", a.fields, "categorical fields per sample")->check(CLI::PositiveNumber);
  app.add_option("--dim", a.dim, "embedding width")->check(CLI::PositiveNumber);
  app.add_option("--hidden", a.hidden, "MLP hidden width")->check(CLI::PositiveNumber);
  app.add_option("--optimizer", a.optimizer, "server-side rule")->check(CLI::IsMember({"sgd", "adam", "adamw"}));
  app.add_option("--lr", a.lr, "learning rate")->check(CLI::PositiveNumber);
  app.add_option("--init-std", a.init_std, "std of the initial embeddings");
  app.add_option("--zipf", a.zipf, "id popularity exponent")->check(CLI::PositiveNumber);
  app.add_option("--train-size", a.train_size, "samples in the training stream")->check(CLI::PositiveNumber);
  app.add_option("--test-size", a.test_size, "test samples")->check(CLI::PositiveNumber);
  app.add_option("--eval-every", a.eval_every, "steps between test reports (worker 0)")->check(CLI::PositiveNumber);
  app.add_option("--staleness", a.staleness, "dist_ssp: staleness bound")->check(CLI::NonNegativeNumber);
  app.add_option("--threads", a.threads, "kernel threads per worker (0: OpenMP's default)")->check(CLI::NonNegativeNumber);
  app.add_option("--seed", a.seed, "data and initialisation seed");
  app.add_option("--scores-out", a.scores_out, "write the final test predictions here (CSV: probability,click)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& err) {
    return app.exit(err) == 0 ? 0 : 2;  // help, or a usage error (printed)
  }
  try {
    return run(a);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "loom_ctr: %s\n", e.what());
    return 1;
  }
}
