#include "loom/comm/transport/sub_transport.h"

#include <algorithm>
#include <set>

#include "loom/core/error.h"

namespace loom::comm {
namespace {

class SubTransport final : public Transport {
 public:
  SubTransport(std::shared_ptr<Transport> parent, std::vector<int> ranks, int rank)
      : parent_(std::move(parent)), ranks_(std::move(ranks)), rank_(rank) {}

  int rank() const override { return rank_; }
  int size() const override { return static_cast<int>(ranks_.size()); }
  void send(int peer, uint64_t tag, std::span<const std::byte> data, Deadline deadline) override {
    parent_->send(parent_rank(peer), tag, data, deadline);
  }
  void recv(int peer, uint64_t tag, std::span<std::byte> out, Deadline deadline) override {
    parent_->recv(parent_rank(peer), tag, out, deadline);
  }
  void fail_peer(int peer, const std::string& why) override { parent_->fail_peer(parent_rank(peer), why); }
  const char* kind() const override { return parent_->kind(); }

 private:
  int parent_rank(int peer) const {
    LOOM_CHECK_T(CommError, peer >= 0 && peer < size(), "sub-group: rank {} of a group of {}", peer, size());
    return ranks_[static_cast<size_t>(peer)];
  }
  std::shared_ptr<Transport> parent_;
  std::vector<int> ranks_;
  int rank_;
};

}  // namespace

std::shared_ptr<Transport> sub_transport(std::shared_ptr<Transport> parent, std::vector<int> ranks) {
  LOOM_CHECK(parent != nullptr, "sub_transport: no parent transport");
  const std::set<int> distinct(ranks.begin(), ranks.end());
  LOOM_CHECK_T(ConfigError, !ranks.empty() && distinct.size() == ranks.size() && *distinct.begin() >= 0 &&
                                *distinct.rbegin() < parent->size(),
               "sub-group: ranks must be distinct ranks of the {} the transport has", parent->size());
  const auto self = std::find(ranks.begin(), ranks.end(), parent->rank());
  LOOM_CHECK_T(ConfigError, self != ranks.end(), "sub-group: rank {} builds a group it is not in", parent->rank());
  const int rank = static_cast<int>(self - ranks.begin());
  return std::make_shared<SubTransport>(std::move(parent), std::move(ranks), rank);
}

Communicator sub_communicator(const Communicator& c, const std::vector<int>& ranks, uint8_t channel) {
  std::vector<int> hosts;
  if (!c.host_of_rank.empty()) {
    for (int r : ranks) hosts.push_back(host_of(c, r));
  }
  Communicator g = make_communicator(sub_transport(c.transport, ranks), std::move(hosts));
  g.timeout = c.timeout;
  g.channel = channel;
  return g;
}

}  // namespace loom::comm
