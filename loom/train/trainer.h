// The training loop: feeds batches to a strategy, steps the LR schedule,
// evaluates, logs (progress, JSONL, TensorBoard) and checkpoints; resumes
// exactly from a checkpoint. Built from parts, or from a job file (which
// builds the parts: data, model, loss, optimizer; the strategy comes from
// parallel::make_strategy, or is local).
//
//   // given: std::shared_ptr<nn::Module> model, std::shared_ptr<data::DataLoader> train, std::shared_ptr<data::DataLoader> test
//   train::Trainer trainer({.model = model, .train_loader = train, .test_loader = test,
//                           .loss = [](const Tensor& out, const Tensor& y) { return ops::cross_entropy(out, y); },
//                           .optimizer = {.rule = optim::Rule::Adam, .lr = 1e-3}, .num_classes = 10},
//                          io::TrainConfig{.epochs = 2});
//   trainer.fit();
//
//   train::Trainer from_job(io::load_job_file("examples/fashion_mnist/mlp.toml"), {.metrics_out = "metrics.jsonl"});
//   from_job.fit();                                   // or from_job.resume_from_latest(), then fit()
//   train::ClassificationResult r = from_job.evaluate();
//
// Checkpoints are safetensors files: tensors "model.<name>" (the state dict)
// and "optim.<key>" (the optimizer's state in optim's one layout,
// optim/state_dict.h, wherever the strategy keeps it), and metadata
// "loom.step", "loom.loader_epoch", "loom.loader_batch", "loom.rng.<module>"
// (dropout generators) — everything an exact resume needs — plus what only
// the strategy has ("servers.*": tables that live on parameter servers). So
// a run resumes under another strategy (local, all-reduce, parameter
// servers); old parameter-server checkpoints ("servers.key<k>") are renamed
// into this layout on loading.
#pragma once

#include <chrono>

#include <cstdio>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "loom/data/loader.h"
#include "loom/io/async_checkpoint.h"
#include "loom/io/checkpoint.h"
#include "loom/io/config.h"
#include "loom/nn/module.h"
#include "loom/optim/optim.h"
#include "loom/train/checkpoint_policy.h"
#include "loom/train/lm_metrics.h"
#include "loom/train/metrics.h"
#include "loom/train/strategy.h"

namespace loom::train {

// What one epoch produced; callbacks and logs receive it.
struct EpochReport {
  int64_t epoch = 0;  // 1-based: the number of epochs completed
  int64_t step = 0;   // optimizer steps so far
  double train_loss = 0.0;
  double lr = 0.0;
  double samples_per_s = 0.0;
  double epoch_s = 0.0;
  double wall_s = 0.0;  // since fit() started
  std::optional<ClassificationResult> test;  // when evaluated this epoch (classification)
  std::optional<LanguageModelResult> validation;  // when evaluated this epoch (language model)
  // A stop signal ended training at this step (core/stop_signals.h): the
  // epoch is unfinished, not evaluated, and `checkpoint` holds the step.
  bool preempted = false;
  std::optional<std::filesystem::path> checkpoint;  // the last checkpoint written (main rank)
};

// After each optimizer step.
struct StepReport {
  int64_t step = 0;   // optimizer steps so far
  double loss = 0.0;  // this rank's rows
};

struct TrainerOptions {
  std::string checkpoint_dir;  // overrides [train] checkpoint_dir when set
  std::string metrics_out;     // overrides [train] metrics_out when set
  std::FILE* log = stderr;     // progress and summaries; nullptr: silent
  std::optional<bool> interactive;  // progress bar style; unset: detect a terminal
  // Called after every epoch (after evaluation and checkpointing).
  std::function<void(const EpochReport&)> on_epoch_end;
  // Called after every optimizer step.
  std::function<void(const StepReport&)> on_step_end;
};

// What the model learns, which decides the metrics: classification (loss,
// accuracy, F1, ...) or language modelling (outputs [B, T, V] against
// targets [B, T]: loss per token and bits per byte; a job's [data] dataset =
// "text").
enum class Task : uint8_t { Classification, LanguageModel };

// What a Trainer is made of. The Trainer builds the local optimizer and the
// LR schedule from `optimizer` (with the run's steps filled in) and hands the
// same spec to the strategy, which may run it elsewhere (parameter servers).
struct TrainerParts {
  std::shared_ptr<nn::Module> model;
  // Global batches: every rank gets the same batch and the strategy's rank
  // takes its rows (share_of_batch), so results do not depend on the world
  // size. With per_rank_batches, the loader already yields this rank's rows,
  // 1/world_size of each step's global batch.
  std::shared_ptr<data::DataLoader> train_loader;
  std::shared_ptr<data::DataLoader> test_loader;  // optional; evaluate() needs it and num_classes
  LossFn loss;                                    // a mean over the rows
  optim::OptimizerSpec optimizer;
  std::shared_ptr<Strategy> strategy;             // null: LocalStrategy
  int64_t num_classes = 0;                        // evaluate(): classification metrics over test_loader
  Task task = Task::Classification;               // LanguageModel: evaluate_language_model() instead
  bool per_rank_batches = false;
  std::string source;                             // recorded in checkpoints as "loom.job"
};

class Trainer {
 public:
  // `loop`: epochs, max_steps, eval_interval, checkpoint_dir/every/keep,
  // metrics_out, tensorboard_dir (the job file's [train]).
  //
  // Checkpoints: at the end of every checkpoint_every epochs, and after the
  // steps where checkpoint_every_steps or checkpoint_every_minutes come due
  // (the main rank's clock, voted to the others). With checkpoint_async the
  // step only copies the state and a background thread writes it (one write
  // in flight); fit() waits for it before it returns. Preemption: with
  // [train] stop_signals, a stop request (core::stop_requested(); the
  // program installs core::StopSignals) is voted among the ranks after every
  // step; all of them stop at the same step, the main rank writes a
  // checkpoint and waits for it, and fit() returns a report with preempted.
  Trainer(TrainerParts parts, io::TrainConfig loop, TrainerOptions options = {});
  // The job file's parts: data, loaders, model (zoo or layers), cross-entropy
  // with the job's label smoothing, [optimizer] and [schedule]; `strategy`
  // from parallel::make_strategy (null: local).
  explicit Trainer(const io::JobConfig& job, TrainerOptions options = {}, std::shared_ptr<Strategy> strategy = nullptr);
  ~Trainer();

  // Trains until [train] epochs or max_steps; returns the last epoch's report.
  EpochReport fit();
  // Test-set metrics of the current model (needs test_loader and num_classes).
  ClassificationResult evaluate();
  // Language models: loss and bits per byte over the test (validation) loader.
  LanguageModelResult evaluate_language_model();
  Task task() const { return parts_.task; }

  // Loads the newest checkpoint in the checkpoint dir; false if there is none.
  bool resume_from_latest();
  void load_checkpoint(const std::filesystem::path& path);
  // Into the checkpoint dir, on the main rank, after every rank called
  // strategy().gather(model, &optimizer) (fit() does both).
  std::filesystem::path save_checkpoint();
  // The model's weights alone, as a safetensors file (no optimizer state).
  void save_model(const std::filesystem::path& path) const;
  // Loads weights saved by save_model or a full checkpoint.
  void load_model(const std::filesystem::path& path);

  nn::Module& model() { return *parts_.model; }
  Strategy& strategy() { return *parts_.strategy; }
  int64_t step() const { return step_; }

 private:
  void log(const std::string& line) const;
  double train_one_epoch(int64_t epoch);
  double train_step(const data::Batch& batch);
  bool take_step_requests();
  bool take_final_requests();
  bool act_on(const StepVote& all);
  void write_checkpoint();
  void wait_for_checkpoint();
  struct CheckpointContents {
    io::NamedTensors tensors;
    io::Metadata metadata;
  };
  CheckpointContents checkpoint_contents();
  std::chrono::milliseconds eval_timeout() const;  // [train] eval_timeout_s
  bool is_main() const { return parts_.strategy->is_main(); }
  bool can_evaluate() const {
    return parts_.test_loader && (parts_.num_classes > 0 || parts_.task == Task::LanguageModel);
  }
  optim::OptimizerSpec run_optimizer_spec() const;
  io::NamedTensors checkpoint_tensors(const optim::OptimizerState& optimizer_state) const;
  io::Metadata checkpoint_metadata() const;

  TrainerParts parts_;
  io::TrainConfig loop_;
  TrainerOptions options_;
  std::unique_ptr<optim::Optimizer> optimizer_;
  std::unique_ptr<optim::LRScheduler> scheduler_;
  std::unique_ptr<io::CheckpointManager> checkpoints_;
  std::unique_ptr<io::AsyncCheckpointWriter> writer_;  // checkpoint_async, on the main rank
  CheckpointPolicy policy_;
  bool voting_ = false;  // vote after every step: stop signals, or checkpoints by steps or time
  bool preempted_ = false;
  std::chrono::steady_clock::time_point last_checkpoint_;
  std::optional<std::filesystem::path> last_checkpoint_path_;
  int64_t last_checkpoint_step_ = -1;
  int64_t step_ = 0;
  double last_train_loss_ = 0.0;
};

}  // namespace loom::train
