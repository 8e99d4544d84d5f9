#include "loom/train/progress.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <sstream>

namespace loom::train {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// A clock the test moves by hand.
struct FakeClock {
  Clock::time_point t{};
  std::function<Clock::time_point()> fn() {
    return [this] { return t; };
  }
};

std::vector<std::string> lines_of(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

TEST(ProgressBar, PlainLinesEveryTenPercent) {
  FakeClock clock;
  std::ostringstream os;
  ProgressBar bar(os, {.total_steps = 100, .label = "epoch 1/3", .clock = clock.fn()});
  EXPECT_FALSE(bar.interactive());  // a stringstream is not a terminal
  for (int i = 0; i < 100; ++i) {
    clock.t += 100ms;
    bar.step(32, "loss 0.5");
  }
  bar.finish();  // the 100% line is out already: nothing new to print
  const auto lines = lines_of(os.str());
  ASSERT_EQ(lines.size(), 10u) << os.str();
  EXPECT_EQ(lines[0], "epoch 1/3 10/100 (10%) elapsed 00:01 ETA 00:09 320.0 samples/s loss 0.5");
  EXPECT_EQ(lines[4], "epoch 1/3 50/100 (50%) elapsed 00:05 ETA 00:05 320.0 samples/s loss 0.5");
  EXPECT_EQ(lines[9], "epoch 1/3 100/100 (100%) elapsed 00:10 ETA 00:00 320.0 samples/s loss 0.5");
  EXPECT_EQ(os.str().find('\r'), std::string::npos);
  EXPECT_EQ(os.str().back(), '\n');
}

TEST(ProgressBar, PlainLinesByTimeWhenTotalUnknown) {
  FakeClock clock;
  std::ostringstream os;
  ProgressBar bar(os, {.line_every = 2s, .clock = clock.fn()});
  for (int i = 0; i < 50; ++i) {
    clock.t += 100ms;
    bar.step();
  }
  bar.finish("done");
  const auto lines = lines_of(os.str());
  // Lines at 2 s and 4 s (steps 20, 40), then the final one.
  ASSERT_EQ(lines.size(), 3u) << os.str();
  EXPECT_EQ(lines[0], "20 elapsed 00:02 10.0 steps/s");
  EXPECT_EQ(lines[1], "40 elapsed 00:04 10.0 steps/s");
  EXPECT_EQ(lines[2], "50 elapsed 00:05 10.0 steps/s done");
}

TEST(ProgressBar, FinishPrintsWhatChangedSinceTheLastLine) {
  FakeClock clock;
  std::ostringstream os;
  ProgressBar bar(os, {.total_steps = 4, .label = "eval", .line_every_percent = 50, .clock = clock.fn()});
  clock.t += 1s;
  bar.update(1, 10);
  clock.t += 1s;
  bar.update(2, 20);  // 50%: a line
  clock.t += 1s;
  bar.update(3, 30);
  bar.finish("acc 0.9");  // stopped early: a final line with the status
  bar.finish("again");    // ignored
  bar.step(5);            // ignored
  const auto lines = lines_of(os.str());
  ASSERT_EQ(lines.size(), 2u) << os.str();
  EXPECT_EQ(lines[0], "eval 2/4 (50%) elapsed 00:02 ETA 00:02 10.0 samples/s");
  EXPECT_EQ(lines[1], "eval 3/4 (75%) elapsed 00:03 ETA 00:01 10.0 samples/s acc 0.9");
}

TEST(ProgressBar, TerminalRedrawsInPlaceAtLimitedRate) {
  FakeClock clock;
  std::ostringstream os;
  ProgressBar bar(
      os, {.total_steps = 200, .label = "train", .interactive = true, .bar_width = 10, .clock = clock.fn()});
  EXPECT_TRUE(bar.interactive());
  for (int i = 0; i < 200; ++i) {
    clock.t += 10ms;
    bar.step(4, i < 100 ? "loss 0.123456" : "loss 0.1");
  }
  bar.finish();
  const std::string out = os.str();
  // One redraw per 100 ms (20 over 2 s), plus the one at 100%, plus finish.
  const auto redraws = std::count(out.begin(), out.end(), '\r');
  EXPECT_GE(redraws, 20);
  EXPECT_LE(redraws, 23);
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1);
  EXPECT_EQ(out.back(), '\n');
  const std::string last = out.substr(out.rfind('\r') + 1);
  EXPECT_EQ(last.substr(0, last.find_last_not_of(" \n") + 1),
            "train 100%|##########| 200/200 [00:02<00:00, 400.0 samples/s] loss 0.1");
  // The half-way line shows a half bar, and the shorter status that follows
  // is padded with blanks over the longer one.
  EXPECT_NE(out.find("train  50%|#####     | 100/200 [00:01<00:01, 400.0 samples/s] loss 0.123456"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("loss 0.1     "), std::string::npos);
}

TEST(ProgressBar, WritesToAFile) {
  std::FILE* f = std::tmpfile();
  ASSERT_NE(f, nullptr);
  {
    FakeClock clock;
    ProgressBar bar(f, {.total_steps = 2, .clock = clock.fn()});
    EXPECT_FALSE(bar.interactive());  // a regular file is not a terminal
    clock.t += 1s;
    bar.step(8);
    clock.t += 1s;
    bar.step(8);
    bar.finish();
  }
  std::rewind(f);
  char buf[256] = {};
  const size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  EXPECT_EQ(std::string(buf, n),
            "1/2 (50%) elapsed 00:01 ETA 00:01 8.0 samples/s\n"
            "2/2 (100%) elapsed 00:02 ETA 00:00 8.0 samples/s\n");
}

TEST(ProgressBar, DetectsATerminal) {
  // A pseudo-terminal stands in for a real one.
  const int master = ::posix_openpt(O_RDWR | O_NOCTTY);
  if (master < 0 || ::grantpt(master) != 0 || ::unlockpt(master) != 0) GTEST_SKIP() << "no pseudo-terminal";
  std::FILE* tty = std::fopen(::ptsname(master), "w");
  ASSERT_NE(tty, nullptr);
  EXPECT_TRUE(ProgressBar(tty, {.total_steps = 10}).interactive());
  EXPECT_FALSE(ProgressBar(tty, {.total_steps = 10, .interactive = false}).interactive());
  std::fclose(tty);
  ::close(master);
}

TEST(ProgressBar, FormatDuration) {
  EXPECT_EQ(format_duration(0), "00:00");
  EXPECT_EQ(format_duration(307.9), "05:07");
  EXPECT_EQ(format_duration(3723), "1:02:03");
  EXPECT_EQ(format_duration(-1), "--:--");
  EXPECT_EQ(format_duration(std::numeric_limits<double>::infinity()), "--:--");
}

}  // namespace
}  // namespace loom::train
