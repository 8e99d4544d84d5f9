// The parameter-server workers' step-boundary agreement through a real
// coordinator: workers in lockstep (dist_sync) all act at the same step
// whichever of them asked (two steps after the wish: a worker reads at a
// boundary the poll it started at the one before), concurrent wishes make
// one event, and a worker that finished its steps acts on what is left and
// then closes the log.
#include "loom/ps/step_agreement.h"

#include <gtest/gtest.h>

#include <barrier>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

#include "loom/core/error.h"

namespace loom::ps {
namespace {

using namespace std::chrono_literals;

const comm::SecurityOptions kPlain{.secret = "", .insecure = true};

struct Job {
  explicit Job(int n) : coordinator({.num_workers = n, .security = kPlain}) {
    std::vector<std::thread> threads;
    clients.resize(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) {
      threads.emplace_back([&, i] {
        auto c = std::make_unique<comm::CoordinatorClient>(coordinator.endpoint(), kPlain, 10s);
        c->register_process({.role = "worker", .host = "h", .rank = i}, 10s);
        clients[static_cast<size_t>(i)] = std::move(c);
      });
    }
    for (auto& t : threads) t.join();
  }
  ~Job() {
    for (auto& c : clients) c->leave();
  }
  comm::Coordinator coordinator;
  std::vector<std::unique_ptr<comm::CoordinatorClient>> clients;
};

// Workers stepping in lockstep (as dist_sync makes them): each step ends at a
// barrier; worker w wishes `wish` after step `at[w]` until served. Returns,
// per worker, the steps at which it acted and on what.
std::vector<std::map<int64_t, uint32_t>> lockstep(Job& job, int64_t steps, std::map<int, std::pair<int64_t, uint32_t>> at) {
  const int n = static_cast<int>(job.clients.size());
  std::vector<std::map<int64_t, uint32_t>> acted(static_cast<size_t>(n));
  std::barrier sync(n);
  std::vector<std::thread> threads;
  for (int w = 0; w < n; ++w) {
    threads.emplace_back([&, w] {
      StepAgreement agreement(*job.clients[static_cast<size_t>(w)]);
      bool wishing = false;
      for (int64_t s = 1; s <= steps; ++s) {
        sync.arrive_and_wait();  // the step: nobody finishes step s before everybody started it
        auto it = at.find(w);
        if (it != at.end() && it->second.first == s) wishing = true;
        const uint32_t wish = wishing ? at[w].second : 0u;
        if (const uint32_t act = agreement.vote(wish, s)) {
          acted[static_cast<size_t>(w)][s] = act;
          if (act & wish) wishing = false;
        }
      }
      while (std::optional<uint32_t> act = agreement.finish(steps)) acted[static_cast<size_t>(w)][steps] |= *act;
    });
  }
  for (auto& t : threads) t.join();
  return acted;
}

TEST(StepAgreement, LockstepWorkersAllActTwoStepsAfterTheWish) {
  for (int n : {1, 3, 4}) {
    Job job(n);
    const auto acted = lockstep(job, 20, {{n - 1, {7, 1u}}});
    for (const auto& a : acted) EXPECT_EQ(a, (std::map<int64_t, uint32_t>{{9, 1u}})) << n << " workers";
  }
}

TEST(StepAgreement, ConcurrentWishesMakeOneEventAndTheLoserIsServedNext) {
  Job job(3);
  // Workers 0 and 1 both wish at step 5 (bits 2 and 1): one wins event 0, the other is served by event 1.
  const auto acted = lockstep(job, 20, {{0, {5, 2u}}, {1, {5, 1u}}});
  ASSERT_EQ(acted[0].size(), 2u);
  EXPECT_EQ(acted[0].begin()->first, 7);
  EXPECT_EQ(std::next(acted[0].begin())->first, 10);  // asked again after acting on the first, at step 8
  uint32_t all = 0;
  for (const auto& [step, bits] : acted[0]) all |= bits;
  EXPECT_EQ(all, 3u);
  for (const auto& a : acted) EXPECT_EQ(a, acted[0]);
}

TEST(StepAgreement, AWishAtTheLastStepIsNobodysEvent) {
  Job job(2);
  const auto acted = lockstep(job, 10, {{1, {10, 1u}}});
  for (const auto& a : acted) EXPECT_TRUE(a.empty());
}

TEST(StepAgreement, AFinishedWorkerActsOnWhatIsLeftThenEndsTheLog) {
  Job job(2);
  StepAgreement fast(*job.clients[0]), slow(*job.clients[1]);
  // dist_async: the slow worker asks after its step 3 (event at step 5); the fast one is done (10 steps).
  EXPECT_EQ(slow.vote(1u, 3), 0u);
  EXPECT_EQ(fast.finish(10), std::optional<uint32_t>(1u));  // past step 5: it acts now
  EXPECT_EQ(fast.finish(10), std::nullopt);                 // and closes the log
  EXPECT_EQ(slow.vote(0u, 4), 0u);
  EXPECT_EQ(slow.vote(0u, 5), 1u);                          // the slow one acts at step 5
  EXPECT_EQ(slow.vote(2u, 6), 0u);                          // a later wish meets the end marker
  EXPECT_EQ(slow.vote(2u, 9), 0u);
  EXPECT_EQ(slow.finish(10), std::nullopt);
}

TEST(StepAgreement, AMarginKeepsAWorkerAheadFromPassingTheEvent) {
  Job job(2);
  StepAgreement a(*job.clients[0], {.margin = 3}), b(*job.clients[1], {.margin = 3});
  EXPECT_EQ(a.vote(1u, 5), 0u);  // event at step 5 + 3 + 1
  EXPECT_EQ(b.vote(0u, 7), 0u);  // b is ahead (dist_ssp) but not past it; its poll starts now
  EXPECT_EQ(b.vote(0u, 8), 0u);  // and tells it of the event here
  EXPECT_EQ(b.vote(0u, 9), 1u);
  EXPECT_EQ(a.vote(0u, 6), 0u);
  EXPECT_EQ(a.vote(0u, 9), 1u);
}

TEST(StepAgreement, AMalformedEventIsACommErrorNamingTheKey) {
  Job job(1);
  job.clients[0]->set("loom.vote.0", "stop now");
  StepAgreement a(*job.clients[0]);
  EXPECT_EQ(a.vote(0u, 1), 0u);  // starts the poll, read at the next boundary
  try {
    a.vote(0u, 2);
    ADD_FAILURE() << "accepted a malformed event";
  } catch (const CommError& e) {
    EXPECT_NE(std::string(e.what()).find("loom.vote.0"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace loom::ps
