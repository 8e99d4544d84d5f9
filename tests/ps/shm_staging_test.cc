// ps::ShmStaging: which requests may use the region, when it must be mapped
// again, and a server that refuses it being served over the socket after.
#include <gtest/gtest.h>

#include <vector>

#include "loom/ps/shm_staging.h"

namespace loom::ps {
namespace {

TEST(ShmStaging, OnlyChainsWhollyOnThisHostAndMappedAreCovered) {
  ShmStaging s(0, {true, false, true});
  EXPECT_TRUE(s.any());
  const std::vector<int> local = {0, 2}, mixed = {2, 1}, remote = {1};
  EXPECT_TRUE(s.on_host(local));
  EXPECT_FALSE(s.on_host(mixed));
  EXPECT_FALSE(s.on_host(remote));
  EXPECT_FALSE(s.covers(local));  // no region yet

  EXPECT_EQ(s.reserve(1000), (std::vector<int>{0, 2}));  // both local servers must map it
  EXPECT_GE(s.size(), 1000u);
  EXPECT_FALSE(s.covers(local));
  s.attached(0, true);
  EXPECT_FALSE(s.covers(local));  // server 2 has not mapped it yet
  s.attached(2, true);
  EXPECT_TRUE(s.covers(local));
  EXPECT_FALSE(s.covers(mixed));
  s.attach_done();

  EXPECT_TRUE(s.reserve(s.size()).empty());  // big enough: nothing to map again
  const size_t before = s.size();
  EXPECT_EQ(s.reserve(before + 1), (std::vector<int>{0, 2}));  // grown: a new region, mapped again
  EXPECT_GE(s.size(), before + 1);
  EXPECT_FALSE(s.covers(local));
  s.attached(0, true);
  s.attached(2, false);  // refused: socket from now on
  EXPECT_TRUE(s.covers(std::vector<int>{0}));
  EXPECT_FALSE(s.on_host(local));
  EXPECT_EQ(s.reserve(s.size() * 4), (std::vector<int>{0}));
}

TEST(ShmStaging, NoServerOnThisHostMakesNoRegion) {
  ShmStaging s(3, {false, false});
  EXPECT_FALSE(s.any());
  EXPECT_TRUE(s.reserve(1 << 20).empty());
  EXPECT_EQ(s.size(), 0u);
  EXPECT_FALSE(s.covers(std::vector<int>{0}));
}

}  // namespace
}  // namespace loom::ps
