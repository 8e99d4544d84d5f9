#include "loom/train/metrics_log.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "loom/core/error.h"

namespace loom::train {
namespace {

namespace fs = std::filesystem;

// A folder of its own for each test, removed when the test ends.
class TempDir {
 public:
  explicit TempDir(const std::string& name)
      : root_(fs::temp_directory_path() / ("loom_log_test_" + std::to_string(::getpid()) + "_" + name)) {
    fs::remove_all(root_);
    fs::create_directories(root_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(root_, ec);
  }
  const fs::path& path() const { return root_; }

 private:
  fs::path root_;
};

std::vector<nlohmann::ordered_json> read_lines(const fs::path& p) {
  std::ifstream in(p);
  std::vector<nlohmann::ordered_json> out;
  for (std::string line; std::getline(in, line);) out.push_back(nlohmann::ordered_json::parse(line));
  return out;
}

TEST(MetricsLog, LinesParseBackWithTypesAndOrder) {
  const TempDir tmp("basic");
  const fs::path file = tmp.path() / "sub" / "metrics.jsonl";  // folders are created
  const size_t samples = 60000;
  {
    MetricsLog log(file);
    log.write({{"epoch", 1}, {"train_loss", 0.25}, {"phase", "train"}, {"samples", samples}, {"ok", true}});
    // Each line is flushed: readable before the log is closed.
    ASSERT_EQ(read_lines(file).size(), 1u);
    LogRecord r;
    r.add("epoch", int64_t{2})
        .add("wall_s", 12.5f)
        .add({{"test_accuracy", 0.98}, {"test_loss", std::nan("")}});
    r.add("epoch", 3);  // replaces, keeps its place
    log.write(r);
  }
  const auto lines = read_lines(file);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0].dump(), R"({"epoch":1,"train_loss":0.25,"phase":"train","samples":60000,"ok":true})");
  EXPECT_EQ(lines[1]["epoch"], 3);
  EXPECT_TRUE(lines[1]["epoch"].is_number_integer());
  EXPECT_EQ(lines[1]["wall_s"].get<double>(), 12.5);
  EXPECT_EQ(lines[1]["test_accuracy"].get<double>(), 0.98);  // round-trips exactly
  EXPECT_TRUE(lines[1]["test_loss"].is_null());              // NaN: JSON has none
  std::vector<std::string> keys;
  for (const auto& [k, v] : lines[1].items()) keys.push_back(k);
  EXPECT_EQ(keys, (std::vector<std::string>{"epoch", "wall_s", "test_accuracy", "test_loss"}));
}

TEST(MetricsLog, AppendAndTruncate) {
  const TempDir tmp("modes");
  const fs::path file = tmp.path() / "m.jsonl";
  { MetricsLog(file).write({{"epoch", 1}}); }
  { MetricsLog(file, OpenMode::Append).write({{"epoch", 2}}); }
  EXPECT_EQ(read_lines(file).size(), 2u);
  { MetricsLog(file, OpenMode::Truncate).write({{"epoch", 3}}); }
  const auto lines = read_lines(file);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0]["epoch"], 3);
}

TEST(MetricsLog, StringsAreEscaped) {
  const TempDir tmp("escape");
  const fs::path file = tmp.path() / "m.jsonl";
  { MetricsLog(file).write({{"note", "a \"quoted\"\nline\t\\ \xc3\xa9"}}); }
  const auto lines = read_lines(file);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0]["note"], "a \"quoted\"\nline\t\\ \xc3\xa9");
}

TEST(MetricsLog, ErrorsNameTheFile) {
  const TempDir tmp("errors");
  const fs::path dir = tmp.path();
  std::ofstream(dir / "plain") << "x";
  try {
    MetricsLog log(dir / "plain" / "m.jsonl");
    FAIL() << "expected IoError";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("plain"), std::string::npos) << e.what();
  }
  EXPECT_THROW(MetricsLog{dir}, IoError);  // a folder
  MetricsLog log(dir / "m.jsonl");
  log.close();
  EXPECT_THROW(log.write({{"epoch", 1}}), ValueError);
}

TEST(MetricsLog, WriteFailureIsAnIoError) {
  if (::access("/dev/full", W_OK) != 0) GTEST_SKIP() << "no /dev/full";
  MetricsLog log("/dev/full");
  try {
    log.write({{"epoch", 1}});
    FAIL() << "expected IoError";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("/dev/full"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace loom::train
