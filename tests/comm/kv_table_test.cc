// KvTable alone: values, gets that wait for a set, deadlines, a waiter gone,
// proposals (the first wins) and lookups that do not wait.
#include "loom/comm/rendezvous/kv_table.h"

#include <gtest/gtest.h>

#include <optional>
#include <string>

#include "coordinator_state_testing.h"

namespace loom::comm::coordinator_state {
namespace {

using namespace testing;
using coordinator_protocol::decode_maybe_value;
using coordinator_protocol::decode_value;

TEST(KvTable, AGetOfASetKeyIsAnsweredAtOnceAndASetOverwrites) {
  KvTable kv;
  Outbox out;
  kv.set("k", "one", out);
  EXPECT_TRUE(out.replies.empty());  // the setter's Done is the caller's
  kv.set("k", "two", out);
  kv.get("a", 7, "k", t0 + 1s, out);
  auto r = take(out);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].to, "a");
  EXPECT_EQ(r[0].type, Type::Value);
  EXPECT_EQ(r[0].request, 7u);
  EXPECT_EQ(decode_value(r[0].body).value, "two");
  EXPECT_EQ(kv.waiting(), 0u);
}

TEST(KvTable, AGetWaitsForASetThatComes) {
  KvTable kv;
  Outbox out;
  kv.get("a", 1, "nccl_id", t0 + 1s, out);
  kv.get("b", 2, "nccl_id", t0 + 1s, out);
  kv.get("c", 3, "other", t0 + 1s, out);
  kv.expire(t0 + 999ms, out);
  EXPECT_TRUE(out.replies.empty());
  EXPECT_EQ(kv.waiting(), 3u);
  kv.set("nccl_id", std::string("\0id", 3), out);
  auto r = take(out);
  ASSERT_EQ(r.size(), 2u);  // both getters of the key, in arrival order
  EXPECT_EQ(r[0].to, "a");
  EXPECT_EQ(r[1].to, "b");
  EXPECT_EQ(r[1].request, 2u);
  EXPECT_EQ(decode_value(r[1].body).value, std::string("\0id", 3));
  EXPECT_EQ(kv.waiting(), 1u);
}

TEST(KvTable, AGetPastItsDeadlineTimesOut) {
  KvTable kv;
  Outbox out;
  kv.get("a", 1, "k", t0 + 100ms, out);
  kv.get("b", 2, "k", t0 + 200ms, out);
  kv.expire(t0 + 99ms, out);
  EXPECT_TRUE(out.replies.empty());
  kv.expire(t0 + 100ms, out);
  auto r = take(out);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].to, "a");
  const auto e = coordinator_protocol::decode_error(r[0].body);
  EXPECT_EQ(e.code, coordinator_protocol::kTimedOut);
  EXPECT_EQ(e.message, "key 'k' was not set in time");
  kv.set("k", "v", out);  // b still waits and is answered
  r = take(out);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].to, "b");
}

TEST(KvTable, TheGetsOfAProcessThatIsGoneAreDropped) {
  KvTable kv;
  Outbox out;
  kv.get("a", 1, "k", t0 + 1s, out);
  kv.get("b", 2, "k", t0 + 1s, out);
  kv.drop_waiters_of("a");
  kv.set("k", "v", out);
  auto r = take(out);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].to, "b");
  kv.expire(t0 + 2s, out);
  EXPECT_TRUE(out.replies.empty());  // no timeout for the dropped get
}

TEST(KvTable, AProposalSetsAnAbsentKeyAndAnswersWithItsOwnValue) {
  KvTable kv;
  Outbox out;
  kv.propose("a", 4, "stop_at", "120", out);
  auto r = take(out);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].to, "a");
  EXPECT_EQ(r[0].type, Type::Value);
  EXPECT_EQ(r[0].request, 4u);
  EXPECT_EQ(decode_value(r[0].body).value, "120");
  kv.get("b", 5, "stop_at", t0 + 1s, out);  // it is set like any value
  r = take(out);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(decode_value(r[0].body).value, "120");
}

TEST(KvTable, ALaterProposalLosesAndLearnsTheEarlierValue) {
  KvTable kv;
  Outbox out;
  kv.propose("a", 1, "stop_at", "120", out);
  kv.propose("b", 2, "stop_at", "95", out);
  kv.propose("c", 3, "stop_at", "", out);
  auto r = take(out);
  ASSERT_EQ(r.size(), 3u);
  for (const Reply& reply : r) {
    EXPECT_EQ(reply.type, Type::Value);
    EXPECT_EQ(decode_value(reply.body).value, "120") << reply.to;
  }
  EXPECT_EQ(r[1].to, "b");
  EXPECT_EQ(r[1].request, 2u);
  // A key set by set() is taken too: the proposal does not overwrite it.
  kv.set("k", "old", out);
  kv.propose("a", 4, "k", "new", out);
  r = take(out);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(decode_value(r[0].body).value, "old");
}

TEST(KvTable, AWinningProposalWakesTheWaitingGetsALosingOneWakesNone) {
  KvTable kv;
  Outbox out;
  kv.get("g1", 1, "stop_at", t0 + 1s, out);
  kv.get("g2", 2, "stop_at", t0 + 1s, out);
  kv.get("g3", 3, "other", t0 + 1s, out);
  EXPECT_TRUE(out.replies.empty());
  kv.propose("p", 9, "stop_at", "120", out);
  auto r = take(out);
  ASSERT_EQ(r.size(), 3u);  // both getters of the key, then the proposer
  EXPECT_EQ(r[0].to, "g1");
  EXPECT_EQ(r[1].to, "g2");
  EXPECT_EQ(r[1].request, 2u);
  EXPECT_EQ(r[2].to, "p");
  for (const Reply& reply : r) EXPECT_EQ(decode_value(reply.body).value, "120");
  EXPECT_EQ(kv.waiting(), 1u);
  kv.propose("q", 10, "stop_at", "95", out);
  r = take(out);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].to, "q");
  EXPECT_EQ(kv.waiting(), 1u);
}

TEST(KvTable, TryGetAnswersAtOnceWhetherOrNotTheKeyIsSet) {
  KvTable kv;
  Outbox out;
  kv.try_get("a", 1, "stop_at", out);
  auto r = take(out);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].to, "a");
  EXPECT_EQ(r[0].type, Type::MaybeValue);
  EXPECT_EQ(r[0].request, 1u);
  EXPECT_EQ(decode_maybe_value(r[0].body).value, std::nullopt);
  EXPECT_EQ(kv.waiting(), 0u);  // nothing waits
  kv.expire(t0 + 1h, out);
  EXPECT_TRUE(out.replies.empty());
  kv.propose("b", 2, "stop_at", "120", out);
  take(out);
  kv.try_get("a", 3, "stop_at", out);
  kv.set("empty", "", out);
  kv.try_get("a", 4, "empty", out);
  r = take(out);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].request, 3u);
  EXPECT_EQ(decode_maybe_value(r[0].body).value, std::optional<std::string>("120"));
  EXPECT_EQ(decode_maybe_value(r[1].body).value, std::optional<std::string>(""));  // set, though empty
}

}  // namespace
}  // namespace loom::comm::coordinator_state
