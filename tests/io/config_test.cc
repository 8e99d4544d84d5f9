#include <gtest/gtest.h>

#include "loom/core/error.h"
#include "loom/io/config.h"

namespace loom {
namespace {

std::string error_of(const std::string& text, std::vector<std::string> overrides = {}) {
  try {
    io::parse_job(text, "job.toml", overrides);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

TEST(JobFile, ParsesSectionsWithDefaults) {
  auto job = io::parse_job(R"(
[model]
name = "cnn"
[optimizer]
name = "adamw"
lr = 1e-3
weight_decay = 0.01
[train]
epochs = 3
seed = 7
)", "job.toml");
  EXPECT_EQ(job.model.name, "cnn");
  EXPECT_EQ(job.optimizer.rule, optim::Rule::AdamW);
  EXPECT_DOUBLE_EQ(job.optimizer.lr, 1e-3);
  EXPECT_EQ(job.train.epochs, 3);
  EXPECT_EQ(job.train.seed, 7u);
  EXPECT_EQ(job.data.batch_size, 128);  // default
  EXPECT_EQ(job.data.dataset, "fashion-mnist");
}

TEST(JobFile, LayerList) {
  auto job = io::parse_job(R"(
[[model.layers]]
type = "conv2d"
out = 8
kernel = 3
[[model.layers]]
type = "relu"
)", "job.toml");
  ASSERT_EQ(job.model.layers.size(), 2u);
  EXPECT_EQ(job.model.layers[0].type, "conv2d");
  EXPECT_EQ(std::get<int64_t>(job.model.layers[0].args.at("out")), 8);
  EXPECT_EQ(job.model.layers[1].where, "job.toml:6");
}

TEST(JobFile, OverridesApply) {
  auto job = io::parse_job("[model]\nname = \"mlp\"\n", "job.toml",
                           {"train.epochs=2", "optimizer.lr=0.5", "optimizer.name=adam", "data.shuffle=false"});
  EXPECT_EQ(job.train.epochs, 2);
  EXPECT_DOUBLE_EQ(job.optimizer.lr, 0.5);
  EXPECT_EQ(job.optimizer.rule, optim::Rule::Adam);
  EXPECT_FALSE(job.data.shuffle);
  EXPECT_NE(error_of("[model]\nname = \"mlp\"\n", {"epochs=2"}).find("section.key"), std::string::npos);
}

TEST(JobFile, ErrorsNameFileLineAndKey) {
  std::string e = error_of("[model]\nname = \"mlp\"\n[optimizer]\nlrate = 0.1\n");
  EXPECT_EQ(e, "job.toml:4: [optimizer] unknown key 'lrate' (did you mean 'lr'?)");
  e = error_of("[model]\nname = \"mlp\"\n[train]\nepochs = \"ten\"\n");
  EXPECT_EQ(e, "job.toml:4: [train] 'epochs' must be an integer, got string");
  e = error_of("[model]\nname = \"cnnn\"\n");
  EXPECT_NE(e.find("job.toml:2"), std::string::npos) << e;
  EXPECT_NE(e.find("did you mean 'cnn'"), std::string::npos) << e;
  e = error_of("[model]\nname = \"mlp\"\n[trian]\nepochs = 1\n");
  EXPECT_NE(e.find("unknown section [trian] (did you mean [train]?)"), std::string::npos) << e;
  e = error_of("[model]\nname = \"mlp\"\n[train\n");
  EXPECT_NE(e.find("job.toml:3: invalid TOML"), std::string::npos) << e;
  e = error_of("[train]\nepochs = 1\n");
  EXPECT_NE(e.find("[model] needs"), std::string::npos) << e;
  e = error_of("[model]\nname = \"mlp\"\n[data]\nbatch_size = 0\n");
  EXPECT_EQ(e, "job.toml:4: [data] 'batch_size' must be positive, got 0");
}

TEST(JobFile, EveryOptimizerOptionIsReachable) {
  auto job = io::parse_job(R"(
[model]
name = "mlp"
[optimizer]
name = "adam"
lr = 0.01
weight_decay = 0.1
beta1 = 0.8
beta2 = 0.99
eps = 1e-6
amsgrad = true
[schedule]
name = "cosine"
min_lr = 0.001
warmup_steps = 5
[distributed]
mode = "dist_sync"
servers = 2
)", "job.toml");
  const optim::OptimizerSpec& o = job.optimizer;
  EXPECT_EQ(o.rule, optim::Rule::Adam);
  EXPECT_TRUE(o.amsgrad);
  EXPECT_EQ(o.beta1, 0.8);
  EXPECT_EQ(o.beta2, 0.99);
  EXPECT_EQ(o.eps, 1e-6);
  EXPECT_EQ(o.weight_decay, 0.1);
  EXPECT_EQ(o.schedule.kind, optim::ScheduleKind::Cosine);
  EXPECT_EQ(o.schedule.min_lr, 0.001);
  EXPECT_EQ(o.schedule.warmup_steps, 5);
  EXPECT_EQ(job.distributed.mode, io::Mode::DistSync);
  // A job file's defaults: sgd, lr 0.05, momentum 0.9, constant, local.
  auto plain = io::parse_job("[model]\nname = \"mlp\"\n", "job.toml");
  EXPECT_EQ(plain.optimizer, (optim::OptimizerSpec{.rule = optim::Rule::Sgd, .lr = 0.05, .momentum = 0.9}));
  EXPECT_EQ(plain.distributed.mode, io::Mode::Local);

  EXPECT_EQ(error_of("[model]\nname = \"mlp\"\n[optimizer]\namsgrad = 1\n"),
            "job.toml:4: [optimizer] 'amsgrad' must be a boolean (true/false), got integer");
  EXPECT_EQ(error_of("[model]\nname = \"mlp\"\n[optimizer]\nmomentum = 0.0\nnesterov = true\n"),
            "job.toml:5: [optimizer] 'nesterov' needs momentum > 0 and dampening = 0");
  EXPECT_EQ(error_of("[model]\nname = \"mlp\"\n[optimizer]\namsgrade = true\n"),
            "job.toml:4: [optimizer] unknown key 'amsgrade' (did you mean 'amsgrad'?)");
  std::string e = error_of("[model]\nname = \"mlp\"\n[optimizer]\nname = \"adamx\"\n");
  EXPECT_NE(e.find("job.toml:4: [optimizer] 'name' is 'adamx', expected one of sgd, adam, adamw"), std::string::npos)
      << e;
  e = error_of("[model]\nname = \"mlp\"\n[distributed]\nmode = \"dist_snyc\"\n");
  EXPECT_NE(e.find("job.toml:4: [distributed] 'mode' is 'dist_snyc'"), std::string::npos) << e;
  EXPECT_NE(e.find("did you mean 'dist_sync'"), std::string::npos) << e;
}

// Every key of every section lands in its own member (the tables in config.cc
// map keys to members; a row pointing at the wrong one would show here).
TEST(JobFile, EveryKeyFillsItsMember) {
  auto job = io::parse_job(R"(
[model]
name = "lenet"
init_seed = 11
[data]
dataset = "csv"
root = "/r"
train_file = "a.csv"
test_file = "b.csv"
train_labels = "a.lab"
test_labels = "b.lab"
label_column = "y"
batch_size = 7
test_batch_size = 9
shuffle = false
drop_last = true
num_workers = 0
augment = true
mean = [0.5, 1]
std = [0.25, 2]
[optimizer]
name = "sgd"
lr = 0.2
momentum = 0.5
dampening = 0.1
weight_decay = 0.01
beta1 = 0.8
beta2 = 0.99
eps = 1e-6
amsgrad = true
[schedule]
name = "step"
step_size = 3
gamma = 0.5
min_lr = 0.001
warmup_steps = 4
[train]
epochs = 3
max_steps = 5
seed = 9
eval_interval = 0
threads = 2
log_interval = 7
checkpoint_dir = "ck"
checkpoint_every = 2
checkpoint_keep = 4
metrics_out = "m.jsonl"
tensorboard_dir = "tb"
label_smoothing = 0.1
[distributed]
mode = "dist_ssp"
workers = 3
transport = "zmq"
algorithm = "tree"
bucket_mb = 5
first_bucket_mb = 0.5
timeout_s = 30
heartbeat_timeout_s = 5
servers = 3
staleness = 2
replicas = 2
split_bound = 100
)", "job.toml", {"optimizer.nesterov=false", "distributed.deterministic=false"});
  EXPECT_EQ(job.model.name, "lenet");
  EXPECT_EQ(job.model.init_seed, 11u);
  const io::DataConfig& d = job.data;
  EXPECT_EQ(d.dataset, "csv");
  EXPECT_EQ(d.root, "/r");
  EXPECT_EQ(d.train_file, "a.csv");
  EXPECT_EQ(d.test_file, "b.csv");
  EXPECT_EQ(d.train_labels, "a.lab");
  EXPECT_EQ(d.test_labels, "b.lab");
  EXPECT_EQ(d.label_column, "y");
  EXPECT_EQ(d.batch_size, 7);
  EXPECT_EQ(d.test_batch_size, 9);
  EXPECT_FALSE(d.shuffle);
  EXPECT_TRUE(d.drop_last);
  EXPECT_EQ(d.num_workers, 0);
  EXPECT_TRUE(d.augment);
  EXPECT_EQ(d.mean, (std::vector<double>{0.5, 1.0}));
  EXPECT_EQ(d.std, (std::vector<double>{0.25, 2.0}));
  const optim::OptimizerSpec& o = job.optimizer;
  EXPECT_EQ(o.rule, optim::Rule::Sgd);
  EXPECT_EQ(o.lr, 0.2);
  EXPECT_EQ(o.momentum, 0.5);
  EXPECT_EQ(o.dampening, 0.1);
  EXPECT_FALSE(o.nesterov);
  EXPECT_EQ(o.weight_decay, 0.01);
  EXPECT_EQ(o.beta1, 0.8);
  EXPECT_EQ(o.beta2, 0.99);
  EXPECT_EQ(o.eps, 1e-6);
  EXPECT_TRUE(o.amsgrad);
  EXPECT_EQ(o.schedule.kind, optim::ScheduleKind::Step);
  EXPECT_EQ(o.schedule.step_size, 3);
  EXPECT_EQ(o.schedule.gamma, 0.5);
  EXPECT_EQ(o.schedule.min_lr, 0.001);
  EXPECT_EQ(o.schedule.warmup_steps, 4);
  const io::TrainConfig& t = job.train;
  EXPECT_EQ(t.epochs, 3);
  EXPECT_EQ(t.max_steps, 5);
  EXPECT_EQ(t.seed, 9u);
  EXPECT_EQ(t.eval_interval, 0);
  EXPECT_EQ(t.threads, 2);
  EXPECT_EQ(t.log_interval, 7);
  EXPECT_EQ(t.checkpoint_dir, "ck");
  EXPECT_EQ(t.checkpoint_every, 2);
  EXPECT_EQ(t.checkpoint_keep, 4);
  EXPECT_EQ(t.metrics_out, "m.jsonl");
  EXPECT_EQ(t.tensorboard_dir, "tb");
  EXPECT_EQ(t.label_smoothing, 0.1);
  const io::DistributedConfig& x = job.distributed;
  EXPECT_EQ(x.mode, io::Mode::DistSsp);
  EXPECT_EQ(x.workers, 3);
  EXPECT_FALSE(x.deterministic);
  EXPECT_EQ(x.transport, "zmq");
  EXPECT_EQ(x.algorithm, "tree");
  EXPECT_EQ(x.bucket_mb, 5.0);
  EXPECT_EQ(x.first_bucket_mb, 0.5);
  EXPECT_EQ(x.timeout_s, 30.0);
  EXPECT_EQ(x.heartbeat_timeout_s, 5.0);
  EXPECT_EQ(x.servers, 3);
  EXPECT_EQ(x.staleness, 2);
  EXPECT_EQ(x.replicas, 2);
  EXPECT_EQ(x.split_bound, 100);
  // The two booleans left at false above, set by --set.
  auto flags = io::parse_job("[model]\nname = \"mlp\"\n", "job.toml",
                             {"optimizer.nesterov=true", "distributed.deterministic=true",
                              "distributed.mode=allreduce"});
  EXPECT_TRUE(flags.optimizer.nesterov);
  EXPECT_TRUE(flags.distributed.deterministic);
  EXPECT_EQ(flags.distributed.mode, io::Mode::Allreduce);
}

// Language modelling: [model] name = "gpt" with [data] dataset = "text".
constexpr const char* kLanguageModel = R"([model]
name = "gpt"
context = 64
blocks = 2
heads = 4
embed = 32
[data]
dataset = "text"
files = ["/usr/share/games/fortunes/fortunes", "/tmp/*.txt"]
)";

TEST(JobFile, GptAndTextKeysFillTheirMembers) {
  auto job = io::parse_job(kLanguageModel, "lm.toml",
                           {"model.mlp_ratio=2", "model.dropout=0.1", "model.tied=false", "data.context=32",
                            "data.stride=16", "data.val_fraction=0.2"});
  const io::ModelConfig& m = job.model;
  EXPECT_EQ(m.name, "gpt");
  EXPECT_EQ(m.context, 64);
  EXPECT_EQ(m.blocks, 2);
  EXPECT_EQ(m.heads, 4);
  EXPECT_EQ(m.embed, 32);
  EXPECT_EQ(m.mlp_ratio, 2);
  EXPECT_DOUBLE_EQ(m.dropout, 0.1);
  EXPECT_FALSE(m.tied);
  EXPECT_EQ(job.data.files, (std::vector<std::string>{"/usr/share/games/fortunes/fortunes", "/tmp/*.txt"}));
  EXPECT_EQ(job.data.context, 32);
  EXPECT_EQ(job.data.stride, 16);
  EXPECT_DOUBLE_EQ(job.data.val_fraction, 0.2);
  auto defaults = io::parse_job(kLanguageModel, "lm.toml");
  EXPECT_TRUE(defaults.model.tied);
  EXPECT_EQ(defaults.model.mlp_ratio, 4);
  EXPECT_EQ(defaults.data.context, 0);  // the model's
  EXPECT_DOUBLE_EQ(defaults.data.val_fraction, 0.1);
}

TEST(JobFile, GptAndTextErrorsNameTheKey) {
  EXPECT_EQ(error_of(kLanguageModel, {"model.heads=5"}),
            "job.toml (--set): [model] 'heads' (5) must be >= 1 and divide embed (32)");
  EXPECT_NE(error_of(kLanguageModel, {"model.context=0"}).find("[model] 'context' must be >= 1 for gpt"), std::string::npos);
  EXPECT_NE(error_of(kLanguageModel, {"model.blocks=0"}).find("[model] 'blocks'"), std::string::npos);
  EXPECT_NE(error_of(kLanguageModel, {"model.dropout=1.0"}).find("[model] 'dropout' must be in [0, 1)"), std::string::npos);
  EXPECT_EQ(error_of(kLanguageModel, {"data.context=65"}),
            "job.toml (--set): [data] 'context' (65) must not exceed [model] context (64)");
  EXPECT_NE(error_of(kLanguageModel, {"data.val_fraction=0"}).find("[data] 'val_fraction' must be in (0, 1)"), std::string::npos);
  EXPECT_NE(error_of(kLanguageModel, {"data.files=[]"}).find("[data] 'files' must list the corpus"), std::string::npos);
  EXPECT_NE(error_of(kLanguageModel, {"data.files=\"one.txt\""}).find("[data] 'files' must be an array of strings"),
            std::string::npos);
  EXPECT_NE(error_of(kLanguageModel, {"data.dataset=csv"}).find("[data] 'dataset' is 'csv', but [model] name = \"gpt\""),
            std::string::npos);
  EXPECT_NE(error_of("[model]\nname = \"mlp\"\n[data]\ndataset = \"text\"\nfiles = [\"a\"]\n").find("needs a language model"),
            std::string::npos);
  EXPECT_EQ(error_of("[model]\nname = \"mlp\"\nheads = 4\n"), "job.toml:3: [model] 'heads' applies to name = \"gpt\" only");
  EXPECT_NE(error_of(kLanguageModel, {"model.layers=2"}).find("a gpt counts its transformer blocks with 'blocks'"),
            std::string::npos);
  EXPECT_EQ(error_of("[model]\nname = \"mlp\"\n[data]\ncontext = 4\n"),
            "job.toml:4: [data] 'context' applies to dataset = \"text\" only");
}

TEST(JobFile, RangeErrorsNameTheValue) {
  const std::string mlp = "[model]\nname = \"mlp\"\n";
  EXPECT_EQ(error_of(mlp + "[train]\nlog_interval = 0\n"), "job.toml:4: [train] 'log_interval' must be >= 1, got 0");
  EXPECT_EQ(error_of(mlp + "[optimizer]\nbeta2 = 1.5\n"), "job.toml:4: [optimizer] 'beta2' must be in [0, 1), got 1.5");
  EXPECT_EQ(error_of(mlp + "[train]\nseed = -1\n"), "job.toml:4: [train] 'seed' must be >= 0, got -1");
  EXPECT_EQ(error_of(mlp + "[distributed]\nbucket_mb = 0\n"),
            "job.toml:4: [distributed] 'bucket_mb' bucket sizes must be positive");
  EXPECT_EQ(error_of(mlp + "[distributed]\nreplicas = 2\nservers = 2\nmode = \"dist_sync\"\n"),
            "job.toml:4: [distributed] 'replicas' must be >= 0 and less than servers (2), got 2");
  // A check that names a key the file does not write gives no line.
  EXPECT_EQ(error_of(mlp + "[data]\nmean = [0.5]\n"), "job.toml: [data] 'std' must have as many entries as 'mean'");
  // Overrides go through the same checks; the message says where the value came from.
  EXPECT_EQ(error_of(mlp, {"distributed.transport=tcp"}),
            "job.toml (--set): [distributed] 'transport' is 'tcp', expected one of auto, zmq, shm "
            "(did you mean 'zmq'?)");
  EXPECT_EQ(error_of(mlp, {"train.epochs=0"}), "job.toml (--set): [train] 'epochs' must be >= 1, got 0");
  // With no close name, an unknown key lists the section's keys in order.
  EXPECT_EQ(error_of(mlp + "[schedule]\nzzzzzzzzzzzz = 1\n"),
            "job.toml:4: [schedule] unknown key 'zzzzzzzzzzzz' "
            "(valid keys: name, step_size, gamma, min_lr, warmup_steps)");
  EXPECT_EQ(error_of(mlp + "[distributed]\nfirst_bucket_mb = -1\n"),
            "job.toml:4: [distributed] 'first_bucket_mb' bucket sizes must be positive");
  EXPECT_EQ(error_of("model = 1\n"), "job.toml:1: 'model' must be a table ([model]), got integer");
}

TEST(JobFile, MissingFile) {
  EXPECT_THROW(io::load_job_file("/nonexistent/job.toml"), ConfigError);
}

TEST(ClosestName, EditDistance) {
  EXPECT_EQ(io::closest_name("momentun", {"lr", "momentum", "nesterov"}), "momentum");
  EXPECT_FALSE(io::closest_name("zzzzzz", {"lr", "momentum"}).has_value());
}

}  // namespace
}  // namespace loom
