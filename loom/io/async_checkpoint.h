// Checkpoints written by a background thread, so that a training step does
// not wait for the disk: the step copies what must be saved (snapshot) and
// hands the copy over; the thread writes and fsyncs it through
// CheckpointManager::save (atomic, pruned to keep_last).
//
//   // given: io::CheckpointManager& ckpts, int64_t step, const io::NamedTensors& state, io::Metadata meta
//   io::AsyncCheckpointWriter writer(ckpts);              // one background thread
//   writer.submit(step, io::snapshot(state), meta);       // waits for the previous write only
//   std::optional<std::filesystem::path> last = writer.wait();   // before exit: rethrows a failed write
//
// At most one write is in flight: submit() first waits for the previous one,
// so a slow disk slows training down instead of queueing snapshots without
// bound. Memory: while a write is in flight and the next snapshot is taken,
// two copies exist besides the live state; call wait() before snapshot() to
// keep it to one.
//
// Errors: a failed write is reported by the next submit() or wait(), once,
// as the exception the write threw (IoError naming the file for I/O; a
// ValueError for tensors that cannot be saved). That submit() then hands
// nothing over. The previous checkpoints are untouched by a failed write
// (atomic_file.h), so a crash or an error mid-write loses only the new one.
//
// The waits have no timeout, on purpose: they wait for our own thread doing
// local disk I/O, which finishes or fails (an fsync returns). On a network
// file system that stops answering they would hang, as a synchronous save()
// in the training step would.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <functional>
#include <mutex>
#include <optional>
#include <thread>

#include "loom/io/checkpoint.h"
#include "loom/io/safetensors.h"

namespace loom::io {

// A deep copy of `tensors` (ops::clone of each): same names, shapes,
// dtypes and devices, each in storage of its own, contiguous, without
// autograd history; an undefined tensor stays undefined, for the write to
// refuse. What a training step hands to submit() so it can go on changing
// the originals. Tensors for which `owned(name)` holds are copies already
// (the optimizer state of Optimizer::state_snapshot()): passed on as they are.
NamedTensors snapshot(const NamedTensors& tensors, const std::function<bool(const std::string&)>& owned = {});

class AsyncCheckpointWriter {
 public:
  // `manager` must outlive the writer, and nobody else may save() through it
  // while a write is in flight (call wait() first); its latest() and list()
  // see whole checkpoints only, the newest once wait() returned.
  explicit AsyncCheckpointWriter(CheckpointManager& manager);
  // Waits for the write in flight (and one submitted but not yet started).
  // Never throws and logs nothing: an error of that write is lost; call
  // wait() first to see it.
  ~AsyncCheckpointWriter();
  AsyncCheckpointWriter(const AsyncCheckpointWriter&) = delete;
  AsyncCheckpointWriter& operator=(const AsyncCheckpointWriter&) = delete;

  // Waits until no write is in flight, rethrows the error of a failed one
  // (then hands nothing over), else hands `tensors` and `metadata` to the
  // thread, which writes the checkpoint of `step` and prunes. Takes
  // ownership: the caller must not change the tensors' data afterwards
  // (pass a snapshot()). They are released when the write ends.
  void submit(int64_t step, NamedTensors tensors, Metadata metadata = {});

  // Waits until no write is in flight; rethrows a failed write's error
  // (once). Returns the path of the last checkpoint written, if any.
  std::optional<std::filesystem::path> wait();

  // A write submitted and not yet finished.
  bool busy() const;

 private:
  struct Job {
    int64_t step = 0;
    NamedTensors tensors;
    Metadata metadata;
  };
  void run();
  // Caller holds mu_: waits for !busy_, rethrows and clears error_.
  void wait_locked(std::unique_lock<std::mutex>& lock);

  CheckpointManager& manager_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::optional<Job> job_;  // submitted, not yet taken by the thread
  bool busy_ = false;       // a job submitted or being written
  bool stop_ = false;
  std::exception_ptr error_;  // of the last write, until reported
  std::optional<std::filesystem::path> last_path_;
  std::thread thread_;  // last: starts after the members it uses
};

}  // namespace loom::io
