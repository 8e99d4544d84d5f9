// The training loop behind `loom train`: builds data, model, optimizer and
// schedule from a job file, trains epoch by epoch, evaluates, logs (progress,
// JSONL, TensorBoard) and checkpoints; resumes exactly from a checkpoint.
//
//   io::JobConfig job = io::load_job_file("examples/fashion_mnist/mlp.toml");
//   train::Trainer trainer(job, {.metrics_out = "metrics.jsonl"});
//   trainer.fit();                                    // or trainer.resume_from_latest(), then fit()
//   train::ClassificationResult r = trainer.evaluate();
//
// Checkpoints are safetensors files: tensors "model.<name>" (the state dict)
// and "optim.<key>" (optimizer state), and metadata "loom.step",
// "loom.loader_epoch", "loom.loader_batch", "loom.rng.<module>" (dropout
// generators) — everything an exact resume needs.
#pragma once

#include <cstdio>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "loom/data/loader.h"
#include "loom/io/checkpoint.h"
#include "loom/io/config.h"
#include "loom/nn/module.h"
#include "loom/optim/optim.h"
#include "loom/train/metrics.h"

namespace loom::train {

// How a Trainer takes part in data-parallel training, implemented above this
// layer (parallel::AllreduceContext). Every rank runs the same Trainer on the
// same global batches; rank r trains on rows [B*r/N, B*(r+1)/N) of each batch,
// scales its loss by its share of the batch, and after backward the context
// sums the gradients across ranks, so each step equals one step of a single
// process on the whole batch. Rank 0 evaluates, logs and checkpoints.
class DistributedContext {
 public:
  virtual ~DistributedContext() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  // Called once with the model before training (broadcast weights, buckets).
  virtual void attach(nn::Module& model) = 0;
  // After the backward pass(es) of one step: the gradients are summed across ranks.
  virtual void finish_gradients() = 0;
  // Deterministic mode: each rank back-propagates one sample at a time and
  // calls accumulate_micro_batch() after each; sums are exact (fixed point), so
  // results are bitwise the same for any number of ranks.
  virtual bool deterministic() const { return false; }
  virtual void accumulate_micro_batch() {}
  // Waits for every rank (end of training).
  virtual void barrier() = 0;
  // Told before attach(): the job's optimizer with the run's steps filled in
  // (a context that applies the update, on parameter servers, runs this spec).
  virtual void set_optimizer(const optim::OptimizerSpec& spec) {}
  // Parameter servers run the update rule themselves: after finish_gradients()
  // the trainer calls apply_update() (which leaves the new weights in the
  // model) instead of stepping its own optimizer.
  virtual bool applies_update() const { return false; }
  virtual void apply_update() {}
  // Checkpoints hold what the context keeps outside the model and the local
  // optimizer (the parameter servers' weights and optimizer state, as tensors
  // named "servers.*"): the main rank adds it to each checkpoint it writes,
  // and on resume every rank hands the checkpoint back after loading the model
  // (collective). A context without such state refuses a checkpoint with it.
  virtual void add_checkpoint_state(io::NamedTensors& tensors, io::Metadata& meta) {}
  virtual void restore_checkpoint_state(const io::SafetensorsFile& file, const std::string& source);
};

// The prefix of the tensors and metadata a DistributedContext adds to checkpoints.
inline constexpr const char* kServerStatePrefix = "servers.";

// What one epoch produced; callbacks and logs receive it.
struct EpochReport {
  int64_t epoch = 0;  // 1-based: the number of epochs completed
  int64_t step = 0;   // optimizer steps so far
  double train_loss = 0.0;
  double lr = 0.0;
  double samples_per_s = 0.0;
  double epoch_s = 0.0;
  double wall_s = 0.0;  // since fit() started
  std::optional<ClassificationResult> test;  // when evaluated this epoch
};

struct TrainerOptions {
  std::string checkpoint_dir;  // overrides [train] checkpoint_dir when set
  std::string metrics_out;     // overrides [train] metrics_out when set
  std::FILE* log = stderr;     // progress and summaries; nullptr: silent
  std::optional<bool> interactive;  // progress bar style; unset: detect a terminal
  // Called after every epoch (after evaluation and checkpointing).
  std::function<void(const EpochReport&)> on_epoch_end;
  // Data-parallel training (nullptr: one process).
  DistributedContext* distributed = nullptr;
};

class Trainer {
 public:
  Trainer(io::JobConfig job, TrainerOptions options = {});
  ~Trainer();

  // Trains until [train] epochs or max_steps; returns the last epoch's report.
  EpochReport fit();
  // Test-set metrics of the current model.
  ClassificationResult evaluate();

  // Loads the newest checkpoint in the checkpoint dir; false if there is none.
  bool resume_from_latest();
  void load_checkpoint(const std::filesystem::path& path);
  std::filesystem::path save_checkpoint();  // into the checkpoint dir
  // The model's weights alone, as a safetensors file (no optimizer state).
  void save_model(const std::filesystem::path& path) const;
  // Loads weights saved by save_model or a full checkpoint.
  void load_model(const std::filesystem::path& path);

  nn::Module& model() { return *model_; }
  int64_t step() const { return step_; }
  const io::JobConfig& job() const { return job_; }

 private:
  void log(const std::string& line) const;
  double train_one_epoch(int64_t epoch);
  double train_step(const data::Batch& batch);
  bool is_main() const { return !options_.distributed || options_.distributed->rank() == 0; }
  io::NamedTensors checkpoint_tensors() const;
  io::Metadata checkpoint_metadata() const;

  io::JobConfig job_;
  TrainerOptions options_;
  std::shared_ptr<data::Dataset> train_set_, test_set_;
  std::unique_ptr<data::DataLoader> train_loader_, test_loader_;
  int64_t num_classes_ = 0;
  std::shared_ptr<nn::Module> model_;
  std::unique_ptr<optim::Optimizer> optimizer_;
  std::unique_ptr<optim::LRScheduler> scheduler_;
  std::unique_ptr<io::CheckpointManager> checkpoints_;
  int64_t step_ = 0;
  double last_train_loss_ = 0.0;
};

}  // namespace loom::train
