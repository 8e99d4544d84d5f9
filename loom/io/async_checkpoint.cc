#include "loom/io/async_checkpoint.h"

#include <utility>

#include "loom/ops/creation.h"

namespace loom::io {

NamedTensors snapshot(const NamedTensors& tensors, const std::function<bool(const std::string&)>& owned) {
  NamedTensors out;
  out.reserve(tensors.size());
  for (const auto& [name, t] : tensors) {
    // An undefined tensor is left for the write to refuse, naming the file and the tensor.
    out.emplace_back(name, t.defined() && !(owned && owned(name)) ? ops::clone(t) : t);
  }
  return out;
}

AsyncCheckpointWriter::AsyncCheckpointWriter(CheckpointManager& manager)
    : manager_(manager), thread_([this] { run(); }) {}

AsyncCheckpointWriter::~AsyncCheckpointWriter() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();  // run() finishes a submitted job before it looks at stop_
}

void AsyncCheckpointWriter::wait_locked(std::unique_lock<std::mutex>& lock) {
  cv_.wait(lock, [this] { return !busy_; });
  if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
}

void AsyncCheckpointWriter::submit(int64_t step, NamedTensors tensors, Metadata metadata) {
  {
    std::unique_lock lock(mu_);
    wait_locked(lock);
    job_ = Job{.step = step, .tensors = std::move(tensors), .metadata = std::move(metadata)};
    busy_ = true;
  }
  cv_.notify_all();
}

std::optional<std::filesystem::path> AsyncCheckpointWriter::wait() {
  std::unique_lock lock(mu_);
  wait_locked(lock);
  return last_path_;
}

bool AsyncCheckpointWriter::busy() const {
  std::lock_guard lock(mu_);
  return busy_;
}

void AsyncCheckpointWriter::run() {
  std::unique_lock lock(mu_);
  for (;;) {
    cv_.wait(lock, [this] { return job_.has_value() || stop_; });
    if (!job_) return;  // stopping, nothing left to write
    std::optional<Job> job = std::exchange(job_, std::nullopt);
    lock.unlock();
    std::optional<std::filesystem::path> path;
    std::exception_ptr error;
    try {
      path = manager_.save(job->step, job->tensors, job->metadata);
    } catch (...) {
      error = std::current_exception();
    }
    job.reset();  // the snapshot's memory goes back before submit() can hand over the next one
    lock.lock();
    if (path) last_path_ = std::move(path);
    error_ = error;
    busy_ = false;
    cv_.notify_all();
  }
}

}  // namespace loom::io
