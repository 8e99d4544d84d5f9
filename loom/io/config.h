// Job files: a training job described in TOML, checked key by key.
//
//   io::JobConfig job = io::load_job_file("examples/fashion_mnist/cnn.toml", {"train.epochs=2"});
//   job.optimizer.lr; job.train.epochs; job.model.name;   // typed, defaults filled in
//
// Every error is a ConfigError that names the file, the line and the key:
//   cnn.toml:12: [optimizer] unknown key 'lrate' (did you mean 'lr'?)
//   cnn.toml:4: [train] 'epochs' must be an integer, got string
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "loom/io/mode.h"
#include "loom/io/pipeline_schedule.h"
#include "loom/optim/spec.h"

namespace loom::io {

// One entry of [[model.layers]]: its type and the remaining keys as written.
struct LayerSpec {
  std::string type;
  std::map<std::string, std::variant<int64_t, double, bool, std::string>> args;
  std::string where;  // "file:line", for error messages about this layer
};

struct ModelConfig {
  std::string name;               // a zoo model (mlp, cnn, lenet, resnet18, gpt), or empty with `layers`
  std::vector<LayerSpec> layers;  // an explicit layer list
  uint64_t init_seed = 0;
  // gpt only (nn::GptOptions; `blocks` because `layers` is the layer list):
  int64_t context = 0;            // most tokens per sequence
  int64_t blocks = 0;             // transformer blocks
  int64_t heads = 0;              // attention heads, must divide embed
  int64_t embed = 0;              // model width
  int64_t mlp_ratio = 4;          // MLP width = mlp_ratio * embed
  double dropout = 0.0;
  bool tied = true;               // LM head shares the token embedding
};

struct DataConfig {
  std::string dataset = "fashion-mnist";  // fashion-mnist | idx | csv | text (a language-modelling task)
  std::string root = "/usr/share/datasets/fashion-mnist";
  std::string train_file, test_file;  // csv: paths; idx: images files (labels via *_labels)
  std::string train_labels, test_labels;
  std::string label_column;           // csv: name or index of the target column
  int64_t batch_size = 128;
  int64_t test_batch_size = 1000;
  bool shuffle = true;
  bool drop_last = false;
  int64_t num_workers = 1;            // prefetch threads
  bool augment = false;               // random crop (padding 2) + horizontal flip
  std::vector<double> mean, std;      // per-channel normalisation (empty: none)
  // text only (data::read_byte_corpus, data::split_byte_windows):
  std::vector<std::string> files;     // files, folders or glob patterns, read as one byte stream
  int64_t context = 0;                // bytes per window; 0: [model] context
  int64_t stride = 0;                 // bytes between window starts; 0: context
  double val_fraction = 0.1;          // the corpus's tail kept for validation
};

struct TrainConfig {
  int64_t epochs = 10;
  int64_t max_steps = 0;       // 0: no limit
  uint64_t seed = 0;
  int64_t eval_interval = 1;   // evaluate every N epochs (0: only at the end)
  int64_t threads = 0;         // 0: all cores
  int64_t log_interval = 50;   // steps between progress updates
  std::string checkpoint_dir;  // empty: no checkpoints
  int64_t checkpoint_every = 1;  // epochs
  int64_t checkpoint_every_steps = 0;     // also every N optimizer steps (0: not by steps)
  double checkpoint_every_minutes = 0.0;  // also every X minutes of training (0: not by time)
  int64_t checkpoint_keep = 3;            // applies to checkpoints of every kind
  bool checkpoint_async = true;           // a background thread writes and fsyncs; the step only snapshots
  // Preemption: these signals (names without "SIG") make every rank finish
  // the step, write a checkpoint and exit with status 75 (preempted,
  // resumable). A second signal, or stop_grace_s after the first, exits at once.
  std::vector<std::string> stop_signals = {"TERM", "INT", "USR1"};
  double stop_grace_s = 120.0;
  std::string metrics_out;     // JSONL, one object per epoch
  std::string tensorboard_dir;
  double label_smoothing = 0.0;
  // Gradient accumulation: each step's rows go through forward and backward in
  // this many micro-batches (a pipeline's micro-batches, with mode = "pipeline").
  int64_t microbatches = 1;
  // How long the other ranks wait for the main rank's evaluation or
  // checkpoint before they give up (a distributed job's every other wait is
  // the [distributed] timeout).
  double eval_timeout_s = 3600.0;
};

struct DistributedConfig {
  Mode mode = Mode::Local;        // local | allreduce | dist_sync | dist_async | dist_ssp (parameter servers)
  int64_t workers = 1;            // processes `loom train` starts (or the launcher did)
  bool deterministic = false;     // bitwise-identical results for any worker count that divides deterministic_atoms
  int64_t deterministic_atoms = 8;  // deterministic: canonical parts of each batch (1..4096; workers must divide it)
  std::string transport = "auto"; // auto | zmq | shm
  std::string algorithm = "auto"; // auto | ring | halving_doubling | tree | hierarchical | shm (one host)
  double bucket_mb = 25.0;
  double first_bucket_mb = 1.0;
  double timeout_s = 60.0;        // one collective call
  double heartbeat_timeout_s = 10.0;
  int64_t servers = 0;            // parameter-server processes (dist_* modes)
  int64_t staleness = 0;          // dist_ssp's bound
  int64_t replicas = 0;           // backups per server shard
  int64_t split_bound = 1 << 20;  // arrays larger than this (elements) are split across all servers
  // mode = "pipeline": one process per stage; [train] microbatches per step.
  int64_t stages = 2;
  int64_t data_parallel = 1;      // replicas of the pipeline: stages x data_parallel processes
  PipelineSchedule schedule = PipelineSchedule::OneFOneB;  // gpipe | 1f1b | interleaved | zb-h1
  int64_t virtual_stages = 1;     // model chunks per stage (interleaved: >= 2)
  std::vector<int64_t> placement; // by hand: the first layer of each chunk (empty: balanced)
  std::string balance = "parameters";  // parameters | time (each layer's forward + backward, measured at the first step)
  bool recompute = false;         // every chunk keeps only its input and recomputes its forward before backward
};

struct JobConfig {
  std::string path;  // the file it came from
  ModelConfig model;
  DataConfig data;
  // [optimizer] (name = sgd | adam | adamw, lr, momentum, dampening, nesterov,
  // weight_decay, beta1, beta2, eps, amsgrad) and [schedule] (name = constant |
  // step | cosine, step_size in epochs, gamma, min_lr, warmup_steps). A job
  // file's defaults differ from the spec's: lr 0.05 and momentum 0.9. The
  // Trainer fills in the run's steps (schedule.steps_per_epoch, total_steps).
  optim::OptimizerSpec optimizer{.lr = 0.05, .momentum = 0.9};
  TrainConfig train;
  DistributedConfig distributed;
};

// Parses and validates a job file, applying "section.key=value" overrides
// (values in TOML syntax; a bare word is taken as a string).
JobConfig load_job_file(const std::string& path, const std::vector<std::string>& overrides = {});
// The same from text; `name` stands for the file in messages.
JobConfig parse_job(const std::string& text, const std::string& name, const std::vector<std::string>& overrides = {});

// The closest of `candidates` to `word` by edit distance, if reasonably close.
std::optional<std::string> closest_name(const std::string& word, const std::vector<std::string>& candidates);

}  // namespace loom::io
