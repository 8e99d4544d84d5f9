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
  EXPECT_EQ(job.optimizer.name, "adamw");
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
  EXPECT_EQ(job.optimizer.name, "adam");
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

TEST(JobFile, MissingFile) {
  EXPECT_THROW(io::load_job_file("/nonexistent/job.toml"), ConfigError);
}

TEST(ClosestName, EditDistance) {
  EXPECT_EQ(io::closest_name("momentun", {"lr", "momentum", "nesterov"}), "momentum");
  EXPECT_FALSE(io::closest_name("zzzzzz", {"lr", "momentum"}).has_value());
}

}  // namespace
}  // namespace loom
