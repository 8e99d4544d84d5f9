// MemberTable alone: registration checks, rank assignment, the registration
// deadline, leaving and loss, with no socket and made-up time points.
#include "loom/comm/rendezvous/membership.h"

#include <gtest/gtest.h>

#include "coordinator_state_testing.h"

namespace loom::comm::coordinator_state {
namespace {

using namespace testing;
using coordinator_protocol::decode_lost;
using coordinator_protocol::decode_registered;

TEST(MemberTable, FormsWhenTheLastExpectedProcessRegistersAskedRanksFirstThenByHost) {
  MemberTable members(3, 1);
  Outbox out;
  join(members, {{"a", asking("worker", "hostB")}, {"b", asking("server", "hostA")},
                 {"c", asking("worker", "hostA")}},
       out);
  EXPECT_TRUE(out.replies.empty());  // one worker still missing
  EXPECT_FALSE(members.formed());
  join(members, {{"d", asking("worker", "hostB", 0)}}, out);
  ASSERT_TRUE(members.formed());
  const auto replies = take(out);
  ASSERT_EQ(replies.size(), 4u);  // every registered process, by routing id
  std::map<std::string, Membership> got;
  for (const auto& r : replies) {
    ASSERT_EQ(r.type, Type::Registered);
    got[r.to] = decode_registered(r.body);
  }
  EXPECT_EQ(got["d"].rank, 0);  // asked for
  EXPECT_EQ(got["c"].rank, 1);  // then hostA before hostB
  EXPECT_EQ(got["a"].rank, 2);
  EXPECT_EQ(got["b"].role, "server");
  EXPECT_EQ(got["b"].rank, 0);
  const Membership& m = got["a"];
  EXPECT_EQ(m.num_hosts, 2);
  EXPECT_EQ(m.at("worker", 0).host_index, 0);  // hostB: first in rank order
  EXPECT_EQ(m.at("worker", 1).host_index, 1);
  EXPECT_EQ(m.at("worker", 2).local_rank, 1);  // second worker on hostB
  EXPECT_EQ(m.at("server", 0).local_rank, 0);
  EXPECT_EQ(members.find("a")->state, ProcessState::Member);
}

TEST(MemberTable, RefusesDuplicateAndImpossibleRegistrations) {
  MemberTable members(2, 0);
  Outbox out;
  join(members, {{"a", asking("worker", "h", 1)}}, out);
  EXPECT_TRUE(out.replies.empty());

  members.register_process("a", 7, asking("worker", "h"), t0, out);  // the same process again
  auto e = only_error(out);
  EXPECT_EQ(e.code, coordinator_protocol::kRefused);
  EXPECT_EQ(e.message, "this process registered already");

  const std::vector<std::pair<coordinator_protocol::RegisterBody, std::string>> refused = {
      {asking("worker", "h", 1), "worker rank 1 is taken already by host h (pid 101)"},
      {asking("worker", "h", 2), "rank 2 asked for, but the job has 2 workers"},
      {asking("server", "h"), "this job has no servers"},
      {asking("chief", "h"), "unknown role 'chief' (worker or server)"},
  };
  for (const auto& [reg, message] : refused) {
    members.hello("b", 5);
    members.register_process("b", 8, reg, t0, out);
    e = only_error(out);
    EXPECT_EQ(e.code, coordinator_protocol::kRefused);
    EXPECT_EQ(e.message, message);
    EXPECT_EQ(members.find("b")->state, ProcessState::Connected);
  }
  join(members, {{"b", asking("worker", "h")}}, out);
  EXPECT_TRUE(members.formed());
  take(out);
  join(members, {{"c", asking("worker", "h")}}, out);
  EXPECT_EQ(only_error(out).message, "the job has formed already (2 workers, 0 servers)");
}

TEST(MemberTable, ARegistrationPastItsDeadlineTimesOutAndFreesItsSlot) {
  MemberTable members(2, 1);
  Outbox out;
  join(members, {{"a", asking("worker", "h", -1, 1000ms)}, {"s", asking("server", "h", -1, 5000ms)}}, out);
  members.expire_registrations(t0 + 999ms, out);
  EXPECT_TRUE(out.replies.empty());
  members.expire_registrations(t0 + 1000ms, out);
  const auto e = only_error(out);
  EXPECT_EQ(e.code, coordinator_protocol::kTimedOut);
  EXPECT_EQ(e.message, "rendezvous timed out: registered so far 1 of 2 workers");
  EXPECT_EQ(members.find("a")->state, ProcessState::Connected);
  // Its slot is free: two new workers complete the job.
  join(members, {{"b", asking("worker", "h")}, {"c", asking("worker", "h")}}, out, t0 + 2s);
  EXPECT_TRUE(members.formed());
  EXPECT_EQ(take(out).size(), 3u);
  EXPECT_EQ(members.find("a")->state, ProcessState::Connected);  // not part of the job
}

TEST(MemberTable, ALostMemberIsRecordedAndEveryOtherWatchedProcessIsTold) {
  MemberTable members(2, 0);
  Outbox out;
  join(members, {{"a", asking("worker", "ha")}, {"b", asking("worker", "hb")}}, out);
  take(out);
  members.hello("late", 9);  // connected, never part of the job: still told
  const LostPeer l = members.declare_lost("a", "no heartbeat for 10 ms", out);
  EXPECT_EQ(l.role, "worker");
  EXPECT_EQ(l.rank, 0);
  EXPECT_EQ(l.host, "ha");
  EXPECT_EQ(l.reason, "no heartbeat for 10 ms");
  const auto notices = take(out);
  ASSERT_EQ(notices.size(), 2u);
  for (const auto& n : notices) {
    EXPECT_NE(n.to, "a");
    EXPECT_EQ(n.type, Type::Lost);
    EXPECT_EQ(n.request, 0u);
    EXPECT_EQ(decode_lost(n.body).rank, 0);
  }
  ASSERT_EQ(members.lost().size(), 1u);
  EXPECT_FALSE(members.hello("a", 1));  // a lost process cannot come back
  EXPECT_FALSE(members.finished());     // b is still a member
  members.mark_left("b");
  EXPECT_TRUE(members.finished());
  EXPECT_EQ(members.lost().size(), 1u);  // leaving is not being lost
}

}  // namespace
}  // namespace loom::comm::coordinator_state
