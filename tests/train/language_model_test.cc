// Byte-level language modelling from a job file: a tiny GPT learns a small
// corpus (its validation loss falls; loss and bits per byte reach the log and
// the JSONL), resumes bit for bit with dropout, and the example jobs have the
// parameter counts their comments state.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <numbers>

#include "loom/io/safetensors.h"
#include "loom/train/trainer.h"
#include "loom/train/zoo.h"

namespace loom {
namespace {

namespace fs = std::filesystem;

std::string read_text(const fs::path& p) {
  std::ifstream in(p);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

class LanguageModelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("loom_lm_test_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    std::ofstream out(dir_ / "corpus.txt");
    for (int i = 0; i < 400; ++i) out << "the quick brown fox jumps over the lazy dog " << i % 7 << ".\n";
  }
  void TearDown() override { fs::remove_all(dir_); }

  io::JobConfig job(std::vector<std::string> extra = {}) {
    const std::string text = R"([model]
name = "gpt"
context = 16
blocks = 1
heads = 2
embed = 16
[data]
dataset = "text"
files = [")" + (dir_ / "corpus.txt").string() + R"("]
batch_size = 32
test_batch_size = 128
[optimizer]
name = "adamw"
lr = 0.01
[train]
epochs = 2
threads = 1
)";
    return io::parse_job(text, "lm.toml", extra);
  }

  fs::path dir_;
};

TEST_F(LanguageModelTest, LossFallsAndBitsPerByteAreReported) {
  std::FILE* log = std::tmpfile();
  train::Trainer t(job({"train.metrics_out=" + (dir_ / "m.jsonl").string()}), {.log = log, .interactive = false});
  EXPECT_EQ(t.task(), train::Task::LanguageModel);
  const train::LanguageModelResult before = t.evaluate_language_model();
  EXPECT_NEAR(before.loss, std::log(256.0), 0.3);  // GPT-2 init: close to uniform over bytes
  const train::EpochReport r = t.fit();
  ASSERT_TRUE(r.validation.has_value());
  EXPECT_FALSE(r.test.has_value());
  EXPECT_LT(r.validation->loss, before.loss - 2.0) << "before " << before.loss;
  EXPECT_DOUBLE_EQ(r.validation->bits_per_byte, r.validation->loss / std::numbers::ln2);
  EXPECT_GT(r.validation->num_tokens, 0);
  EXPECT_THROW(t.evaluate(), ValueError);  // no accuracy for a language model

  std::rewind(log);
  std::string printed(4096, '\0');
  printed.resize(std::fread(printed.data(), 1, printed.size(), log));
  std::fclose(log);
  EXPECT_NE(printed.find("train bpb"), std::string::npos) << printed;
  EXPECT_NE(printed.find("val loss"), std::string::npos) << printed;
  EXPECT_NE(printed.find("val bpb"), std::string::npos) << printed;
  const std::string jsonl = read_text(dir_ / "m.jsonl");
  EXPECT_NE(jsonl.find("\"train_bpb\""), std::string::npos) << jsonl;
  EXPECT_NE(jsonl.find("\"val_bpb\""), std::string::npos) << jsonl;
  EXPECT_EQ(jsonl.find("accuracy"), std::string::npos) << jsonl;
}

// Dropout in the embeddings, the attention weights and the residuals: every
// generator is in the checkpoint, so 1 + 1 epochs equal 2.
TEST_F(LanguageModelTest, ResumesBitForBitWithDropout) {
  const std::vector<std::string> dropout = {"model.dropout=0.2", "model.tied=false"};
  train::Trainer straight(job(dropout), {.log = nullptr});
  straight.fit();
  straight.save_model(dir_ / "straight.safetensors");

  std::vector<std::string> first = dropout;
  first.push_back("train.epochs=1");
  train::Trainer a(job(first), {.checkpoint_dir = (dir_ / "ckpt").string(), .log = nullptr});
  a.fit();
  train::Trainer b(job(dropout), {.checkpoint_dir = (dir_ / "ckpt").string(), .log = nullptr});
  ASSERT_TRUE(b.resume_from_latest());
  b.fit();
  b.save_model(dir_ / "resumed.safetensors");

  const io::SafetensorsFile x = io::read_safetensors(dir_ / "straight.safetensors");
  const io::SafetensorsFile y = io::read_safetensors(dir_ / "resumed.safetensors");
  ASSERT_EQ(x.tensors.size(), y.tensors.size());
  for (size_t i = 0; i < x.tensors.size(); ++i) {
    EXPECT_EQ(x.tensors[i].first, y.tensors[i].first);
    EXPECT_EQ(x.tensors[i].second.to_vector<float>(), y.tensors[i].second.to_vector<float>()) << x.tensors[i].first;
  }
}

TEST_F(LanguageModelTest, BadCorpusNamesTheField) {
  auto error_of = [&](std::vector<std::string> extra) {
    try {
      train::Trainer t(job(std::move(extra)), {.log = nullptr});
    } catch (const ConfigError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  const std::string missing = error_of({"data.files=[\"" + (dir_ / "nope.txt").string() + "\"]"});
  EXPECT_NE(missing.find("[data] 'files'"), std::string::npos) << missing;
  EXPECT_NE(missing.find("nope.txt' does not exist"), std::string::npos) << missing;
  std::ofstream(dir_ / "short.txt") << "too short for a window of 16";
  const std::string too_short = error_of({"data.files=[\"" + (dir_ / "short.txt").string() + "\"]"});
  EXPECT_NE(too_short.find("[data] 'context'"), std::string::npos) << too_short;
  EXPECT_NE(too_short.find("too short for context 16"), std::string::npos) << too_short;
}

int64_t count(const nn::Module& m) {
  int64_t n = 0;
  for (const auto& p : m.parameters()) n += p.numel();
  return n;
}

// The counts the example files state; building the models reads no corpus.
TEST(LanguageModelExamples, ParameterCounts) {
  for (const auto& [file, expected] : {std::pair<const char*, int64_t>{"tiny.toml", 34688}, {"gpt_small.toml", 14393088}}) {
    const io::JobConfig job = io::load_job_file(std::string(LOOM_TEST_DATA_DIR) + "/../examples/lm/" + file);
    auto model = train::build_model(job.model, {job.model.context}, 256);
    const auto* gpt = dynamic_cast<const nn::Gpt*>(model.get());
    ASSERT_NE(gpt, nullptr) << file;
    EXPECT_EQ(count(*model), expected) << file;
    EXPECT_EQ(nn::gpt_parameter_count(gpt->options()), expected) << file;
  }
}

}  // namespace
}  // namespace loom
