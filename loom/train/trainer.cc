#include "loom/train/trainer.h"

#include <chrono>
#include <cmath>
#include <cinttypes>

#include "loom/autograd/engine.h"
#include "loom/core/parallel.h"
#include "loom/core/stop_signals.h"
#include "loom/data/data.h"
#include "loom/nn/nn.h"
#include "loom/ops/ops.h"
#include "loom/train/metrics_log.h"
#include "loom/train/legacy_checkpoint.h"
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

// Byte-level language modelling ([data] dataset = "text", [model] name = "gpt"):
// windows of the corpus, split by position, and per-token cross entropy.
TrainerParts language_model_parts(const io::JobConfig& job, std::shared_ptr<Strategy> strategy) {
  const io::DataConfig& d = job.data;
  const int64_t context = d.context > 0 ? d.context : job.model.context;
  std::shared_ptr<const data::ByteCorpus> corpus;
  data::ByteSplit split;
  try {
    corpus = data::read_byte_corpus(d.files);
  } catch (const IoError& e) {
    throw ConfigError(format("{}: [data] 'files': {}", job.path, e.what()));
  }
  try {
    split = data::split_byte_windows(corpus, {.context = context, .stride = d.stride, .val_fraction = d.val_fraction});
  } catch (const ValueError& e) {
    const std::string which = d.context > 0 ? format("{}", context) : format("0: [model] context {}", context);
    throw ConfigError(format("{}: [data] 'context' ({}): {}", job.path, which, e.what()));
  }
  const data::LoaderOptions lo{.batch_size = d.batch_size, .shuffle = d.shuffle, .seed = job.train.seed,
                               .drop_last = d.drop_last, .num_workers = static_cast<int>(d.num_workers)};
  const data::LoaderOptions eval_lo{.batch_size = d.test_batch_size, .num_workers = static_cast<int>(d.num_workers)};
  const ops::CrossEntropyOptions ce{.label_smoothing = job.train.label_smoothing};
  constexpr int64_t kByteVocab = 256;
  return {.model = build_model(job.model, {context}, kByteVocab),
          .train_loader = std::make_shared<data::DataLoader>(split.train, lo),
          .test_loader = std::make_shared<data::DataLoader>(split.val, eval_lo),
          .loss = [ce](const Tensor& out, const Tensor& y) {  // [B, T, V] against [B, T]: one row per token
            return ops::cross_entropy(ops::reshape(out, {y.numel(), out.size(-1)}), ops::reshape(y, {y.numel()}), ce);
          },
          .optimizer = job.optimizer,
          .strategy = std::move(strategy),
          .task = Task::LanguageModel,
          .source = job.path};
}

// The job file's parts: data, loaders, model, loss, optimizer.
TrainerParts parts_from_job(const io::JobConfig& job, std::shared_ptr<Strategy> strategy) {
  if (job.train.threads > 0) core::set_num_threads(static_cast<int>(job.train.threads));
  if (job.data.dataset == "text") return language_model_parts(job, std::move(strategy));
  auto [train_set, test_set] = load_data(job.data, job.path);
  const int64_t num_classes = count_classes(*train_set);

  data::LoaderOptions lo{.batch_size = job.data.batch_size, .shuffle = job.data.shuffle, .seed = job.train.seed,
                         .drop_last = job.data.drop_last, .num_workers = static_cast<int>(job.data.num_workers)};
  if (job.data.augment) {
    const core::Shape s = train_set->get(0).input.shape();
    LOOM_CHECK_T(ConfigError, s.size() == 3, "{}: [data] augment needs image inputs [C, H, W], got {}", job.path,
                 core::to_string(s));
    lo.transforms.push_back(std::make_shared<data::RandomCrop>(s[1], 2));
    lo.transforms.push_back(std::make_shared<data::RandomHorizontalFlip>(0.5));
  }
  data::LoaderOptions eval_lo{.batch_size = job.data.test_batch_size, .num_workers = static_cast<int>(job.data.num_workers)};
  if (!job.data.mean.empty()) {
    auto norm = std::make_shared<data::Normalize>(job.data.mean, job.data.std);
    lo.transforms.push_back(norm);
    eval_lo.transforms.push_back(norm);
  }
  const ops::CrossEntropyOptions ce{.label_smoothing = job.train.label_smoothing};
  return {.model = build_model(job.model, train_set->get(0).input.shape(), num_classes),
          .train_loader = std::make_shared<data::DataLoader>(train_set, lo),
          .test_loader = std::make_shared<data::DataLoader>(test_set, eval_lo),
          .loss = [ce](const Tensor& out, const Tensor& y) { return ops::cross_entropy(out, y, ce); },
          .optimizer = job.optimizer,
          .strategy = std::move(strategy),
          .num_classes = num_classes,
          .source = job.path};
}

}  // namespace

Trainer::Trainer(const io::JobConfig& job, TrainerOptions options, std::shared_ptr<Strategy> strategy)
    : Trainer(parts_from_job(job, std::move(strategy)), job.train, std::move(options)) {}

Trainer::Trainer(TrainerParts parts, io::TrainConfig loop, TrainerOptions options)
    : parts_(std::move(parts)), loop_(std::move(loop)), options_(std::move(options)) {
  LOOM_CHECK(parts_.model && parts_.train_loader && parts_.loss, "Trainer: the parts need a model, a train loader and a loss");
  if (!parts_.strategy) parts_.strategy = std::make_shared<LocalStrategy>();
  if (!is_main()) options_.log = nullptr;  // rank 0 reports for the job
  const optim::OptimizerSpec spec = run_optimizer_spec();
  parts_.strategy->attach(*parts_.model, spec);
  optimizer_ = std::make_unique<optim::Optimizer>(optim::make_optimizer(parts_.model->named_parameters(), spec));
  scheduler_ = std::make_unique<optim::LRScheduler>(*optimizer_, optim::make_schedule(spec), 0);

  std::string dir = options_.checkpoint_dir.empty() ? loop_.checkpoint_dir : options_.checkpoint_dir;
  if (!dir.empty()) {
    checkpoints_ = std::make_unique<io::CheckpointManager>(dir, io::CheckpointOptions{.keep_last = static_cast<int>(loop_.checkpoint_keep)});
    if (loop_.checkpoint_async && is_main()) writer_ = std::make_unique<io::AsyncCheckpointWriter>(*checkpoints_);
  }
  policy_ = CheckpointPolicy::from(loop_);
  voting_ = !loop_.stop_signals.empty() || policy_.every_steps > 0 || policy_.every_minutes > 0;
  last_checkpoint_ = Clock::now();
}

// The optimizer with the run's length filled in: schedules in epochs count
// steps_per_epoch steps each, cosine anneals to the last step.
optim::OptimizerSpec Trainer::run_optimizer_spec() const {
  const int64_t steps_per_epoch = parts_.train_loader->num_batches();
  optim::OptimizerSpec spec = parts_.optimizer;
  int64_t total = loop_.epochs * steps_per_epoch;
  if (loop_.max_steps > 0) total = std::min(total, loop_.max_steps);
  spec.schedule.steps_per_epoch = std::max<int64_t>(1, steps_per_epoch);
  spec.schedule.total_steps = std::max<int64_t>(1, total);
  return spec;
}

Trainer::~Trainer() = default;

void Trainer::log(const std::string& line) const {
  if (options_.log) {
    std::fprintf(options_.log, "%s\n", line.c_str());
    std::fflush(options_.log);
  }
}

double Trainer::train_one_epoch(int64_t epoch) {
  if (parts_.train_loader->position().epoch != epoch) parts_.train_loader->set_epoch(epoch);
  const int64_t first = parts_.train_loader->position().next_batch;
  const int64_t total = parts_.train_loader->num_batches();
  parts_.model->train();
  std::optional<ProgressBar> bar;
  if (options_.log) {
    bar.emplace(options_.log, ProgressOptions{.total_steps = total, .label = format("epoch {}/{}", epoch + 1, loop_.epochs),
                                              .interactive = options_.interactive});
    if (first > 0) bar->update(first, 0);
  }
  double loss_sum = 0.0;
  int64_t batches = 0;
  while (loop_.max_steps == 0 || step_ < loop_.max_steps) {
    std::optional<data::Batch> batch = parts_.train_loader->next();
    if (!batch) break;
    const double l = train_step(*batch);
    ++step_;
    LOOM_CHECK(std::isfinite(l), "training diverged: loss is {} at step {} (lower [optimizer] lr?)", l, step_);
    loss_sum += l;
    ++batches;
    if (options_.on_step_end) options_.on_step_end({.step = step_, .loss = l});
    if (bar) {
      char status[32];
      std::snprintf(status, sizeof status, "loss %.4f", l);
      bar->step(batch->inputs.size(0), status);
    }
    if (take_step_requests()) break;
  }
  if (bar) {
    char status[32];
    std::snprintf(status, sizeof status, "loss %.4f", batches ? loss_sum / static_cast<double>(batches) : 0.0);
    bar->finish(status);
  }
  return batches ? loss_sum / static_cast<double>(batches) : last_train_loss_;
}

// After a step: the ranks vote on a stop (a signal on any of them) and on a
// checkpoint (the main rank's step or time interval), and all of them
// checkpoint here if either passed; true when training stops here. A stop
// waits for its checkpoint to be on disk.
bool Trainer::take_step_requests() {
  if (!voting_) return false;
  const double minutes = std::chrono::duration<double>(Clock::now() - last_checkpoint_).count() / 60.0;
  const StepVote mine{.stop = !loop_.stop_signals.empty() && core::stop_requested(),
                      .checkpoint = is_main() && checkpoints_ && policy_.due_after_step(step_, minutes)};
  return act_on(parts_.strategy->vote(mine));
}

// After the last step: events the ranks agreed on that this rank has not
// acted on yet (Strategy::final_vote); true when one of them was a stop.
bool Trainer::take_final_requests() {
  if (!voting_) return false;
  while (const std::optional<StepVote> v = parts_.strategy->final_vote()) {
    if (act_on(*v)) return true;
  }
  return false;
}

// What every rank does with the agreed vote; true for a stop.
bool Trainer::act_on(const StepVote& all) {
  if (all.stop) preempted_ = true;
  if (checkpoints_ && (all.stop || all.checkpoint)) {
    write_checkpoint();
    if (all.stop) wait_for_checkpoint();
    parts_.strategy->barrier(eval_timeout());
  }
  return all.stop;
}

// Every rank: the strategy brings the whole model and optimizer state to the
// main rank, which saves it, or copies it for the background writer.
void Trainer::write_checkpoint() {
  parts_.strategy->gather(*parts_.model, optimizer_.get());
  last_checkpoint_ = Clock::now();
  last_checkpoint_step_ = step_;
  if (!is_main()) return;
  if (!writer_) {
    last_checkpoint_path_ = save_checkpoint();
    log(format("checkpoint: {}", last_checkpoint_path_->string()));
    return;
  }
  CheckpointContents c = checkpoint_contents();
  // The model's tensors are copied (the next step updates them); the optimizer's state is a snapshot already.
  const auto optimizer_state = [](const std::string& name) { return name.starts_with("optim."); };
  writer_->submit(step_, io::snapshot(c.tensors, optimizer_state), std::move(c.metadata));
  last_checkpoint_path_ = checkpoints_->path_for(step_);
  log(format("checkpoint: {} (writing in the background)", last_checkpoint_path_->string()));
}

// The main rank: until the background write (if any) is on disk; its error, if it failed.
void Trainer::wait_for_checkpoint() {
  if (writer_) writer_->wait();
}

// One optimizer step on `batch` (this rank's rows of it when distributed);
// returns the loss of the rows this process trained on.
double Trainer::train_step(const data::Batch& batch) {
  Strategy& strategy = *parts_.strategy;
  const StepBatch mine = parts_.per_rank_batches
                             ? StepBatch{batch.inputs, batch.targets, batch.size() * strategy.data_world_size()}
                             : share_of_batch(batch, strategy.data_rank(), strategy.data_world_size());
  StepParts step_parts{.model = *parts_.model, .loss = parts_.loss, .optimizer = *optimizer_,
                       .microbatches = loop_.microbatches};
  const double loss = strategy.step(mine, step_parts);
  scheduler_->step();  // also when the servers update: the reported lr stays true
  return loss;
}

LanguageModelResult Trainer::evaluate_language_model() {
  LOOM_CHECK(parts_.test_loader && parts_.task == Task::LanguageModel,
             "Trainer::evaluate_language_model: the parts have no test loader or are not a language model");
  autograd::NoGradGuard no_grad;
  nn::Module& model = *parts_.model;
  model.eval();
  LanguageModelMetrics metrics;
  parts_.test_loader->set_epoch(0);
  while (auto batch = parts_.test_loader->next()) metrics.update(model(batch->inputs), batch->targets);
  model.train();
  return metrics.result();
}

ClassificationResult Trainer::evaluate() {
  LOOM_CHECK(parts_.task == Task::Classification,
             "Trainer::evaluate: a language model has no classification metrics; use evaluate_language_model()");
  LOOM_CHECK(can_evaluate(), "Trainer::evaluate: the parts have no test loader or no num_classes");
  autograd::NoGradGuard no_grad;
  nn::Module& model = *parts_.model;
  model.eval();
  ClassificationMetrics metrics(parts_.num_classes);
  parts_.test_loader->set_epoch(0);
  while (auto batch = parts_.test_loader->next()) {
    Tensor logits = model(batch->inputs);
    Tensor loss_sum = ops::cross_entropy(logits, batch->targets, {.reduction = ops::Reduction::Sum});
    metrics.update(logits, batch->targets, loss_sum.item<double>());
  }
  model.train();
  return metrics.result();
}

std::chrono::milliseconds Trainer::eval_timeout() const {
  return std::chrono::milliseconds(static_cast<int64_t>(loop_.eval_timeout_s * 1000));
}

EpochReport Trainer::fit() {
  const auto t0 = Clock::now();
  std::unique_ptr<MetricsLog> jsonl;
  std::string metrics_path = options_.metrics_out.empty() ? loop_.metrics_out : options_.metrics_out;
  if (!metrics_path.empty() && is_main()) jsonl = std::make_unique<MetricsLog>(metrics_path, OpenMode::Append);
  std::unique_ptr<TensorBoardWriter> tb;
  if (!loop_.tensorboard_dir.empty() && is_main()) tb = std::make_unique<TensorBoardWriter>(loop_.tensorboard_dir);

  EpochReport report;
  const int64_t epochs = loop_.epochs;
  for (int64_t epoch = parts_.train_loader->position().epoch; epoch < epochs; ++epoch) {
    const auto te = Clock::now();
    const int64_t step_before = step_;
    const int64_t first_batch = parts_.train_loader->position().epoch == epoch ? parts_.train_loader->position().next_batch : 0;
    report = EpochReport{};
    report.train_loss = last_train_loss_ = train_one_epoch(epoch);
    const bool stopped = loop_.max_steps > 0 && step_ >= loop_.max_steps;
    if (!preempted_ && (stopped || epoch + 1 == epochs)) take_final_requests();
    if (preempted_) {
      report.epoch = epoch;
      report.step = step_;
      report.preempted = true;
      report.checkpoint = last_checkpoint_path_;
      report.wall_s = seconds_since(t0);
      log(format("stopped by {} at step {}: {}", core::stop_signal() ? format("signal {}", core::stop_signal()) : "request",
                 step_, last_checkpoint_path_ ? "checkpoint " + last_checkpoint_path_->string() : "no checkpoint dir, nothing saved"));
      return report;
    }
    const bool finished_epoch = parts_.train_loader->position().epoch > epoch;
    report.epoch = epoch + 1;
    report.step = step_;
    report.lr = optimizer_->lr();
    report.epoch_s = seconds_since(te);
    report.wall_s = seconds_since(t0);
    const int64_t batches = step_ - step_before;
    const int64_t bs = parts_.train_loader->options().batch_size;
    const int64_t samples =
        std::min<int64_t>(batches * bs, std::max<int64_t>(0, parts_.train_loader->dataset().size() - first_batch * bs));
    report.samples_per_s = report.epoch_s > 0 ? static_cast<double>(samples) / report.epoch_s : 0.0;
    const bool last = stopped || epoch + 1 == epochs;
    const bool lm = parts_.task == Task::LanguageModel;
    const bool evaluate_now =
        can_evaluate() && (last || (loop_.eval_interval > 0 && (epoch + 1) % loop_.eval_interval == 0));
    if (evaluate_now) parts_.strategy->gather(*parts_.model, nullptr);  // every rank: stages' weights to the main rank
    if (evaluate_now && is_main()) {
      if (lm) report.validation = evaluate_language_model();
      else report.test = evaluate();
      report.wall_s = seconds_since(t0);
    }
    std::string line = format("epoch {}/{}: step {}, train loss {}", epoch + 1, epochs, step_, report.train_loss);
    if (lm) line += format(", train bpb {}", bits_per_byte(report.train_loss));
    line += format(", {} samples/s", static_cast<int64_t>(report.samples_per_s));
    if (report.test) line += format(", test loss {}, test accuracy {}%", report.test->loss, report.test->accuracy * 100.0);
    if (report.validation) line += format(", val loss {}, val bpb {}", report.validation->loss, report.validation->bits_per_byte);
    log(line);
    if (jsonl) {
      LogRecord rec{{"epoch", report.epoch}, {"step", report.step}, {"train_loss", report.train_loss}};
      if (lm) rec.add("train_bpb", bits_per_byte(report.train_loss));
      if (report.test) rec.add(report.test->as_map("test_"));
      if (report.validation) rec.add(report.validation->as_map("val_"));
      rec.add("lr", report.lr).add("samples_per_s", report.samples_per_s).add("epoch_s", report.epoch_s).add("wall_s", report.wall_s);
      jsonl->write(rec);
    }
    if (tb) {
      tb->add_scalar("train/loss", report.train_loss, step_);
      if (lm) tb->add_scalar("train/bpb", bits_per_byte(report.train_loss), step_);
      tb->add_scalar("train/lr", report.lr, step_);
      tb->add_scalar("train/samples_per_s", report.samples_per_s, step_);
      if (report.test) {
        for (const auto& [k, v] : report.test->as_map("test/")) tb->add_scalar(k, v, step_);
      }
      if (report.validation) {
        for (const auto& [k, v] : report.validation->as_map("val/")) tb->add_scalar(k, v, step_);
      }
      tb->flush();
    }
    const bool checkpoint_now =
        checkpoints_ && last_checkpoint_step_ != step_ && policy_.due_after_epoch(epoch + 1, last, finished_epoch);
    if (checkpoint_now) write_checkpoint();
    // The others wait for the main rank's evaluation and checkpoint here, with
    // a timeout for that work, not in their next step's first receive.
    if (evaluate_now || checkpoint_now) parts_.strategy->barrier(eval_timeout());
    if (options_.on_epoch_end) options_.on_epoch_end(report);
    if (stopped) break;
  }
  wait_for_checkpoint();
  report.checkpoint = last_checkpoint_path_;
  // The main rank's model is the whole trained model (what `--save-final` writes).
  parts_.strategy->gather(*parts_.model, nullptr);
  parts_.strategy->barrier();
  return report;
}

io::NamedTensors Trainer::checkpoint_tensors(const optim::OptimizerState& optimizer_state) const {
  io::NamedTensors out;
  for (const auto& [name, t] : parts_.model->state_dict()) out.emplace_back("model." + name, t);
  for (const auto& [name, t] : optim::to_state_dict(optimizer_->state_layout(), optimizer_state)) {
    out.emplace_back("optim." + name, t);
  }
  return out;
}

io::Metadata Trainer::checkpoint_metadata() const {
  io::Metadata m{{"format", "pt"},  // what PyTorch's safetensors loader expects
                 {"loom.version", "1"},
                 {"loom.step", std::to_string(step_)},
                 {"loom.loader_epoch", std::to_string(parts_.train_loader->position().epoch)},
                 {"loom.loader_batch", std::to_string(parts_.train_loader->position().next_batch)},
                 {"loom.job", parts_.source}};
  for (auto& [name, mod] : parts_.model->named_modules()) {
    if (core::Generator* g = mod->random_generator()) m["loom.rng." + name] = format("{},{}", g->seed(), g->offset());
  }
  return m;
}

Trainer::CheckpointContents Trainer::checkpoint_contents() {
  // The optimizer's state first: with parameter servers it brings their weights into the model.
  const optim::OptimizerState optimizer_state = parts_.strategy->optimizer_state(*optimizer_);
  CheckpointContents c{checkpoint_tensors(optimizer_state), checkpoint_metadata()};
  parts_.strategy->add_checkpoint_state(c.tensors, c.metadata);
  return c;
}

std::filesystem::path Trainer::save_checkpoint() {
  LOOM_CHECK(checkpoints_ != nullptr, "save_checkpoint: no checkpoint directory (set [train] checkpoint_dir or --checkpoint-dir)");
  wait_for_checkpoint();  // the background one first: checkpoints land in step order
  const CheckpointContents c = checkpoint_contents();
  return checkpoints_->save(step_, c.tensors, c.metadata);
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
  const int64_t step = metadata_int(f.metadata, "loom.step", file);
  upgrade_legacy_server_state(f, optimizer_->state_layout(), file);
  nn::StateDict model_state;
  io::NamedTensors optim_tensors;
  for (const auto& [name, t] : f.tensors) {
    if (name.rfind("model.", 0) == 0) model_state.insert(name.substr(6), t);
    else if (name.rfind("optim.", 0) == 0) optim_tensors.emplace_back(name.substr(6), t);
    else if (name.rfind(kServerStatePrefix, 0) != 0)  // the strategy's, below
      throw IoError(format("{}: unexpected tensor '{}' (expected model.*, optim.* and servers.*)", file, name));
  }
  const data::LoaderPosition pos{metadata_int(f.metadata, "loom.loader_epoch", file),
                                 metadata_int(f.metadata, "loom.loader_batch", file)};
  optim::OptimizerState optimizer_state;
  try {
    parts_.model->load_state_dict(model_state);
    optimizer_state = optim::from_state_dict(optimizer_->state_layout(), optim_tensors);
    parts_.train_loader->set_position(pos);
  } catch (const ValueError& e) {
    throw IoError(format("{}: the checkpoint does not fit this job's model: {}", file, e.what()));
  }
  for (auto& [name, mod] : parts_.model->named_modules()) {
    core::Generator* g = mod->random_generator();
    if (!g) continue;
    auto it = f.metadata.find("loom.rng." + name);
    LOOM_CHECK_T(IoError, it != f.metadata.end(), "{}: no RNG state for dropout '{}'", file, name);
    unsigned long long seed = 0, offset = 0;
    LOOM_CHECK_T(IoError, std::sscanf(it->second.c_str(), "%llu,%llu", &seed, &offset) == 2,
                 "{}: bad RNG state '{}' for '{}'", file, it->second, name);
    g->set_state(seed, offset);
  }
  step_ = step;
  parts_.strategy->load_optimizer_state(optimizer_state, *optimizer_);  // wherever the strategy keeps it
  scheduler_ = std::make_unique<optim::LRScheduler>(*optimizer_, optim::make_schedule(run_optimizer_spec()), step_);
  parts_.strategy->restore_checkpoint_state(f, file);
}

void Trainer::save_model(const std::filesystem::path& path) const {
  io::NamedTensors tensors;
  for (const auto& [name, t] : parts_.model->state_dict()) tensors.emplace_back(name, t);
  io::write_safetensors(path, tensors, {{"format", "pt"}, {"loom.job", parts_.source}});
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
    parts_.model->load_state_dict(state);
  } catch (const ValueError& e) {
    throw IoError(format("{}: the weights do not fit this job's model: {}", path.string(), e.what()));
  }
}

}  // namespace loom::train
