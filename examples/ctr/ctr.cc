// loom_ctr: a CTR-style model trained on the parameter servers. A large
// embedding table (key 0, [rows, dim]) lives on the servers and travels
// row-sparse: each step pulls only the rows its batch touches and pushes only
// their gradients. An MLP over the concatenated field embeddings (keys 1..4)
// is dense and goes through pushpull. The update rule runs on the servers.
//
//   loom_ctr --type local --steps 2000                                   # one process
//   loom launch --workers 2 --servers 2 -- loom_ctr --type dist_async    # 2 workers, 2 servers
//
// It is a train::Trainer built from parts: the model (a ServerEmbedding for
// the table + the MLP), a loader over this worker's shard of the click
// stream, binary cross-entropy, the optimizer spec the servers run, and a
// ParameterServerStrategy over the KVStore. Each step, per worker:
//   ids    = unique(batch rows), ascending          [U]
//   table  = row_sparse_pull(table, ids)            [U, dim]   (ServerEmbedding::forward)
//   logits = MLP(concat_f table[index[:, f]])       [B]        index: batch rows -> positions in ids
//   loss   = BCE-with-logits(logits, clicks) / W; backward
//   row_sparse_push(table, ids, table.grad)         only the U touched rows travel
//   pushpull(MLP grads -> MLP params)               (ParameterServerStrategy::step)
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
#include "loom/parallel/parameter_server_strategy.h"
#include "loom/parallel/server_embedding.h"
#include "loom/ps/kvstore.h"
#include "loom/train/trainer.h"

namespace {

using loom::core::Tensor;
namespace ops = loom::ops;
namespace nn = loom::nn;
namespace ps = loom::ps;
namespace io = loom::io;
namespace optim = loom::optim;
namespace parallel = loom::parallel;
namespace train = loom::train;
namespace data = loom::data;
using Clock = std::chrono::steady_clock;

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

// This worker's shard of the training stream as a Dataset: its k-th sample
// is stream sample (k / B) B W + r + (k % B) W, so batch s of worker r holds
// samples s B W + r, s B W + r + W, ... (the workers of one step share a
// contiguous block of B W samples). Inputs: i64 [F] table rows; target: the click.
class ClickShard final : public data::Dataset {
 public:
  ClickShard(const ctr::ClickData& data, int64_t samples, int64_t batch, int rank, int workers)
      : data_(data), samples_(samples), batch_(batch), rank_(rank), workers_(workers) {}
  int64_t size() const override { return samples_; }
  data::Sample get(int64_t index) const override {
    data::Batch b = get_batch({index});
    return {ops::reshape(b.inputs, {data_.fields()}), ops::reshape(b.targets, {})};
  }
  data::Batch get_batch(const std::vector<int64_t>& indices) const override {
    const auto n = static_cast<int64_t>(indices.size());
    std::vector<int64_t> rows(static_cast<size_t>(n * data_.fields()));
    std::vector<float> clicks(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      const int64_t k = indices[static_cast<size_t>(i)];
      LOOM_CHECK_T(IndexError, k >= 0 && k < samples_, "click shard: index {} out of range [0, {})", k, samples_);
      const auto index = static_cast<uint64_t>((k / batch_) * batch_ * workers_ + rank_ + (k % batch_) * workers_);
      clicks[static_cast<size_t>(i)] =
          data_.sample(ctr::Stream::Train, index, &rows[static_cast<size_t>(i * data_.fields())]);
    }
    return {Tensor::from_vector<int64_t>(rows, {n, data_.fields()}), Tensor::from_vector<float>(clicks, {n})};
  }

 private:
  const ctr::ClickData& data_;
  int64_t samples_, batch_;
  int rank_, workers_;
};

// The table on the servers (row-sparse) and the worker's MLP: i64 [B, F]
// table rows -> logits [B].
class CtrModel final : public nn::Module {
 public:
  CtrModel(const Args& a, uint64_t seed)
      : fields_(a.fields), dim_(a.dim),
        table_(register_module("table", parallel::ServerEmbedding({.rows = a.rows, .dim = a.dim,
                                                                   .init_std = a.init_std, .seed = a.seed + 2000}))),
        mlp_(register_module("mlp", nn::Sequential(nn::Linear({.in = a.fields * a.dim, .out = a.hidden, .seed = seed}),
                                                   nn::ReLU(), nn::Linear({.in = a.hidden, .out = 1, .seed = seed + 1})))) {}

  const parallel::ServerEmbedding& table() const { return *table_; }

  Tensor forward(const Tensor& rows) override {
    const int64_t b = rows.size(0);
    return ops::reshape((*mlp_)(ops::reshape((*table_)(rows), {b, fields_ * dim_})), {b});
  }

 private:
  int64_t fields_, dim_;
  std::shared_ptr<parallel::ServerEmbedding> table_;
  std::shared_ptr<nn::Sequential> mlp_;
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
Metrics evaluate(nn::Module& model, const Batch& test, int64_t fields) {
  loom::autograd::NoGradGuard no_grad;
  std::vector<double> probs;
  probs.reserve(static_cast<size_t>(test.size));
  constexpr int64_t kChunk = 4096;
  for (int64_t begin = 0; begin < test.size; begin += kChunk) {
    const int64_t n = std::min(kChunk, test.size - begin);
    const auto first = test.rows.begin() + begin * fields;
    Tensor rows = Tensor::from_vector<int64_t>(std::vector<int64_t>(first, first + n * fields), {n, fields});
    for (float z : model(rows).to_vector<float>()) probs.push_back(1.0 / (1.0 + std::exp(-double{z})));
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

size_t distinct(std::vector<int64_t> v) {
  std::sort(v.begin(), v.end());
  return static_cast<size_t>(std::unique(v.begin(), v.end()) - v.begin());
}

// Step timing, traffic and the periodic test report, from the Trainer's
// per-step callback. A step's time runs from the end of the previous
// callback (so it includes building the batch, but not evaluation); step 1
// is timed apart: the servers allocate the optimizer state (O(table)) on the first push.
struct Report {
  double first_step_seconds = 0, seconds = 0, sent = 0, received = 0, touched = 0, loss_sum = 0;
  double window_seconds = 0, window_sent = 0, window_received = 0, window_touched = 0;
  int64_t window_steps = 0, window_timed = 0;
  Clock::time_point last = Clock::now();
  ps::KVStoreStats before;
};

int run(const Args& a) {
  // The model's kernels are tiny; several workers and servers sharing a few
  // cores lose far more to spinning OpenMP threads than they gain.
  if (a.threads > 0) loom::core::set_num_threads(a.threads);
  ps::KVStoreOptions kv_options;
  kv_options.staleness = a.staleness;
  const io::Mode type = io::parse_mode(a.type).value();  // CLI11 checked the name
  auto strategy = std::make_shared<parallel::ParameterServerStrategy>(ps::KVStore::create(type, kv_options));
  ps::KVStore& kv = strategy->kv();
  const int rank = kv.rank(), workers = kv.num_workers();
  const bool lead = rank == 0;

  const ctr::ClickData data({.fields = a.fields, .rows = a.rows, .zipf = a.zipf, .seed = a.seed});
  auto model = std::make_shared<CtrModel>(a, a.seed + 1000);
  // Each worker's shard: whole steps of the stream, as many as it holds (then it repeats).
  const int64_t steps_in_stream = a.train_size / (a.batch * workers);
  LOOM_CHECK(steps_in_stream >= 1, "--train-size {} is smaller than one step of {} workers x {} samples", a.train_size,
             workers, a.batch);
  const int64_t steps_per_epoch = std::min(a.steps, steps_in_stream);
  auto shard = std::make_shared<ClickShard>(data, steps_per_epoch * a.batch, a.batch, rank, workers);

  const double table_bytes = static_cast<double>(a.rows * a.dim) * 4;
  Batch test;
  if (lead) {
    test = make_batch(data, ctr::Stream::Test, 0, a.test_size, 1, static_cast<uint64_t>(a.test_size));
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
                static_cast<long long>(test.size), ctr_rate, distinct(test.rows), oracle.logloss, oracle.auc);
    std::fflush(stdout);
  }

  Report rep;
  auto on_step_end = [&](const train::StepReport& r) {
    const double dt = std::chrono::duration<double>(Clock::now() - rep.last).count();
    const ps::KVStoreStats after = kv.stats();
    const auto ds = static_cast<double>(after.bytes_sent - rep.before.bytes_sent);
    const auto dr = static_cast<double>(after.bytes_received - rep.before.bytes_received);
    rep.before = after;
    if (r.step == 1) {
      rep.first_step_seconds = dt;
    } else {
      rep.seconds += dt, rep.window_seconds += dt;
      ++rep.window_timed;
    }
    const auto u = static_cast<double>(model->table().rows_pulled());
    rep.sent += ds, rep.received += dr, rep.touched += u;
    rep.window_sent += ds, rep.window_received += dr, rep.window_touched += u;
    rep.loss_sum += r.loss;
    ++rep.window_steps;
    if (lead && r.step % a.eval_every == 0 && r.step != a.steps) {
      const Metrics m = evaluate(*model, test, a.fields);
      const double n = static_cast<double>(rep.window_steps);
      std::printf("step %6lld  train loss %.4f  test logloss %.4f  AUC %.4f  | %.0f rows/step, sent %s/step, "
                  "received %s/step (table %s) | %.1f steps/s\n",
                  static_cast<long long>(r.step), rep.loss_sum / n, m.logloss, m.auc, rep.window_touched / n,
                  human_bytes(rep.window_sent / n).c_str(), human_bytes(rep.window_received / n).c_str(),
                  human_bytes(table_bytes).c_str(),
                  rep.window_timed > 0 ? static_cast<double>(rep.window_timed) / rep.window_seconds : 0.0);
      std::fflush(stdout);
    }
    if (r.step % a.eval_every == 0) {
      rep.loss_sum = rep.window_seconds = rep.window_sent = rep.window_received = rep.window_touched = 0;
      rep.window_steps = rep.window_timed = 0;
    }
    rep.before = kv.stats();  // evaluation's pulls are not a step's traffic
    rep.last = Clock::now();
  };

  // The servers run the optimizer; each worker's loss counts 1/W of the
  // step's global batch, so dist_sync's sum is the mean over all workers.
  train::Trainer trainer(
      {.model = model,
       .train_loader = std::make_shared<data::DataLoader>(shard, data::LoaderOptions{.batch_size = a.batch}),
       .loss = [](const Tensor& logits, const Tensor& clicks) {
         return ops::binary_cross_entropy_with_logits(logits, clicks);
       },
       .optimizer = {.rule = optim::parse_rule(a.optimizer).value(), .lr = a.lr},
       .strategy = strategy,
       .per_rank_batches = true,
       .source = "loom_ctr"},
      io::TrainConfig{.epochs = (a.steps + steps_per_epoch - 1) / steps_per_epoch, .max_steps = a.steps,
                      .eval_interval = 0},
      {.log = nullptr, .on_step_end = on_step_end});
  rep.before = kv.stats();
  rep.last = Clock::now();
  trainer.fit();  // ends at a barrier: every worker's updates are in before the final evaluation

  const double n = static_cast<double>(a.steps);
  const double steps_per_s = a.steps > 1 ? (n - 1) / rep.seconds : 1 / rep.first_step_seconds;
  std::printf("worker %d: %lld steps, %.1f steps/s after the first (%.3f s), %.0f rows/step, sent %s/step, "
              "received %s/step\n", rank, static_cast<long long>(a.steps), steps_per_s, rep.first_step_seconds,
              rep.touched / n, human_bytes(rep.sent / n).c_str(), human_bytes(rep.received / n).c_str());
  std::fflush(stdout);
  if (lead) {
    const Metrics m = evaluate(*model, test, a.fields);
    std::printf("final: test logloss %.4f  AUC %.4f\n", m.logloss, m.auc);
    if (!a.scores_out.empty()) write_scores(a.scores_out, m.probs, test.clicks);
    std::printf("result: type=%s workers=%d steps=%lld auc=%.4f logloss=%.4f steps_per_s=%.2f first_step_s=%.3f "
                "rows_per_step=%.0f sent_per_step=%.0f received_per_step=%.0f table_bytes=%.0f\n",
                a.type.c_str(), workers, static_cast<long long>(a.steps), m.auc, m.logloss, steps_per_s,
                rep.first_step_seconds, rep.touched / n, rep.sent / n, rep.received / n, table_bytes);
    std::fflush(stdout);
  }
  strategy->finish();  // closes the store: waits for every worker, so the servers stay up until worker 0 has evaluated
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
