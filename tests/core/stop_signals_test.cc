// Stop signals: the first sets the request, a second (or the grace running
// out) ends the process at once with 128 + the first signal after removing
// the registered temporary files; names are checked; handlers are restored.
#include "loom/core/stop_signals.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <thread>

#include "loom/core/error.h"

namespace loom::core {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

// Signals go to the process (the waiting thread takes them), so they arrive
// a moment later: waits up to 5 s for the count of requests to change.
void send(int signal) { ::kill(::getpid(), signal); }
bool eventually_requested() {
  for (int i = 0; i < 500 && !stop_requested(); ++i) std::this_thread::sleep_for(10ms);
  return stop_requested();
}

TEST(StopSignals, NamesAndNumbers) {
  EXPECT_EQ(signal_number("TERM"), SIGTERM);
  EXPECT_EQ(signal_number("USR1"), SIGUSR1);
  try {
    signal_number("SIGTERM");
    ADD_FAILURE() << "accepted SIGTERM";
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("without SIG"), std::string::npos) << e.what();
  }
  EXPECT_EQ(stop_signal_names().front(), "TERM");
}

TEST(StopSignals, FirstSignalRequestsAStopAndTheDestructorRestoresTheHandler) {
  clear_stop_request();
  {
    StopSignals handlers({"USR1", "USR2"}, 0ms);
    EXPECT_FALSE(stop_requested());
    send(SIGUSR2);
    EXPECT_TRUE(eventually_requested());
    EXPECT_EQ(stop_signal(), SIGUSR2);
    EXPECT_THROW(StopSignals({"TERM"}, 0ms), ConfigError);  // one at a time
  }
  clear_stop_request();
  struct sigaction now{};
  ::sigaction(SIGUSR2, nullptr, &now);
  EXPECT_EQ(now.sa_handler, SIG_DFL);
}

void write_file(const fs::path& p) { std::ofstream(p) << "half a checkpoint"; }

TEST(StopSignalsDeathTest, SecondSignalEndsAtOnceAndRemovesTemporaryFiles) {
  GTEST_FLAG_SET(death_test_style, "fast");  // fork only: the child writes the paths the parent checks
  const fs::path tmp = fs::temp_directory_path() / ("loom_stop_" + std::to_string(::getpid()));
  fs::remove(tmp);
  EXPECT_EXIT(
      {
        StopSignals handlers({"TERM"}, 0ms);
        write_file(tmp);
        AbortCleanup cleanup(tmp);
        send(SIGTERM);  // the first: only a request
        if (!eventually_requested() || !fs::exists(tmp)) std::_Exit(3);
        send(SIGTERM);  // the same request delivered twice: ignored
        std::this_thread::sleep_for(200ms);
        if (!fs::exists(tmp)) std::_Exit(5);
        std::this_thread::sleep_for(1100ms);
        send(SIGTERM);  // the second: at once
        std::this_thread::sleep_for(5s);
        std::_Exit(4);
      },
      ::testing::ExitedWithCode(128 + SIGTERM), "");
  EXPECT_FALSE(fs::exists(tmp));
}

TEST(StopSignalsDeathTest, AnotherSignalRightAfterEndsAtOnce) {
  GTEST_FLAG_SET(death_test_style, "fast");
  EXPECT_EXIT(
      {
        StopSignals handlers({"TERM", "INT"}, 0ms);
        send(SIGTERM);
        if (!eventually_requested()) std::_Exit(3);
        send(SIGINT);
        std::this_thread::sleep_for(5s);
        std::_Exit(4);
      },
      ::testing::ExitedWithCode(128 + SIGTERM), "");
}

TEST(StopSignalsDeathTest, GraceRunningOutEndsAtOnce) {
  GTEST_FLAG_SET(death_test_style, "fast");  // fork only: the child writes the paths the parent checks
  EXPECT_EXIT(
      {
        StopSignals handlers({"INT"}, 1000ms);
        send(SIGINT);
        std::this_thread::sleep_for(10s);  // a checkpoint that never ends
        std::_Exit(4);
      },
      ::testing::ExitedWithCode(128 + SIGINT), "");
}

TEST(StopSignalsDeathTest, AReleasedPathIsLeftAlone) {
  GTEST_FLAG_SET(death_test_style, "fast");  // fork only: the child writes the paths the parent checks
  const fs::path kept = fs::temp_directory_path() / ("loom_stop_kept_" + std::to_string(::getpid()));
  EXPECT_EXIT(
      {
        StopSignals handlers({"TERM"}, 0ms);
        write_file(kept);
        { AbortCleanup released(kept); }  // a committed file: no longer temporary
        send(SIGTERM);
        if (!eventually_requested()) std::_Exit(3);
        std::this_thread::sleep_for(1100ms);
        send(SIGTERM);
        std::this_thread::sleep_for(5s);
        std::_Exit(4);
      },
      ::testing::ExitedWithCode(128 + SIGTERM), "");
  EXPECT_TRUE(fs::exists(kept));
  fs::remove(kept);
}

}  // namespace
}  // namespace loom::core
