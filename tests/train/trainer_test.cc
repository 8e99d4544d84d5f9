// The Trainer end to end on a small synthetic IDX data set: it learns, and a
// run stopped after 2 epochs and resumed for 2 more ends with weights bitwise
// equal to 4 uninterrupted epochs.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "loom/data/idx.h"
#include "loom/io/safetensors.h"
#include "loom/ops/ops.h"
#include "loom/train/trainer.h"
#include "tests/train/two_class_idx.h"

namespace loom {
namespace {

namespace fs = std::filesystem;
using core::Tensor;

class TrainerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("loom_trainer_test_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    testing::write_two_class_idx(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  io::JobConfig job(const std::string& model, std::vector<std::string> extra = {}) {
    return io::parse_job(testing::two_class_job_text(model, dir_), "test.toml", extra);
  }

  fs::path dir_;
};

io::SafetensorsFile final_weights(train::Trainer& t, const fs::path& path) {
  t.save_model(path);
  return io::read_safetensors(path);
}

TEST_F(TrainerTest, LearnsASimpleTask) {
  train::Trainer t(job("name = \"mlp\""), {.log = nullptr});
  train::EpochReport r = t.fit();
  ASSERT_TRUE(r.test.has_value());
  EXPECT_GT(r.test->accuracy, 0.9);
  EXPECT_EQ(r.step, 4 * 12);
}

// Every [optimizer] key reaches the rule: AMSGrad keeps a third state slot.
TEST_F(TrainerTest, AmsgradFromTheJobFileTrains) {
  const fs::path ckpt = dir_ / "ckpt";
  train::Trainer t(job("name = \"mlp\"", {"optimizer.name=adam", "optimizer.lr=0.01", "optimizer.amsgrad=true"}),
                   {.checkpoint_dir = ckpt.string(), .log = nullptr});
  train::EpochReport r = t.fit();
  ASSERT_TRUE(r.test.has_value());
  EXPECT_GT(r.test->accuracy, 0.9);
  int amsgrad_slots = 0;
  for (const auto& entry : fs::directory_iterator(ckpt)) {
    for (const auto& [name, tensor] : io::read_safetensors(entry.path()).tensors) {
      amsgrad_slots += name.starts_with("optim.") && name.ends_with(".max_exp_avg_sq");
    }
  }
  EXPECT_GT(amsgrad_slots, 0);
}

TEST_F(TrainerTest, ResumeIsBitwiseExact) {
  // A model with dropout and batch norm: RNG state and buffers must come back too.
  const std::string model = R"(
[[model.layers]]
type = "conv2d"
out = 4
kernel = 3
padding = 1
[[model.layers]]
type = "batchnorm2d"
[[model.layers]]
type = "relu"
[[model.layers]]
type = "flatten"
[[model.layers]]
type = "dropout"
p = 0.2
[[model.layers]]
type = "linear"
out = 2
)";
  train::Trainer full(job(model), {.log = nullptr});
  full.fit();
  auto want = final_weights(full, dir_ / "full.safetensors");

  const std::string ckpt = (dir_ / "ckpt").string();
  {
    train::Trainer first(job(model, {"train.epochs=2"}), {.checkpoint_dir = ckpt, .log = nullptr});
    first.fit();
  }
  train::Trainer second(job(model), {.checkpoint_dir = ckpt, .log = nullptr});
  ASSERT_TRUE(second.resume_from_latest());
  EXPECT_EQ(second.step(), 2 * 12);
  second.fit();
  auto got = final_weights(second, dir_ / "resumed.safetensors");

  ASSERT_EQ(got.tensors.size(), want.tensors.size());
  for (size_t i = 0; i < want.tensors.size(); ++i) {
    const auto& [name, w] = want.tensors[i];
    const Tensor& g = got.tensors[i].second;
    ASSERT_EQ(w.nbytes(), g.nbytes()) << name;
    EXPECT_EQ(std::memcmp(w.data_ptr(), g.data_ptr(), w.nbytes()), 0) << name << " differs after resume";
  }
}

TEST_F(TrainerTest, MidEpochStopResumesWithTheSameBatches) {
  train::Trainer full(job("name = \"mlp\""), {.log = nullptr});
  full.fit();
  auto want = final_weights(full, dir_ / "full.safetensors");
  const std::string ckpt = (dir_ / "ckpt").string();
  {
    train::Trainer first(job("name = \"mlp\"", {"train.max_steps=17"}), {.checkpoint_dir = ckpt, .log = nullptr});
    first.fit();
    EXPECT_EQ(first.step(), 17);
  }
  train::Trainer second(job("name = \"mlp\""), {.checkpoint_dir = ckpt, .log = nullptr});
  ASSERT_TRUE(second.resume_from_latest());
  second.fit();
  auto got = final_weights(second, dir_ / "resumed.safetensors");
  for (size_t i = 0; i < want.tensors.size(); ++i) {
    const Tensor& w = want.tensors[i].second;
    const Tensor& g = got.tensors[i].second;
    EXPECT_EQ(std::memcmp(w.data_ptr(), g.data_ptr(), w.nbytes()), 0) << want.tensors[i].first;
  }
}

TEST_F(TrainerTest, CheckpointThatDoesNotFitTheModelIsRejected) {
  train::Trainer mlp(job("name = \"mlp\"", {"train.epochs=1"}), {.log = nullptr});
  mlp.save_model(dir_ / "mlp.safetensors");
  train::Trainer other(job("[[model.layers]]\ntype = \"flatten\"\n[[model.layers]]\ntype = \"linear\"\nout = 2\n"),
                       {.log = nullptr});
  try {
    other.load_model(dir_ / "mlp.safetensors");
    FAIL() << "expected IoError";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("do not fit"), std::string::npos) << e.what();
  }
}

TEST_F(TrainerTest, IncompatibleLayerShapesNameTheLayer) {
  try {
    train::Trainer t(job("[[model.layers]]\ntype = \"flatten\"\n[[model.layers]]\ntype = \"linear\"\nin = 100\nout = 2\n"),
                     {.log = nullptr});
    FAIL() << "expected ShapeError";
  } catch (const ShapeError& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("test.toml:"), std::string::npos) << msg;
    EXPECT_NE(msg.find("Linear(100 -> 2)"), std::string::npos) << msg;
    EXPECT_NE(msg.find("64"), std::string::npos) << msg;
  }
}

}  // namespace
}  // namespace loom
