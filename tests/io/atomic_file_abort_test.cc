// A process ended at once by a second stop signal while an AtomicFile is
// being written leaves neither the target nor the temporary file.
#include <gtest/gtest.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <string>
#include <thread>

#include "loom/core/stop_signals.h"
#include "loom/io/atomic_file.h"

namespace loom::io {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

TEST(AtomicFileDeathTest, SecondStopSignalMidWriteLeavesNoHalfFile) {
  GTEST_FLAG_SET(death_test_style, "fast");  // fork only: the child writes the paths the parent checks
  const fs::path dir = fs::temp_directory_path() / ("loom_atomic_abort_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  EXPECT_EXIT(
      {
        core::StopSignals handlers({"TERM"}, 0ms);
        AtomicFile f(dir / "ckpt.safetensors");
        const std::string block(4 << 20, 'x');
        f.write(block);  // more than the buffer: bytes reach the temporary file
        if (!fs::exists(f.temp_path()) || fs::file_size(f.temp_path()) == 0) std::_Exit(3);
        ::kill(::getpid(), SIGTERM);  // to the process: the stop signals' thread takes it
        for (int i = 0; i < 500 && !core::stop_requested(); ++i) std::this_thread::sleep_for(10ms);
        std::this_thread::sleep_for(1100ms);
        ::kill(::getpid(), SIGTERM);
        std::this_thread::sleep_for(5s);
        std::_Exit(4);
      },
      ::testing::ExitedWithCode(128 + SIGTERM), "");
  EXPECT_TRUE(fs::is_empty(dir)) << fs::directory_iterator(dir)->path();
  fs::remove_all(dir);
}

}  // namespace
}  // namespace loom::io
