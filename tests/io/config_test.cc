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

TEST(JobFile, MissingFile) {
  EXPECT_THROW(io::load_job_file("/nonexistent/job.toml"), ConfigError);
}

TEST(ClosestName, EditDistance) {
  EXPECT_EQ(io::closest_name("momentun", {"lr", "momentum", "nesterov"}), "momentum");
  EXPECT_FALSE(io::closest_name("zzzzzz", {"lr", "momentum"}).has_value());
}

}  // namespace
}  // namespace loom
