#include "loom/train/trainer.h"

#include <chrono>
#include <cmath>
#include <cinttypes>

#include "loom/autograd/engine.h"
#include "loom/core/parallel.h"
#include "loom/data/data.h"
#include "loom/nn/nn.h"
#include "loom/ops/ops.h"
#include "loom/train/metrics_log.h"
#include "loom/train/progress.h"
#include "loom/train/tensorboard.h"
#include "loom/train/zoo.h"

namespace loom::train {
namespace {

using core::Tensor;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// IDX images become f32 [N, 1, H, W] in [0, 1]; labels i64.
data::TensorDataset idx_dataset(const std::string& images_path, const std::string& labels_path) {
  Tensor images = data::read_idx(images_path);
  Tensor labels = data::read_idx(labels_path);
  LOOM_CHECK_T(IoError, images.dim() >= 2 && labels.dim() == 1 && images.size(0) == labels.size(0),
               "{} and {}: {} images of shape {} do not match {} labels", images_path, labels_path,
               images.dim() ? images.size(0) : 0, core::to_string(images.shape()), labels.dim() ? labels.size(0) : 0);
  Tensor x = ops::to_dtype(images, core::DType::F32);
  if (images.dtype() == core::DType::U8) x = ops::mul(x, 1.0 / 255.0);
  if (x.dim() == 3) x = ops::unsqueeze(x, 1);
  return data::TensorDataset(x, ops::to_dtype(labels, core::DType::I64));
}

std::string join_root(const std::string& root, const std::string& file) {
  if (file.empty() || file.front() == '/' || root.empty()) return file;
  return (std::filesystem::path(root) / file).string();
}

std::pair<std::shared_ptr<data::Dataset>, std::shared_ptr<data::Dataset>> load_data(const io::DataConfig& d,
                                                                                   const std::string& job) {
  if (d.dataset == "fashion-mnist") {
    return {std::make_shared<data::TensorDataset>(data::load_fashion_mnist(d.root, true)),
            std::make_shared<data::TensorDataset>(data::load_fashion_mnist(d.root, false))};
  }
  LOOM_CHECK_T(ConfigError, !d.train_file.empty() && !d.test_file.empty(),
               "{}: [data] dataset '{}' needs 'train_file' and 'test_file'", job, d.dataset);
  if (d.dataset == "idx") {
    LOOM_CHECK_T(ConfigError, !d.train_labels.empty() && !d.test_labels.empty(),
                 "{}: [data] dataset 'idx' needs 'train_labels' and 'test_labels'", job);
    return {std::make_shared<data::TensorDataset>(idx_dataset(join_root(d.root, d.train_file), join_root(d.root, d.train_labels))),
            std::make_shared<data::TensorDataset>(idx_dataset(join_root(d.root, d.test_file), join_root(d.root, d.test_labels)))};
  }
  data::CsvOptions o;
  if (!d.label_column.empty()) {
    bool numeric = d.label_column.find_first_not_of("0123456789") == std::string::npos;
    o.label_column = numeric ? data::CsvColumn(static_cast<int64_t>(std::stoll(d.label_column))) : data::CsvColumn(d.label_column);
  }
  return {std::make_shared<data::TensorDataset>(data::read_csv(join_root(d.root, d.train_file), o)),
          std::make_shared<data::TensorDataset>(data::read_csv(join_root(d.root, d.test_file), o))};
}

int64_t count_classes(const data::Dataset& ds) {
  const auto* td = dynamic_cast<const data::TensorDataset*>(&ds);
  LOOM_CHECK_T(ConfigError, td && td->targets().defined() && td->targets().dtype() == core::DType::I64,
               "the training set needs integer class labels");
  LOOM_CHECK_T(ConfigError, td->targets().numel() > 0, "the training set is empty");
  const int64_t min_label = ops::min(td->targets()).item<int64_t>();
  LOOM_CHECK_T(ConfigError, min_label >= 0, "class labels must be >= 0, found {}", min_label);
  return ops::max(td->targets()).item<int64_t>() + 1;
}

// The job's optimizer with the run's length filled in: schedules in epochs
// count steps_per_epoch steps each, cosine anneals to the last step.
optim::OptimizerSpec run_optimizer_spec(const io::JobConfig& job, int64_t steps_per_epoch) {
  optim::OptimizerSpec spec = job.optimizer;
  int64_t total = job.train.epochs * steps_per_epoch;
  if (job.train.max_steps > 0) total = std::min(total, job.train.max_steps);
  spec.schedule.steps_per_epoch = std::max<int64_t>(1, steps_per_epoch);
  spec.schedule.total_steps = std::max<int64_t>(1, total);
  return spec;
}

int64_t metadata_int(const io::Metadata& m, const std::string& key, const std::string& file) {
  auto it = m.find(key);
  LOOM_CHECK_T(IoError, it != m.end(), "{}: checkpoint metadata has no '{}' (not a Loom training checkpoint?)", file, key);
  try {
    size_t used = 0;
    int64_t v = std::stoll(it->second, &used);
    if (used == it->second.size() && v >= 0) return v;
  } catch (const std::exception&) {
  }
  throw IoError(format("{}: checkpoint metadata '{}' = '{}' is not a non-negative integer", file, key, it->second));
}

}  // namespace

Trainer::Trainer(io::JobConfig job, TrainerOptions options) : job_(std::move(job)), options_(std::move(options)) {
  if (job_.train.threads > 0) core::set_num_threads(static_cast<int>(job_.train.threads));
  auto [train_set, test_set] = load_data(job_.data, job_.path);
  train_set_ = train_set;
  test_set_ = test_set;
  num_classes_ = count_classes(*train_set_);

  data::LoaderOptions lo{.batch_size = job_.data.batch_size, .shuffle = job_.data.shuffle, .seed = job_.train.seed,
                         .drop_last = job_.data.drop_last, .num_workers = static_cast<int>(job_.data.num_workers)};
  if (job_.data.augment) {
    const core::Shape s = train_set_->get(0).input.shape();
    LOOM_CHECK_T(ConfigError, s.size() == 3, "{}: [data] augment needs image inputs [C, H, W], got {}", job_.path,
                 core::to_string(s));
    lo.transforms.push_back(std::make_shared<data::RandomCrop>(s[1], 2));
    lo.transforms.push_back(std::make_shared<data::RandomHorizontalFlip>(0.5));
  }
  data::LoaderOptions eval_lo{.batch_size = job_.data.test_batch_size, .num_workers = static_cast<int>(job_.data.num_workers)};
  if (!job_.data.mean.empty()) {
    auto norm = std::make_shared<data::Normalize>(job_.data.mean, job_.data.std);
    lo.transforms.push_back(norm);
    eval_lo.transforms.push_back(norm);
  }
  train_loader_ = std::make_unique<data::DataLoader>(train_set_, lo);
  test_loader_ = std::make_unique<data::DataLoader>(test_set_, eval_lo);

  model_ = build_model(job_.model, train_set_->get(0).input.shape(), num_classes_);
  const optim::OptimizerSpec spec = run_optimizer_spec(job_, train_loader_->num_batches());
  if (options_.distributed) {
    if (options_.distributed->rank() != 0) options_.log = nullptr;  // rank 0 reports for the job
    options_.distributed->set_optimizer(spec);
    options_.distributed->attach(*model_);
  }
  optimizer_ = std::make_unique<optim::Optimizer>(optim::make_optimizer(model_->named_parameters(), spec));
  scheduler_ = std::make_unique<optim::LRScheduler>(*optimizer_, optim::make_schedule(spec), 0);

  std::string dir = options_.checkpoint_dir.empty() ? job_.train.checkpoint_dir : options_.checkpoint_dir;
  if (!dir.empty()) {
    checkpoints_ = std::make_unique<io::CheckpointManager>(dir, io::CheckpointOptions{.keep_last = static_cast<int>(job_.train.checkpoint_keep)});
  }
}

Trainer::~Trainer() = default;

void Trainer::log(const std::string& line) const {
  if (options_.log) {
    std::fprintf(options_.log, "%s\n", line.c_str());
    std::fflush(options_.log);
  }
}

double Trainer::train_one_epoch(int64_t epoch) {
  if (train_loader_->position().epoch != epoch) train_loader_->set_epoch(epoch);
  const int64_t first = train_loader_->position().next_batch;
  const int64_t total = train_loader_->num_batches();
  model_->train();
  std::optional<ProgressBar> bar;
  if (options_.log) {
    bar.emplace(options_.log, ProgressOptions{.total_steps = total, .label = format("epoch {}/{}", epoch + 1, job_.train.epochs),
                                              .interactive = options_.interactive});
    if (first > 0) bar->update(first, 0);
  }
  double loss_sum = 0.0;
  int64_t batches = 0;
  while (job_.train.max_steps == 0 || step_ < job_.train.max_steps) {
    std::optional<data::Batch> batch = train_loader_->next();
    if (!batch) break;
    const double l = train_step(*batch);
    ++step_;
    LOOM_CHECK(std::isfinite(l), "training diverged: loss is {} at step {} (lower [optimizer] lr?)", l, step_);
    loss_sum += l;
    ++batches;
    if (bar) {
      char status[32];
      std::snprintf(status, sizeof status, "loss %.4f", l);
      bar->step(batch->inputs.size(0), status);
    }
  }
  if (bar) {
    char status[32];
    std::snprintf(status, sizeof status, "loss %.4f", batches ? loss_sum / static_cast<double>(batches) : 0.0);
    bar->finish(status);
  }
  return batches ? loss_sum / static_cast<double>(batches) : last_train_loss_;
}

// One optimizer step on `batch` (this rank's rows of it when distributed);
// returns the loss of the rows this process trained on.
double Trainer::train_step(const data::Batch& batch) {
  const ops::CrossEntropyOptions ce{.label_smoothing = job_.train.label_smoothing};
  optimizer_->zero_grad();
  DistributedContext* dist = options_.distributed;
  double loss_value = 0.0;
  if (!dist) {
    Tensor loss = ops::cross_entropy((*model_)(batch.inputs), batch.targets, ce);
    autograd::backward(loss);
    loss_value = loss.item<double>();
  } else {
    const int64_t global = batch.inputs.size(0);
    const int64_t r = dist->rank(), n = dist->world_size();
    const int64_t begin = global * r / n, end = global * (r + 1) / n;
    if (end > begin) {
      Tensor x = ops::slice(batch.inputs, 0, begin, end), y = ops::slice(batch.targets, 0, begin, end);
      if (dist->deterministic()) {
        // One sample at a time, each scaled to its share of the global mean.
        const ops::CrossEntropyOptions ce_sum{.reduction = ops::Reduction::Sum, .label_smoothing = ce.label_smoothing};
        for (int64_t i = 0; i < end - begin; ++i) {
          Tensor loss = ops::cross_entropy((*model_)(ops::slice(x, 0, i, i + 1)), ops::slice(y, 0, i, i + 1), ce_sum);
          autograd::backward(ops::mul(loss, 1.0 / static_cast<double>(global)));
          dist->accumulate_micro_batch();
          loss_value += loss.item<double>() / static_cast<double>(end - begin);
        }
      } else {
        Tensor loss = ops::cross_entropy((*model_)(x), y, ce);
        autograd::backward(ops::mul(loss, static_cast<double>(end - begin) / static_cast<double>(global)));
        loss_value = loss.item<double>();
      }
    }
    dist->finish_gradients();
  }
  if (dist && dist->applies_update()) {
    dist->apply_update();
  } else {
    optimizer_->step();
  }
  scheduler_->step();  // also when the servers update: the reported lr stays true
  return loss_value;
}

ClassificationResult Trainer::evaluate() {
  autograd::NoGradGuard no_grad;
  model_->eval();
  ClassificationMetrics metrics(num_classes_);
  test_loader_->set_epoch(0);
  while (auto batch = test_loader_->next()) {
    Tensor logits = (*model_)(batch->inputs);
    Tensor loss_sum = ops::cross_entropy(logits, batch->targets, {.reduction = ops::Reduction::Sum});
    metrics.update(logits, batch->targets, loss_sum.item<double>());
  }
  model_->train();
  return metrics.result();
}

EpochReport Trainer::fit() {
  const auto t0 = Clock::now();
  std::unique_ptr<MetricsLog> jsonl;
  std::string metrics_path = options_.metrics_out.empty() ? job_.train.metrics_out : options_.metrics_out;
  if (!metrics_path.empty() && is_main()) jsonl = std::make_unique<MetricsLog>(metrics_path, OpenMode::Append);
  std::unique_ptr<TensorBoardWriter> tb;
  if (!job_.train.tensorboard_dir.empty() && is_main()) tb = std::make_unique<TensorBoardWriter>(job_.train.tensorboard_dir);

  EpochReport report;
  const int64_t epochs = job_.train.epochs;
  for (int64_t epoch = train_loader_->position().epoch; epoch < epochs; ++epoch) {
    const auto te = Clock::now();
    const int64_t step_before = step_;
    const int64_t first_batch = train_loader_->position().epoch == epoch ? train_loader_->position().next_batch : 0;
    report = EpochReport{};
    report.train_loss = last_train_loss_ = train_one_epoch(epoch);
    const bool stopped = job_.train.max_steps > 0 && step_ >= job_.train.max_steps;
    const bool finished_epoch = train_loader_->position().epoch > epoch;
    report.epoch = epoch + 1;
    report.step = step_;
    report.lr = optimizer_->lr();
    report.epoch_s = seconds_since(te);
    report.wall_s = seconds_since(t0);
    const int64_t batches = step_ - step_before;
    const int64_t bs = job_.data.batch_size;
    const int64_t samples = std::min<int64_t>(batches * bs, std::max<int64_t>(0, train_set_->size() - first_batch * bs));
    report.samples_per_s = report.epoch_s > 0 ? static_cast<double>(samples) / report.epoch_s : 0.0;
    const bool last = stopped || epoch + 1 == epochs;
    if (is_main() && (last || (job_.train.eval_interval > 0 && (epoch + 1) % job_.train.eval_interval == 0))) {
      report.test = evaluate();
      report.wall_s = seconds_since(t0);
    }
    std::string line = format("epoch {}/{}: step {}, train loss {}, {} samples/s", epoch + 1, epochs, step_,
                              report.train_loss, static_cast<int64_t>(report.samples_per_s));
    if (report.test) line += format(", test loss {}, test accuracy {}%", report.test->loss, report.test->accuracy * 100.0);
    log(line);
    if (jsonl) {
      LogRecord rec{{"epoch", report.epoch}, {"step", report.step}, {"train_loss", report.train_loss}};
      if (report.test) rec.add(report.test->as_map("test_"));
      rec.add("lr", report.lr).add("samples_per_s", report.samples_per_s).add("epoch_s", report.epoch_s).add("wall_s", report.wall_s);
      jsonl->write(rec);
    }
    if (tb) {
      tb->add_scalar("train/loss", report.train_loss, step_);
      tb->add_scalar("train/lr", report.lr, step_);
      tb->add_scalar("train/samples_per_s", report.samples_per_s, step_);
      if (report.test) {
        for (const auto& [k, v] : report.test->as_map("test/")) tb->add_scalar(k, v, step_);
      }
      tb->flush();
    }
    if (checkpoints_ && is_main() && (last || (epoch + 1) % job_.train.checkpoint_every == 0 || !finished_epoch)) {
      log(format("checkpoint: {}", save_checkpoint().string()));
    }
    if (options_.on_epoch_end) options_.on_epoch_end(report);
    if (stopped) break;
  }
  if (options_.distributed) options_.distributed->barrier();
  return report;
}

io::NamedTensors Trainer::checkpoint_tensors() const {
  io::NamedTensors out;
  for (const auto& [name, t] : model_->state_dict()) out.emplace_back("model." + name, t);
  for (const auto& [name, t] : optimizer_->state_dict()) out.emplace_back("optim." + name, t);
  return out;
}

io::Metadata Trainer::checkpoint_metadata() const {
  io::Metadata m{{"format", "pt"},  // what PyTorch's safetensors loader expects
                 {"loom.version", "1"},
                 {"loom.step", std::to_string(step_)},
                 {"loom.loader_epoch", std::to_string(train_loader_->position().epoch)},
                 {"loom.loader_batch", std::to_string(train_loader_->position().next_batch)},
                 {"loom.job", job_.path}};
  for (auto& [name, mod] : model_->named_modules()) {
    if (auto* d = dynamic_cast<nn::Dropout*>(mod)) {
      m["loom.rng." + name] = format("{},{}", d->generator().seed(), d->generator().offset());
    }
  }
  return m;
}

std::filesystem::path Trainer::save_checkpoint() {
  LOOM_CHECK(checkpoints_ != nullptr, "save_checkpoint: no checkpoint directory (set [train] checkpoint_dir or --checkpoint-dir)");
  io::NamedTensors tensors = checkpoint_tensors();
  io::Metadata meta = checkpoint_metadata();
  if (options_.distributed) options_.distributed->add_checkpoint_state(tensors, meta);
  return checkpoints_->save(step_, tensors, meta);
}

namespace {

// Resuming without parameter servers from a checkpoint of a run with them
// would drop the servers' optimizer state (momentum, Adam moments): refused.
void refuse_server_state(const io::SafetensorsFile& file, const std::string& source) {
  for (const auto& [name, t] : file.tensors) {
    LOOM_CHECK_T(IoError, name.rfind(kServerStatePrefix, 0) != 0,
                 "{}: the checkpoint holds parameter-server state ('{}'): resume it with the [distributed] mode it was "
                 "written in (dist_sync, dist_async or dist_ssp)", source, name);
  }
}

}  // namespace

void DistributedContext::restore_checkpoint_state(const io::SafetensorsFile& file, const std::string& source) {
  refuse_server_state(file, source);
}

bool Trainer::resume_from_latest() {
  LOOM_CHECK(checkpoints_ != nullptr, "resume: no checkpoint directory (set [train] checkpoint_dir or --checkpoint-dir)");
  auto latest = checkpoints_->latest();
  if (!latest) return false;
  load_checkpoint(*latest);
  return true;
}

void Trainer::load_checkpoint(const std::filesystem::path& path) {
  io::SafetensorsFile f = io::read_safetensors(path);
  const std::string file = path.string();
  nn::StateDict model_state;
  io::NamedTensors optim_state;
  for (const auto& [name, t] : f.tensors) {
    if (name.rfind("model.", 0) == 0) model_state.insert(name.substr(6), t);
    else if (name.rfind("optim.", 0) == 0) optim_state.emplace_back(name.substr(6), t);
    else if (name.rfind(kServerStatePrefix, 0) != 0)  // the distributed context's, below
      throw IoError(format("{}: unexpected tensor '{}' (expected model.*, optim.* and servers.*)", file, name));
  }
  const int64_t step = metadata_int(f.metadata, "loom.step", file);
  const data::LoaderPosition pos{metadata_int(f.metadata, "loom.loader_epoch", file),
                                 metadata_int(f.metadata, "loom.loader_batch", file)};
  try {
    model_->load_state_dict(model_state);
    optimizer_->load_state_dict(optim_state);
    train_loader_->set_position(pos);
  } catch (const ValueError& e) {
    throw IoError(format("{}: the checkpoint does not fit this job's model: {}", file, e.what()));
  }
  for (auto& [name, mod] : model_->named_modules()) {
    auto* d = dynamic_cast<nn::Dropout*>(mod);
    if (!d) continue;
    auto it = f.metadata.find("loom.rng." + name);
    LOOM_CHECK_T(IoError, it != f.metadata.end(), "{}: no RNG state for dropout '{}'", file, name);
    unsigned long long seed = 0, offset = 0;
    LOOM_CHECK_T(IoError, std::sscanf(it->second.c_str(), "%llu,%llu", &seed, &offset) == 2,
                 "{}: bad RNG state '{}' for '{}'", file, it->second, name);
    d->generator().set_state(seed, offset);
  }
  step_ = step;
  scheduler_ = std::make_unique<optim::LRScheduler>(
      *optimizer_, optim::make_schedule(run_optimizer_spec(job_, train_loader_->num_batches())), step_);
  if (options_.distributed) {
    options_.distributed->restore_checkpoint_state(f, file);
  } else {
    refuse_server_state(f, file);
  }
}

void Trainer::save_model(const std::filesystem::path& path) const {
  io::NamedTensors tensors;
  for (const auto& [name, t] : model_->state_dict()) tensors.emplace_back(name, t);
  io::write_safetensors(path, tensors, {{"format", "pt"}, {"loom.job", job_.path}});
}

void Trainer::load_model(const std::filesystem::path& path) {
  io::SafetensorsFile f = io::read_safetensors(path);
  nn::StateDict state;
  bool full_checkpoint = f.metadata.count("loom.step") > 0;
  for (const auto& [name, t] : f.tensors) {
    if (!full_checkpoint) state.insert(name, t);
    else if (name.rfind("model.", 0) == 0) state.insert(name.substr(6), t);
  }
  try {
    model_->load_state_dict(state);
  } catch (const ValueError& e) {
    throw IoError(format("{}: the weights do not fit this job's model: {}", path.string(), e.what()));
  }
}

}  // namespace loom::train
