// Liveness alone: heartbeat expiry over made-up time points.
#include "loom/comm/rendezvous/liveness.h"

#include <gtest/gtest.h>

#include "coordinator_state_testing.h"

namespace loom::comm::coordinator_state {
namespace {

using namespace testing;

TEST(Liveness, AProcessSilentForLongerThanTheTimeoutExpires) {
  Liveness live(100ms);
  live.watch("b", t0);
  live.watch("a", t0 + 50ms);
  EXPECT_TRUE(live.silent(t0 + 100ms).empty());  // exactly the timeout: not yet
  auto s = live.silent(t0 + 101ms);
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(s[0].id, "b");
  EXPECT_EQ(s[0].silent_for, 101ms);
  s = live.silent(t0 + 300ms);
  ASSERT_EQ(s.size(), 2u);  // by id
  EXPECT_EQ(s[0].id, "a");
  EXPECT_EQ(s[0].silent_for, 250ms);
}

TEST(Liveness, EveryMessageRenews) {
  Liveness live(100ms);
  live.watch("a", t0);
  for (int i = 1; i <= 10; ++i) {
    live.heard("a", t0 + i * 90ms);
    EXPECT_TRUE(live.silent(t0 + i * 90ms + 100ms).empty());
  }
  EXPECT_EQ(live.silent(t0 + 1001ms).size(), 1u);
}

TEST(Liveness, AProcessForgottenOrNeverWatchedNeverExpires) {
  Liveness live(100ms);
  live.watch("a", t0);
  live.forget("a");
  live.heard("a", t0 + 10ms);  // a heartbeat after leaving does not watch it again
  live.heard("b", t0);
  EXPECT_FALSE(live.watched("a"));
  EXPECT_FALSE(live.watched("b"));
  EXPECT_TRUE(live.silent(t0 + 1h).empty());
}

}  // namespace
}  // namespace loom::comm::coordinator_state
