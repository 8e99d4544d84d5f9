#include "loom/train/progress.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <iostream>

#include "loom/core/error.h"

namespace loom::train {
namespace {

std::string format_rate(double per_s, const char* unit) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.1f %s/s", per_s, unit);
  return buf;
}

// Columns of the terminal on `fd`, or 0 if unknown.
size_t terminal_columns(int fd) {
  winsize ws{};
  if (fd >= 0 && ::ioctl(fd, TIOCGWINSZ, &ws) == 0) return ws.ws_col;
  return 0;
}

}  // namespace

std::string format_duration(double seconds) {
  if (!(seconds >= 0) || !std::isfinite(seconds)) return "--:--";
  const auto total = static_cast<int64_t>(seconds);
  const int64_t h = total / 3600, m = total / 60 % 60, s = total % 60;
  char buf[64];
  if (h > 0) {
    std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", static_cast<long long>(h), static_cast<long long>(m),
                  static_cast<long long>(s));
  } else {
    std::snprintf(buf, sizeof buf, "%02lld:%02lld", static_cast<long long>(m), static_cast<long long>(s));
  }
  return buf;
}

ProgressBar::ProgressBar(std::ostream& out, ProgressOptions options)
    : options_(std::move(options)), stream_(&out) {
  if (&out == &std::cout) fd_ = STDOUT_FILENO;
  if (&out == &std::cerr || &out == &std::clog) fd_ = STDERR_FILENO;
  init();
}

ProgressBar::ProgressBar(std::FILE* out, ProgressOptions options) : options_(std::move(options)), file_(out) {
  LOOM_CHECK(out != nullptr, "ProgressBar: output FILE* is null");
  fd_ = ::fileno(out);
  init();
}

void ProgressBar::init() {
  LOOM_CHECK(options_.total_steps >= 0, "ProgressBar: total_steps must be >= 0, got {}",
             options_.total_steps);
  LOOM_CHECK(options_.line_every_percent >= 1 && options_.line_every_percent <= 100,
             "ProgressBar: line_every_percent must be in [1, 100], got {}", options_.line_every_percent);
  LOOM_CHECK(options_.bar_width >= 0, "ProgressBar: bar_width must be >= 0, got {}", options_.bar_width);
  interactive_ = options_.interactive.value_or(fd_ >= 0 && ::isatty(fd_) == 1);
  start_ = last_shown_ = now();
}

ProgressBar::Clock::time_point ProgressBar::now() const {
  return options_.clock ? options_.clock() : Clock::now();
}

void ProgressBar::step(int64_t samples, std::string_view status) {
  update(steps_ + 1, samples_ + samples, status);
}

void ProgressBar::update(int64_t steps, int64_t samples, std::string_view status) {
  if (finished_) return;
  steps_ = steps;
  samples_ = samples;
  status_.assign(status);
  maybe_show(false);
}

void ProgressBar::finish(std::string_view status) {
  if (finished_) return;
  if (!status.empty()) status_.assign(status);
  maybe_show(true);
  if (interactive_) write("\n");
  finished_ = true;
}

void ProgressBar::maybe_show(bool force) {
  const Clock::time_point t = now();
  const double elapsed_s = std::chrono::duration<double>(t - start_).count();
  const auto since_shown = t - last_shown_;
  const int64_t total = options_.total_steps;

  if (interactive_) {
    const bool done = total > 0 && steps_ >= total;
    if (!force && !done && since_shown < options_.redraw_every) return;
    std::string line = render_line(elapsed_s, true);
    // Longer than the terminal, the line would wrap and "\r" could not redraw it.
    if (const size_t cols = terminal_columns(fd_); cols > 1 && line.size() > cols - 1) line.resize(cols - 1);
    const size_t width = line.size();
    if (width < last_width_) line.append(last_width_ - width, ' ');  // blank what the longer line left
    write("\r" + line);
    last_width_ = width;
  } else {
    const bool changed = steps_ != shown_steps_ || status_ != shown_status_;
    int64_t bucket = last_bucket_;
    if (total > 0) bucket = std::min(steps_, total) * 100 / total / options_.line_every_percent;
    const bool due = bucket > last_bucket_ || since_shown >= options_.line_every;
    if (!changed || !(force || due)) return;
    last_bucket_ = std::max(bucket, last_bucket_);
    write(render_line(elapsed_s, false) + "\n");
  }
  last_shown_ = t;
  shown_steps_ = steps_;
  shown_status_ = status_;
}

std::string ProgressBar::render_line(double elapsed_s, bool terminal) const {
  const int64_t total = options_.total_steps;
  const double rate = elapsed_s > 0 ? static_cast<double>(samples_ > 0 ? samples_ : steps_) / elapsed_s : 0.0;
  const std::string rate_text = elapsed_s > 0 ? format_rate(rate, samples_ > 0 ? "samples" : "steps") : "";
  const double eta_s = (total > 0 && steps_ > 0)
                           ? elapsed_s * static_cast<double>(std::max<int64_t>(total - steps_, 0)) /
                                 static_cast<double>(steps_)
                           : -1.0;
  const int64_t percent = total > 0 ? std::min(steps_, total) * 100 / total : 0;

  std::string line = options_.label;
  auto sep = [&line] {
    if (!line.empty()) line += ' ';
  };
  if (terminal) {
    if (total > 0) {
      char pct[16];
      std::snprintf(pct, sizeof pct, "%3lld%%", static_cast<long long>(percent));
      sep();
      line += pct;
      const int64_t w = options_.bar_width;
      if (w > 0) {
        const int64_t filled = std::min(steps_, total) * w / total;
        line += '|';
        line.append(static_cast<size_t>(filled), '#');
        line.append(static_cast<size_t>(w - filled), ' ');
        line += '|';
      }
      line += ' ' + std::to_string(steps_) + '/' + std::to_string(total);
    } else {
      sep();
      line += std::to_string(steps_);
    }
    line += " [" + format_duration(elapsed_s);
    if (total > 0) line += '<' + format_duration(eta_s);
    if (!rate_text.empty()) line += ", " + rate_text;
    line += ']';
  } else {
    sep();
    line += std::to_string(steps_);
    if (total > 0) line += '/' + std::to_string(total) + " (" + std::to_string(percent) + "%)";
    line += " elapsed " + format_duration(elapsed_s);
    if (total > 0) line += " ETA " + format_duration(eta_s);
    if (!rate_text.empty()) line += ' ' + rate_text;
  }
  if (!status_.empty()) line += ' ' + status_;
  return line;
}

void ProgressBar::write(const std::string& text) {
  // Progress output is best effort: a closed pipe must not stop training.
  if (file_ != nullptr) {
    std::fwrite(text.data(), 1, text.size(), file_);
    std::fflush(file_);
  } else {
    stream_->write(text.data(), static_cast<std::streamsize>(text.size()));
    stream_->flush();
  }
}

}  // namespace loom::train
