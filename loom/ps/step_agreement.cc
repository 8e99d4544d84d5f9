#include "loom/ps/step_agreement.h"

#include <cstdio>
#include <utility>

#include "loom/core/error.h"

namespace loom::ps {
namespace {

std::string event_key(int64_t n) { return "loom.vote." + std::to_string(n); }

}  // namespace

StepAgreement::StepAgreement(comm::CoordinatorClient& client, StepAgreementOptions options)
    : client_(client), options_(options) {
  LOOM_CHECK_T(ConfigError, options_.margin >= 1, "StepAgreement: margin must be >= 1, got {}", options_.margin);
}

StepAgreement::Event StepAgreement::parse(const std::string& value) const {
  unsigned bits = 0;
  long long step = 0;
  char end = 0;
  LOOM_CHECK_T(CommError, std::sscanf(value.c_str(), "%u@%lld%c", &bits, &step, &end) == 2,
               "step agreement: coordinator key {} holds '{}', not '<bits>@<step>'", event_key(next_), value);
  return {bits, step};
}

void StepAgreement::learn() {
  if (pending_) return;
  if (std::optional<std::string> value = client_.try_get(event_key(next_), options_.timeout)) pending_ = parse(*value);
}

StepAgreement::~StepAgreement() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (poller_.joinable()) poller_.join();
}

void StepAgreement::poll_loop() {
  std::unique_lock lock(mu_);
  for (;;) {
    cv_.wait(lock, [&] { return stopping_ || ask_.has_value(); });
    if (stopping_) return;
    const std::string key = std::move(*ask_);
    ask_.reset();
    lock.unlock();
    std::optional<std::string> value;
    std::exception_ptr error;
    try {
      value = client_.try_get(key, options_.timeout);
    } catch (...) {
      error = std::current_exception();
    }
    lock.lock();
    answer_ = std::move(value);
    error_ = error;
    answered_ = true;
    cv_.notify_all();
  }
}

void StepAgreement::collect() {
  if (!polling_) return;
  std::optional<std::string> value;
  {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return answered_; });  // try_get's own timeout bounds the wait
    polling_ = answered_ = false;
    if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
    value = std::move(answer_);
  }
  if (value && !pending_) pending_ = parse(*value);
}

void StepAgreement::start_polling() {
  if (pending_) return;
  if (!poller_.joinable()) poller_ = std::thread([this] { poll_loop(); });
  {
    std::lock_guard lock(mu_);
    ask_ = event_key(next_);
    polling_ = true;
  }
  cv_.notify_all();
}

uint32_t StepAgreement::vote(uint32_t wish, int64_t steps) {
  collect();
  if (!pending_ && wish != 0) {
    const std::string mine = std::to_string(wish) + "@" + std::to_string(steps + options_.margin + 1);
    pending_ = parse(client_.propose(event_key(next_), mine, options_.timeout));  // the winner, maybe not mine
  }
  uint32_t act = 0;
  if (pending_ && pending_->bits != 0 && steps >= pending_->step) {  // not none, the end, or not yet
    act = pending_->bits;
    pending_.reset();
    ++next_;
  }
  start_polling();
  return act;
}

std::optional<uint32_t> StepAgreement::finish(int64_t steps) {
  collect();
  learn();
  if (!pending_) pending_ = parse(client_.propose(event_key(next_), "0@0", options_.timeout));
  // The end marker, or an event past every worker's steps (they all have as many with dist_sync and
  // dist_async alike: the same loader and max_steps), which nobody acts on.
  if (pending_->bits == 0 || pending_->step > steps) return std::nullopt;
  const uint32_t act = pending_->bits;
  pending_.reset();
  ++next_;
  return act;
}

}  // namespace loom::ps
