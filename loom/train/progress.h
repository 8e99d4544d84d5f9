// A progress display for one epoch: bar, samples/s and ETA.
//
//   // given: data::DataLoader& loader, double loss
//   train::ProgressBar bar(std::cerr, {.total_steps = loader.num_batches(), .label = "epoch 3/10"});
//   for (data::Batch& batch : loader.begin(/*epoch=*/2)) {
//     ...
//     bar.step(batch.size(), format("loss {}", loss));   // one more step of batch.size() samples
//   }
//   bar.finish();
//
// On a terminal it redraws one line in place ("\r"), at most every
// `redraw_every`:
//   epoch 3/10  45%|#############                | 45/100 [00:09<00:11, 1234.5 samples/s] loss 0.41
// Anywhere else (a log file, a pipe, CI) it prints plain lines, one each time
// progress passes another `line_every_percent` percent or `line_every` has
// passed since the last line, and one at finish():
//   epoch 3/10 45/100 (45%) elapsed 00:09 ETA 00:11 1234.5 samples/s loss 0.41
// Whether the output is a terminal is isatty() of the FILE*, or of stdout /
// stderr for std::cout / std::cerr / std::clog (other streams are not
// terminals); `interactive` overrides it. The rate is samples/s when samples
// are counted, else steps/s, averaged since the bar was made.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>

namespace loom::train {

struct ProgressOptions {
  int64_t total_steps = 0;                       // steps in the epoch; 0 = unknown: no bar, no ETA
  std::string label{};                           // printed first, e.g. "epoch 3/10"
  std::optional<bool> interactive{};             // unset: detect a terminal
  std::chrono::milliseconds redraw_every{100};   // terminal: at most this often
  int64_t line_every_percent = 10;               // otherwise: a line per this much progress
  std::chrono::milliseconds line_every{30'000};  // ... or at least this often
  int64_t bar_width = 30;
  // The time source; unset: std::chrono::steady_clock::now. Tests set it.
  std::function<std::chrono::steady_clock::time_point()> clock{};
};

class ProgressBar {
 public:
  ProgressBar(std::ostream& out, ProgressOptions options);
  ProgressBar(std::FILE* out, ProgressOptions options);

  // One more step covering `samples` samples (0 if not counted).
  void step(int64_t samples = 0, std::string_view status = {});
  // Absolute progress: `steps` steps and `samples` samples done so far.
  void update(int64_t steps, int64_t samples, std::string_view status = {});
  // Shows the final state and ends the line. Later calls do nothing.
  void finish(std::string_view status = {});

  bool interactive() const { return interactive_; }
  int64_t steps() const { return steps_; }
  int64_t samples() const { return samples_; }

 private:
  using Clock = std::chrono::steady_clock;
  void init();
  Clock::time_point now() const;
  void maybe_show(bool force);
  std::string render_line(double elapsed_s, bool terminal) const;
  void write(const std::string& text);

  ProgressOptions options_;
  std::ostream* stream_ = nullptr;
  std::FILE* file_ = nullptr;
  int fd_ = -1;  // for isatty and the terminal width; -1 if unknown
  bool interactive_ = false;
  bool finished_ = false;

  int64_t steps_ = 0, samples_ = 0;
  std::string status_;
  Clock::time_point start_, last_shown_;
  int64_t shown_steps_ = -1;  // progress of the last line / redraw
  std::string shown_status_;
  int64_t last_bucket_ = 0;  // non-terminal: last line_every_percent bucket printed
  size_t last_width_ = 0;    // terminal: length of the line drawn, to blank leftovers
};

// "05:07" for 307 s, "1:02:03" for 3723 s, "--:--" for NaN / negative.
std::string format_duration(double seconds);

}  // namespace loom::train
