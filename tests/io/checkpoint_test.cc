#include "loom/io/checkpoint.h"

#include <gtest/gtest.h>

#include "tests/io/temp_dir.h"

namespace loom::io {
namespace {

using core::Tensor;
using testing::TempDir;

NamedTensors weights(float v) { return {{"w", Tensor::from_vector<float>({v, v + 1}, {2})}}; }

std::vector<int64_t> steps(const CheckpointManager& m) {
  std::vector<int64_t> out;
  for (const auto& c : m.list()) out.push_back(c.step);
  return out;
}

TEST(CheckpointManager, SavesZeroPaddedNamesAndKeepsTheNewest) {
  TempDir dir;
  CheckpointManager m(dir.path(), {.keep_last = 2});
  EXPECT_FALSE(m.latest().has_value());
  for (int64_t step : {100, 200, 300, 400}) {
    auto path = m.save(step, weights(static_cast<float>(step)), {{"step", std::to_string(step)}});
    EXPECT_TRUE(std::filesystem::exists(path));
  }
  EXPECT_EQ(steps(m), (std::vector<int64_t>{300, 400}));
  EXPECT_EQ(dir.entries(), (std::set<std::string>{"ckpt-000000300.safetensors", "ckpt-000000400.safetensors"}));
  ASSERT_TRUE(m.latest().has_value());
  EXPECT_EQ(*m.latest(), dir / "ckpt-000000400.safetensors");
  SafetensorsFile f = read_safetensors(*m.latest());
  EXPECT_EQ(f.metadata.at("step"), "400");
  EXPECT_EQ(f.at("w").to_vector<float>(), (std::vector<float>{400, 401}));
}

TEST(CheckpointManager, KeepLastZeroKeepsAll) {
  TempDir dir;
  CheckpointManager m(dir.path());
  for (int64_t step = 0; step < 5; ++step) m.save(step, weights(0));
  EXPECT_EQ(steps(m), (std::vector<int64_t>{0, 1, 2, 3, 4}));
  EXPECT_THROW(CheckpointManager(dir.path(), {.keep_last = -1}), ValueError);
  EXPECT_THROW(m.save(-1, weights(0)), ValueError);
}

TEST(CheckpointManager, StepsSortAsNumbersAndOtherFilesAreIgnored) {
  TempDir dir;
  CheckpointManager m(dir / "run", {.keep_last = 3});
  testing::write_file(dir / "run" / "notes.txt", "x");
  testing::write_file(dir / "run" / "ckpt-abc.safetensors", "x");
  testing::write_file(dir / "run" / ".ckpt-000000009.safetensors.tmp-1-0", "x");  // a crashed save
  m.save(999999999, weights(1));
  m.save(1000000000, weights(2));  // ten digits
  m.save(5, weights(3));           // an earlier step after a restart: kept, it was just written
  EXPECT_EQ(steps(m), (std::vector<int64_t>{5, 999999999, 1000000000}));
  EXPECT_EQ(*m.latest(), dir / "run" / "ckpt-1000000000.safetensors");
  m.save(6, weights(4));
  EXPECT_EQ(steps(m), (std::vector<int64_t>{6, 999999999, 1000000000}));
  EXPECT_TRUE(std::filesystem::exists(dir / "run" / "notes.txt"));
}

TEST(CheckpointManager, KeepLastOneAndResave) {
  TempDir dir;
  CheckpointManager m(dir.path(), {.keep_last = 1});
  m.save(1, weights(1));
  m.save(2, weights(2));
  m.save(2, weights(5));  // same step again: replaced
  EXPECT_EQ(steps(m), (std::vector<int64_t>{2}));
  EXPECT_EQ(read_safetensors(*m.latest()).at("w").to_vector<float>(), (std::vector<float>{5, 6}));
}

TEST(CheckpointManager, DirectoryProblemsAreIoErrors) {
  TempDir dir;
  testing::write_file(dir / "file", "x");
  try {
    CheckpointManager m(dir / "file");
    FAIL();
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("file"), std::string::npos);
  }
  EXPECT_THROW(CheckpointManager(dir / "file" / "sub"), IoError);
}

}  // namespace
}  // namespace loom::io
