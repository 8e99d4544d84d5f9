// TensorBoardWriter, checked by an independent reader (read_tfevents.py).
#include "loom/train/tensorboard.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>

#include "loom/core/error.h"
#include "loom/core/crc32c.h"

namespace loom::train {
namespace {

using core::crc32c;
using core::crc32c_extend;
using core::mask_crc32c;
using core::unmask_crc32c;

namespace fs = std::filesystem;

constexpr const char* kPython = "/usr/bin/python3";
const std::string kReader = std::string(LOOM_TEST_DATA_DIR) + "/train/read_tfevents.py";

// A folder of its own for each test, removed when the test ends.
class TempDir {
 public:
  explicit TempDir(const std::string& name)
      : root_(fs::temp_directory_path() / ("loom_tb_test_" + std::to_string(::getpid()) + "_" + name)) {
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

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

struct ReaderRun {
  int status = -1;
  std::vector<nlohmann::json> events;
  std::string errors;
};

// Runs read_tfevents.py on `file`; its stdout holds one JSON event per line.
ReaderRun read_back(const fs::path& file, const std::string& flags = "") {
  const fs::path out = file.string() + ".stdout", err = file.string() + ".stderr";
  const std::string cmd = std::string(kPython) + " '" + kReader + "' '" + file.string() + "' " + flags +
                          " > '" + out.string() + "' 2> '" + err.string() + "'";
  ReaderRun run;
  const int rc = std::system(cmd.c_str());
  run.status = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  std::istringstream lines(slurp(out));
  for (std::string line; std::getline(lines, line);) run.events.push_back(nlohmann::json::parse(line));
  run.errors = slurp(err);
  return run;
}

#define SKIP_WITHOUT_PYTHON() \
  if (::access(kPython, X_OK) != 0) GTEST_SKIP() << kPython << " not found"

TEST(Crc32c, KnownVectors) {
  EXPECT_EQ(crc32c("123456789", 9), 0xE3069283u);
  EXPECT_EQ(crc32c("", 0), 0u);
  // RFC 3720 (iSCSI) B.4 test vectors.
  const std::string zeros(32, '\0'), ones(32, '\xff');
  EXPECT_EQ(crc32c(zeros.data(), zeros.size()), 0x8A9136AAu);
  EXPECT_EQ(crc32c(ones.data(), ones.size()), 0x62A8AB43u);
  std::string ascending(32, '\0');
  for (int i = 0; i < 32; ++i) ascending[static_cast<size_t>(i)] = static_cast<char>(i);
  EXPECT_EQ(crc32c(ascending.data(), ascending.size()), 0x46DD794Eu);
}

TEST(Crc32c, ExtendEqualsWholeAndMaskRoundTrips) {
  const std::string s = "The quick brown fox jumps over the lazy dog";
  for (size_t cut = 0; cut <= s.size(); ++cut) {
    EXPECT_EQ(crc32c_extend(crc32c(s.data(), cut), s.data() + cut, s.size() - cut),
              crc32c(s.data(), s.size()));
  }
  for (uint32_t c : {0u, 1u, 0xE3069283u, 0xFFFFFFFFu}) EXPECT_EQ(unmask_crc32c(mask_crc32c(c)), c);
  EXPECT_EQ(mask_crc32c(0), 0xa282ead8u);
}

TEST(TfRecord, FramingLayout) {
  std::string out;
  append_tfrecord(out, "abc");
  ASSERT_EQ(out.size(), 8u + 4 + 3 + 4);
  EXPECT_EQ(out.substr(0, 8), std::string("\x03\0\0\0\0\0\0\0", 8));
  uint32_t length_crc, data_crc;
  std::memcpy(&length_crc, out.data() + 8, 4);
  std::memcpy(&data_crc, out.data() + 15, 4);
  EXPECT_EQ(length_crc, mask_crc32c(crc32c(out.data(), 8)));
  EXPECT_EQ(out.substr(12, 3), "abc");
  EXPECT_EQ(data_crc, mask_crc32c(crc32c("abc", 3)));
}

TEST(TensorBoardWriter, ScalarsReadBackIndependently) {
  SKIP_WITHOUT_PYTHON();
  const TempDir tmp("scalars");
  const fs::path dir = tmp.path();
  struct Point {
    std::string tag;
    double value;
    int64_t step;
  };
  const std::vector<Point> points = {
      {"train/loss", 2.302585, 0},     {"train/loss", 0.5, 1},
      {"train/loss", 0.1234567891, 2}, {"lr", 1e-3, int64_t{1} << 40},
      {"weird step", -7.25, -5},       {"grad/norm \xc3\xa9t\xc3\xa9", 3.0e38, 3},
      {"nan", std::nan(""), 4},        {"inf", -std::numeric_limits<double>::infinity(), 5},
  };
  fs::path file;
  {
    TensorBoardWriter tb(dir);
    file = tb.path();
    for (const Point& p : points) tb.add_scalar(p.tag, p.value, p.step);
    tb.add_scalars({{"test/accuracy", 0.975}, {"test/loss", 0.08}}, 9);
    EXPECT_EQ(tb.num_records(), 1 + static_cast<int64_t>(points.size()) + 1);
  }  // the destructor closes and flushes
  EXPECT_EQ(file.parent_path(), dir);
  EXPECT_EQ(file.filename().string().rfind("events.out.tfevents.", 0), 0u) << file;

  const ReaderRun run = read_back(file, "--tensorboard");
  ASSERT_EQ(run.status, 0) << run.errors;
  ASSERT_EQ(run.events.size(), points.size() + 2);
  EXPECT_EQ(run.events[0]["file_version"], "brain.Event:2");
  EXPECT_NEAR(run.events[0]["wall_time"].get<double>(), static_cast<double>(std::time(nullptr)), 60.0);
  for (size_t i = 0; i < points.size(); ++i) {
    SCOPED_TRACE(points[i].tag);
    const nlohmann::json& e = run.events[i + 1];
    EXPECT_EQ(e["step"].get<int64_t>(), points[i].step);
    ASSERT_EQ(e["values"].size(), 1u);
    EXPECT_EQ(e["values"][0]["tag"].get<std::string>(), points[i].tag);
    const nlohmann::json& v = e["values"][0]["simple_value"];
    const auto expected = static_cast<float>(points[i].value);  // simple_value is a float32
    if (std::isnan(expected)) {
      EXPECT_EQ(v, "nan");
    } else if (std::isinf(expected)) {
      EXPECT_EQ(v, "-inf");
    } else {
      EXPECT_EQ(v.get<double>(), static_cast<double>(expected));
    }
  }
  const nlohmann::json& multi = run.events.back();
  EXPECT_EQ(multi["step"], 9);
  ASSERT_EQ(multi["values"].size(), 2u);
  EXPECT_EQ(multi["values"][0]["tag"], "test/accuracy");
  EXPECT_EQ(multi["values"][0]["simple_value"].get<double>(), static_cast<double>(0.975f));
  EXPECT_EQ(multi["values"][1]["tag"], "test/loss");
  EXPECT_TRUE(run.errors.find("tensorboard: ok") != std::string::npos ||
              run.errors.find("tensorboard: not installed") != std::string::npos)
      << run.errors;
}

TEST(TensorBoardWriter, ReaderRejectsCorruptAndTruncatedFiles) {
  SKIP_WITHOUT_PYTHON();
  const TempDir tmp("corrupt");
  const fs::path dir = tmp.path();
  fs::path file;
  {
    TensorBoardWriter tb(dir);
    file = tb.path();
    tb.add_scalar("loss", 1.0, 1);
    tb.add_scalar("loss", 0.5, 2);
  }
  const std::string good = slurp(file);
  ASSERT_EQ(read_back(file).status, 0);

  std::string bad = good;
  bad[bad.size() - 6] ^= 0x01;  // inside the last record's data: data CRC must fail
  std::ofstream(file, std::ios::binary | std::ios::trunc) << bad;
  ReaderRun run = read_back(file);
  EXPECT_EQ(run.status, 1);
  EXPECT_NE(run.errors.find("data CRC mismatch"), std::string::npos) << run.errors;

  std::ofstream(file, std::ios::binary | std::ios::trunc) << good.substr(0, good.size() - 3);
  run = read_back(file);
  EXPECT_EQ(run.status, 1);
  EXPECT_NE(run.errors.find("truncated"), std::string::npos) << run.errors;
}

TEST(TensorBoardWriter, FlushesEveryNRecords) {
  const TempDir tmp("flush");
  const fs::path dir = tmp.path();
  TensorBoardWriter tb(dir, {.flush_every_records = 3, .flush_every = std::chrono::hours(1)});
  const auto header_size = fs::file_size(tb.path());  // the file_version event is written at once
  EXPECT_GT(header_size, 0u);
  tb.add_scalar("a", 1, 1);
  tb.add_scalar("a", 2, 2);
  EXPECT_EQ(fs::file_size(tb.path()), header_size);
  tb.add_scalar("a", 3, 3);
  const auto three = fs::file_size(tb.path());
  EXPECT_GT(three, header_size);
  tb.add_scalar("a", 4, 4);
  EXPECT_EQ(fs::file_size(tb.path()), three);
  tb.flush();
  EXPECT_GT(fs::file_size(tb.path()), three);
}

TEST(TensorBoardWriter, FlushesAfterTheInterval) {
  const TempDir tmp("flush_time");
  const fs::path dir = tmp.path();
  TensorBoardWriter tb(dir, {.flush_every_records = 1000, .flush_every = std::chrono::milliseconds(0)});
  const auto header_size = fs::file_size(tb.path());
  tb.add_scalar("a", 1, 1);
  EXPECT_GT(fs::file_size(tb.path()), header_size);
}

TEST(TensorBoardWriter, TwoWritersOnOneFolderGetTwoFiles) {
  const TempDir tmp("two");
  const fs::path dir = tmp.path();
  TensorBoardWriter a(dir), b(dir, {.filename_suffix = ".worker1"});
  TensorBoardWriter c(dir);
  EXPECT_NE(a.path(), c.path());
  EXPECT_EQ(b.path().string().substr(b.path().string().size() - 8), ".worker1");
}

TEST(TensorBoardWriter, ErrorsNameTheFile) {
  const TempDir tmp("errors");
  const fs::path dir = tmp.path();
  std::ofstream(dir / "not_a_dir") << "x";
  try {
    TensorBoardWriter tb(dir / "not_a_dir" / "run");
    FAIL() << "expected IoError";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("not_a_dir"), std::string::npos) << e.what();
  }
  TensorBoardWriter tb(dir);
  tb.close();
  tb.close();  // idempotent
  try {
    tb.add_scalar("x", 1, 1);
    FAIL() << "expected ValueError";
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find(tb.path().filename().string()), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace loom::train
