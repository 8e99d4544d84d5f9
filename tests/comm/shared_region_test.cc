// comm::SharedRegion: a named region made by one side and opened by name by
// another sees the same bytes; names are checked before anything is opened.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "loom/comm/transport/shared_region.h"
#include "loom/core/error.h"

namespace loom::comm {
namespace {

TEST(SharedRegion, OpenedByNameItSharesTheBytesUntilUnlinked) {
  auto mine = SharedRegion::create("loom-test-region", 10000);
  EXPECT_EQ(mine->size(), 10000u);
  EXPECT_TRUE(SharedRegion::valid_name(mine->name()));
  EXPECT_EQ(mine->name().rfind("/loom-test-region-", 0), 0u) << mine->name();
  std::memcpy(mine->data() + 9000, "shared", 6);
  auto theirs = SharedRegion::open(mine->name());
  ASSERT_EQ(theirs->size(), 10000u);
  EXPECT_EQ(std::memcmp(theirs->data() + 9000, "shared", 6), 0);
  std::memcpy(theirs->data(), "back", 4);
  EXPECT_EQ(std::memcmp(mine->data(), "back", 4), 0);

  const std::string name = mine->name();
  mine->unlink();
  try {
    SharedRegion::open(name);
    FAIL() << "opened an unlinked region";
  } catch (const CommError& e) {
    EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
  }
  std::memcpy(theirs->data() + 100, "still", 5);  // both mappings live on
  EXPECT_EQ(std::memcmp(mine->data() + 100, "still", 5), 0);
}

TEST(SharedRegion, TwoRegionsOfOnePrefixAreApartAndTheCreatorRemovesItsName) {
  std::string name;
  {
    auto a = SharedRegion::create("loom-test-region", 4096);
    auto b = SharedRegion::create("loom-test-region", 4096);
    EXPECT_NE(a->name(), b->name());
    name = a->name();
  }
  EXPECT_THROW(SharedRegion::open(name), CommError);
}

TEST(SharedRegion, BadNamesAreRefusedBeforeOpening) {
  for (const std::string& bad : std::vector<std::string>{"", "/", "noslash", "/../etc/passwd", "/a/b", "/with space", std::string("/x\0y", 4),
                                "/" + std::string(201, 'a')}) {
    EXPECT_FALSE(SharedRegion::valid_name(bad)) << bad;
    EXPECT_THROW(SharedRegion::open(bad), CommError) << bad;
  }
  EXPECT_TRUE(SharedRegion::valid_name("/loom-ps-w0-0123abcd"));
  EXPECT_THROW(SharedRegion::create("bad/prefix", 10), CommError);
  EXPECT_THROW(SharedRegion::create("loom-test-region", 0), CommError);
}

}  // namespace
}  // namespace loom::comm
