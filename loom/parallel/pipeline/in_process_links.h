// Pipeline links between ranks that are threads of one process: one FIFO
// queue per (sender, receiver, activation or gradient), as check_plan
// assumes. For tests and for pipelines of threads.
//
//   // given: parallel::pipeline::StageWork& work
//   using namespace parallel::pipeline;
//   Plan plan = compile_schedule({.kind = io::PipelineSchedule::GPipe, .stages = 2, .microbatches = 4});
//   InProcessLinks links(2);
//   std::thread other([&] { run_rank(plan, 1, work, links.rank(1), std::chrono::steady_clock::now() + 5s); });
//   run_rank(plan, 0, work, links.rank(0), std::chrono::steady_clock::now() + 5s);
//   other.join();
//
// A receive waits for the next message of its channel until the deadline
// (TimeoutError: "rank 1 waited for the activation of micro-batch 3 for chunk
// 1 from rank 0"); a message that is not the one expected is a CommError
// naming both. abort(why) wakes every waiting receive with a CommError, so a
// rank that failed does not leave the others waiting for their deadlines.
#pragma once

#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "loom/parallel/pipeline/executor.h"

namespace loom::parallel::pipeline {

class InProcessLinks {
 public:
  explicit InProcessLinks(int num_ranks);
  ~InProcessLinks();
  InProcessLinks(const InProcessLinks&) = delete;
  InProcessLinks& operator=(const InProcessLinks&) = delete;

  StageLinks& rank(int r);  // rank r's end; lives as long as this object
  void abort(const std::string& why);

 private:
  class End;
  struct Message {
    int microbatch = 0, to_chunk = 0;
    core::Tensor payload;
  };
  using Channel = std::tuple<int, int, bool>;  // sender, receiver, gradient?

  void send(Channel channel, Message message);
  core::Tensor recv(Channel channel, int microbatch, int chunk, Deadline deadline);

  std::mutex mutex_;
  std::condition_variable arrived_;
  std::map<Channel, std::deque<Message>> queues_;
  std::string aborted_;
  std::vector<std::unique_ptr<End>> ends_;
};

}  // namespace loom::parallel::pipeline
