#include "loom/comm/transport/inproc_transport.h"

#include <cstring>

namespace loom::comm {

class InProcTransport final : public Transport {
 public:
  InProcTransport(InProcHub* hub, int rank) : hub_(hub), rank_(rank) {}
  int rank() const override { return rank_; }
  int size() const override { return hub_->size_; }
  const char* kind() const override { return "inproc"; }

  void send(int peer, uint64_t tag, std::span<const std::byte> data, Deadline) override {
    check_peer(peer, "send");
    auto& box = *hub_->boxes_[static_cast<size_t>(peer)];
    std::vector<std::byte> msg(data.begin(), data.end());
    {
      std::lock_guard lock(box.mu);
      box.queues[{rank_, tag}].push_back(std::move(msg));
    }
    box.cv.notify_all();
  }

  void recv(int peer, uint64_t tag, std::span<std::byte> out, Deadline deadline) override {
    check_peer(peer, "recv");
    auto& box = *hub_->boxes_[static_cast<size_t>(rank_)];
    std::unique_lock lock(box.mu);
    const std::pair<int, uint64_t> key{peer, tag};
    for (;;) {
      auto it = box.queues.find(key);
      if (it != box.queues.end() && !it->second.empty()) {
        std::vector<std::byte> msg = std::move(it->second.front());
        it->second.pop_front();
        if (it->second.empty()) box.queues.erase(it);
        LOOM_CHECK_T(CommError, msg.size() == out.size(),
                     "recv: rank {} expected {} bytes from rank {} (tag {}), got {}", rank_, out.size(), peer, tag,
                     msg.size());
        if (!msg.empty()) std::memcpy(out.data(), msg.data(), msg.size());
        return;
      }
      if (auto lost = box.lost.find(peer); lost != box.lost.end()) {
        throw PeerLostError(lost->second);  // fail_peer's reason is the whole story
      }
      if (box.cv.wait_until(lock, deadline.at) == std::cv_status::timeout && deadline.expired()) {
        throw TimeoutError(format("recv: rank {} timed out waiting for rank {} (tag {})", rank_, peer, tag));
      }
    }
  }

  void fail_peer(int peer, const std::string& why) override {
    check_peer(peer, "fail_peer");
    auto& box = *hub_->boxes_[static_cast<size_t>(rank_)];
    {
      std::lock_guard lock(box.mu);
      box.lost[peer] = why;
    }
    box.cv.notify_all();
  }

 private:
  void check_peer(int peer, const char* op) const {
    LOOM_CHECK_T(CommError, peer >= 0 && peer < hub_->size_, "{}: peer {} out of range for world size {}", op, peer,
                 hub_->size_);
  }
  InProcHub* hub_;
  int rank_;
};

InProcHub::InProcHub(int size) : size_(size) {
  LOOM_CHECK(size >= 1, "InProcHub: world size must be >= 1, got {}", size);
  for (int i = 0; i < size; ++i) boxes_.push_back(std::make_unique<Mailbox>());
}

std::shared_ptr<Transport> InProcHub::transport(int rank) {
  LOOM_CHECK(rank >= 0 && rank < size_, "InProcHub: rank {} out of range for world size {}", rank, size_);
  return std::make_shared<InProcTransport>(this, rank);
}

}  // namespace loom::comm
