// Preemption: signals that ask a process to stop at its next safe point.
//
//   // given: std::function<bool()> step, std::function<void()> save_checkpoint
//   core::StopSignals handlers({"TERM", "INT", "USR1"}, std::chrono::seconds(120));
//   while (step()) {
//     if (core::stop_requested()) { save_checkpoint(); std::exit(core::kExitPreempted); }
//   }
//
// Cluster schedulers (Slurm's --signal, Kubernetes' termination grace
// period, spot instances) send SIGTERM first and wait a while before they
// kill. The first of the listed signals sets a process-wide request:
// stop_requested() is then true and stop_signal() says which signal it was;
// the training loop finishes its step, writes a checkpoint and exits with
// kExitPreempted. A second listed signal (another one, or the same a second
// or more after the first: closer, it is the same request delivered twice,
// by a launcher that forwards it and a scheduler that signals every
// process), or `grace` after
// the first, ends the process at once with status 128 + the first signal's
// number, as the
// default action would, after removing every temporary file registered
// with AbortCleanup (a checkpoint being written: io::AtomicFile registers
// its temporary file), so no half-written file is left behind. The handler
// does only async-signal-safe work (atomics, unlink, _exit).
//
// How they arrive: the constructor blocks the signals in the calling thread,
// so every thread created after it inherits the mask, and a thread of its
// own takes them with sigtimedwait (whose timeout also measures the grace).
// So no system call of another thread is interrupted by a stop signal
// (EINTR: code that mishandles it is common in libraries, and a stop
// signal is a normal event here). Construct it before the program starts
// threads (`loom train` does, before it joins the job); threads that existed
// before get a handler that does the same work.
//
// One StopSignals at a time (ConfigError otherwise); its destructor restores
// the mask and the previous handlers, and leaves a request that was made set
// (clear_stop_request() clears it). Send the signals to the process (kill),
// not to a thread (raise, pthread_kill): a thread that blocks them keeps them
// pending.
#pragma once

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace loom::core {

// Exit status of a process that stopped on request after saving its work:
// EX_TEMPFAIL, "temporary failure, retry": preempted and resumable.
inline constexpr int kExitPreempted = 75;

// The signal names a job file may list ("TERM", "INT", "USR1", "USR2", "HUP",
// "QUIT"), and their numbers (ValueError naming an unknown one).
const std::vector<std::string>& stop_signal_names();
int signal_number(std::string_view name);

class StopSignals {
 public:
  StopSignals(const std::vector<std::string>& signal_names, std::chrono::milliseconds grace);
  ~StopSignals();
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

 private:
  struct Waiter;
  std::unique_ptr<Waiter> waiter_;
};

// Whether a stop was requested (by a signal or request_stop), and by which
// signal (0: request_stop without one).
bool stop_requested();
int stop_signal();
// Requests a stop as the first signal would (the grace counts from it): tests, and a
// program that learns of a preemption some other way.
void request_stop(int signal = 0);
void clear_stop_request();

// While alive, `path` is removed if the process is ended at once by a
// second signal or the grace running out. At most 64 at a time (InternalError).
class AbortCleanup {
 public:
  explicit AbortCleanup(const std::filesystem::path& path);
  ~AbortCleanup();
  AbortCleanup(const AbortCleanup&) = delete;
  AbortCleanup& operator=(const AbortCleanup&) = delete;

 private:
  int slot_ = -1;
};

}  // namespace loom::core
