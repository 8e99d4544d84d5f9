#include "loom/parallel/pipeline/in_process_links.h"

#include "loom/core/error.h"

namespace loom::parallel::pipeline {

class InProcessLinks::End : public StageLinks {
 public:
  End(InProcessLinks& hub, int rank) : hub_(hub), rank_(rank) {}
  void send_activation(int peer, int chunk, int microbatch, core::Tensor t) override {
    hub_.send({rank_, peer, false}, {microbatch, chunk + 1, std::move(t)});
  }
  void send_gradient(int peer, int chunk, int microbatch, core::Tensor t) override {
    hub_.send({rank_, peer, true}, {microbatch, chunk - 1, std::move(t)});
  }
  core::Tensor recv_activation(int peer, int chunk, int microbatch, Deadline deadline) override {
    return hub_.recv({peer, rank_, false}, microbatch, chunk, deadline);
  }
  core::Tensor recv_gradient(int peer, int chunk, int microbatch, Deadline deadline) override {
    return hub_.recv({peer, rank_, true}, microbatch, chunk, deadline);
  }

 private:
  InProcessLinks& hub_;
  int rank_;
};

InProcessLinks::InProcessLinks(int num_ranks) {
  LOOM_CHECK_T(ConfigError, num_ranks >= 1, "pipeline links: need at least one rank, got {}", num_ranks);
  for (int r = 0; r < num_ranks; ++r) ends_.push_back(std::make_unique<End>(*this, r));
}

InProcessLinks::~InProcessLinks() = default;

StageLinks& InProcessLinks::rank(int r) {
  LOOM_CHECK(r >= 0 && r < static_cast<int>(ends_.size()), "pipeline links: rank {} of {}", r, ends_.size());
  return *ends_[r];
}

void InProcessLinks::abort(const std::string& why) {
  {
    std::lock_guard lock(mutex_);
    if (aborted_.empty()) aborted_ = why.empty() ? "aborted" : why;
  }
  arrived_.notify_all();
}

void InProcessLinks::send(Channel channel, Message message) {
  const int to = std::get<1>(channel);
  LOOM_CHECK(to >= 0 && to < static_cast<int>(ends_.size()), "pipeline links: send to rank {} of {}", to,
             ends_.size());
  {
    std::lock_guard lock(mutex_);
    queues_[channel].push_back(std::move(message));
  }
  arrived_.notify_all();
}

core::Tensor InProcessLinks::recv(Channel channel, int microbatch, int chunk, Deadline deadline) {
  const auto [from, to, gradient] = channel;
  const char* kind = gradient ? "gradient" : "activation";
  std::unique_lock lock(mutex_);
  std::deque<Message>& queue = queues_[channel];
  const bool ready = arrived_.wait_until(lock, deadline, [&] { return !queue.empty() || !aborted_.empty(); });
  LOOM_CHECK_T(CommError, aborted_.empty(),
               "pipeline: rank {} stopped waiting for the {} of micro-batch {} for chunk {} from rank {}: {}", to, kind,
               microbatch, chunk, from, aborted_);
  LOOM_CHECK_T(TimeoutError, ready,
               "pipeline: rank {} waited for the {} of micro-batch {} for chunk {} from rank {} past its deadline", to,
               kind, microbatch, chunk, from);
  Message m = std::move(queue.front());
  queue.pop_front();
  LOOM_CHECK_T(CommError, m.microbatch == microbatch && m.to_chunk == chunk,
               "pipeline: rank {} expected the {} of micro-batch {} for chunk {} from rank {}, got micro-batch {} for "
               "chunk {}",
               to, kind, microbatch, chunk, from, m.microbatch, m.to_chunk);
  return std::move(m.payload);
}

}  // namespace loom::parallel::pipeline
