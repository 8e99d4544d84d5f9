// Barriers alone, over a MemberTable formed without a socket: completion,
// scopes, retries, a member lost or gone while others wait, deadlines.
#include "loom/comm/rendezvous/barriers.h"

#include <gtest/gtest.h>

#include "coordinator_state_testing.h"

namespace loom::comm::coordinator_state {
namespace {

using namespace testing;
using coordinator_protocol::BarrierBody;
using coordinator_protocol::kPeerLost;
using coordinator_protocol::kRefused;
using coordinator_protocol::kTimedOut;

// Two workers ("w0" rank 0 on ha, "w1" rank 1 on hb) and one server ("s0").
MemberTable formed_job() {
  MemberTable members(2, 1);
  Outbox out;
  join(members, {{"w0", asking("worker", "ha", 0)}, {"w1", asking("worker", "hb", 1)}, {"s0", asking("server", "ha")}},
       out);
  EXPECT_TRUE(members.formed());
  return members;
}

BarrierBody barrier(std::string name, std::string scope = "", std::chrono::milliseconds timeout = 1000ms) {
  return {.name = std::move(name), .scope = std::move(scope), .timeout = timeout};
}

TEST(Barriers, CompletesWhenEveryMemberOfItsScopeHasArrived) {
  MemberTable members = formed_job();
  Barriers barriers;
  Outbox out;
  barriers.arrive("w0", 1, barrier("all"), t0, members, out);
  barriers.arrive("w0", 2, barrier("workers", "worker"), t0, members, out);
  barriers.arrive("w1", 3, barrier("all"), t0, members, out);
  EXPECT_TRUE(out.replies.empty());
  barriers.arrive("w1", 4, barrier("workers", "worker"), t0, members, out);  // the server is not in it
  auto done = take(out);
  ASSERT_EQ(done.size(), 2u);
  EXPECT_EQ(done[0].to, "w0");
  EXPECT_EQ(done[0].request, 2u);
  EXPECT_EQ(done[1].to, "w1");
  EXPECT_EQ(done[1].type, Type::Done);
  EXPECT_EQ(barriers.pending(), 1u);
  barriers.arrive("s0", 5, barrier("all"), t0, members, out);
  EXPECT_EQ(take(out).size(), 3u);
  EXPECT_EQ(barriers.pending(), 0u);
}

TEST(Barriers, ARetryReplacesTheEarlierArrival) {
  MemberTable members = formed_job();
  Barriers barriers;
  Outbox out;
  barriers.arrive("w0", 1, barrier("b", "worker"), t0, members, out);
  barriers.arrive("w0", 2, barrier("b", "worker"), t0, members, out);
  EXPECT_TRUE(out.replies.empty());  // w0 twice is not both workers
  barriers.arrive("w1", 3, barrier("b", "worker"), t0, members, out);
  auto done = take(out);
  ASSERT_EQ(done.size(), 2u);
  EXPECT_EQ(done[0].to, "w0");
  EXPECT_EQ(done[0].request, 2u);  // the retry is answered, not the first try
}

TEST(Barriers, RefusesWhatIsNotAMemberOfItsScope) {
  MemberTable members = formed_job();
  members.hello("stranger", 1);
  Barriers barriers;
  Outbox out;
  barriers.arrive("stranger", 1, barrier("b"), t0, members, out);
  EXPECT_EQ(only_error(out).message, "barrier before this process registered");
  barriers.arrive("s0", 2, barrier("b", "worker"), t0, members, out);
  EXPECT_EQ(only_error(out).message, "a server cannot enter a barrier of the workers");
  barriers.arrive("s0", 3, barrier("b", "chief"), t0, members, out);
  EXPECT_EQ(only_error(out).message, "unknown role 'chief'");
  barriers.arrive("w0", 4, barrier("b", "worker"), t0, members, out);
  barriers.arrive("w1", 5, barrier("b"), t0, members, out);
  const auto e = only_error(out);
  EXPECT_EQ(e.code, kRefused);
  EXPECT_EQ(e.message, "barrier 'b' was entered for 'worker' and now for ''");
}

TEST(Barriers, AMemberLostWhileOthersWaitFailsThemAndLaterArrivals) {
  MemberTable members = formed_job();
  Barriers barriers;
  Outbox out;
  barriers.arrive("w0", 1, barrier("all"), t0, members, out);
  barriers.arrive("s0", 2, barrier("servers", "server"), t0, members, out);  // completes at once: one server
  EXPECT_EQ(take(out).size(), 1u);
  barriers.arrive("s0", 3, barrier("all"), t0, members, out);
  barriers.arrive("w0", 4, barrier("workers", "worker"), t0, members, out);

  const LostPeer l = members.declare_lost("w1", "killed", out);
  take(out);  // the Lost notices
  barriers.fail_role(l.role, l.describe(), out);
  auto failed = take(out);
  ASSERT_EQ(failed.size(), 3u);  // both waiters of "all", w0 in "workers"
  for (const auto& r : failed) {
    ASSERT_EQ(r.type, Type::Error);
    const auto e = coordinator_protocol::decode_error(r.body);
    EXPECT_EQ(e.code, kPeerLost);
    EXPECT_NE(e.message.find(l.describe()), std::string::npos) << e.message;
  }
  EXPECT_EQ(barriers.pending(), 0u);

  barriers.arrive("w0", 5, barrier("next"), t0, members, out);  // fails at once, names the lost one
  auto e = only_error(out);
  EXPECT_EQ(e.code, kPeerLost);
  EXPECT_EQ(e.message, "barrier 'next': worker 1 on host hb was lost");
  barriers.arrive("s0", 6, barrier("servers2", "server"), t0, members, out);  // a server barrier still works
  EXPECT_EQ(take(out)[0].type, Type::Done);
}

TEST(Barriers, AWaiterPastItsDeadlineTimesOutNamingWhoIsMissing) {
  MemberTable members = formed_job();
  Barriers barriers;
  Outbox out;
  barriers.arrive("w0", 1, barrier("b", "", 100ms), t0, members, out);
  barriers.arrive("s0", 2, barrier("b", "", 300ms), t0, members, out);
  barriers.expire(t0 + 99ms, members, out);
  EXPECT_TRUE(out.replies.empty());
  barriers.expire(t0 + 100ms, members, out);
  auto e = only_error(out);
  EXPECT_EQ(e.code, kTimedOut);
  EXPECT_EQ(e.message, "barrier 'b' timed out waiting for worker 1 on host hb");  // s0 has arrived
  EXPECT_EQ(barriers.pending(), 1u);  // s0 still waits
  barriers.expire(t0 + 300ms, members, out);
  EXPECT_EQ(only_error(out).message, "barrier 'b' timed out waiting for worker 0 on host ha, worker 1 on host hb");
  EXPECT_EQ(barriers.pending(), 0u);
}

}  // namespace
}  // namespace loom::comm::coordinator_state
