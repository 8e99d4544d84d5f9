// Sub-groups of a transport: the transport contract holds for a group (its
// ranks the odd ranks of a larger in-process world), collectives over groups
// that share a transport stay apart, and a bad group is refused.
#include <gtest/gtest.h>

#include <thread>

#include "loom/comm/collectives/collectives.h"
#include "loom/comm/transport/inproc_transport.h"
#include "loom/comm/transport/sub_transport.h"
#include "loom/ops/ops.h"
#include "transport_contract.h"

namespace loom::comm {
namespace {

// n group ranks: group rank r is rank 2r + 1 of a 2n-rank world.
contract::World odd_ranks(int n) {
  auto hub = std::make_shared<InProcHub>(2 * n);
  std::vector<int> odd;
  for (int r = 0; r < n; ++r) odd.push_back(2 * r + 1);
  contract::World world;
  for (int r = 0; r < n; ++r) {
    std::shared_ptr<Transport> parent = hub->transport(2 * r + 1);
    std::shared_ptr<Transport> t = sub_transport(parent, odd);
    world.push_back(std::shared_ptr<Transport>(t.get(), [t, hub](Transport*) {}));  // keeps the hub alive
  }
  return world;
}

TEST(SubTransport, KeepsTheTransportContract) {
  contract::check_ordering(odd_ranks, 3);
  contract::check_out_of_order_tags(odd_ranks, 3);
  contract::check_ring_exchange(odd_ranks, 3);
  contract::check_all_to_all(odd_ranks, 3);
  contract::check_recv_timeout(odd_ranks, 2);
  contract::check_fail_peer(odd_ranks, 3);
  contract::check_wrong_size(odd_ranks, 2);
  contract::check_bad_peer(odd_ranks, 2);
}

TEST(SubTransport, CollectivesOfTwoGroupsStayApart) {
  // 2 replicas x 2 stages: ranks {0, 2} and {1, 3} all-reduce on one transport at once.
  InProcHub hub(4);
  std::vector<std::vector<float>> got(4);
  std::vector<std::thread> ranks;
  for (int r = 0; r < 4; ++r) {
    ranks.emplace_back([&, r] {
      Communicator job = make_communicator(hub.transport(r));
      Communicator group = sub_communicator(job, {r % 2, r % 2 + 2}, /*channel=*/2);
      EXPECT_EQ(group.size, 2);
      EXPECT_EQ(group.rank, r / 2);
      core::Tensor t = ops::full({5}, static_cast<double>(r + 1));
      allreduce(group, t);
      got[static_cast<size_t>(r)] = t.to_vector<float>();
    });
  }
  for (auto& t : ranks) t.join();
  EXPECT_EQ(got[0], std::vector<float>(5, 1 + 3));
  EXPECT_EQ(got[2], std::vector<float>(5, 1 + 3));
  EXPECT_EQ(got[1], std::vector<float>(5, 2 + 4));
  EXPECT_EQ(got[3], std::vector<float>(5, 2 + 4));
}

TEST(SubTransport, RefusesABadGroup) {
  InProcHub hub(4);
  EXPECT_THROW(sub_transport(hub.transport(0), {1, 2}), ConfigError);     // without its own rank
  EXPECT_THROW(sub_transport(hub.transport(0), {0, 0}), ConfigError);     // twice
  EXPECT_THROW(sub_transport(hub.transport(0), {0, 4}), ConfigError);     // not a rank
  EXPECT_THROW(sub_transport(hub.transport(0), {}), ConfigError);
}

}  // namespace
}  // namespace loom::comm
