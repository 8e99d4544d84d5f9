// Internal to loom/ps: ZeroMQ messages as RAII values and multipart send/receive.
#pragma once

#include <zmq.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "loom/comm/security.h"
#include "loom/ps/protocol.h"

namespace loom::ps::detail {

class Msg {
 public:
  Msg() { zmq_msg_init(&m_); }
  explicit Msg(size_t n) { zmq_msg_init_size(&m_, n); }
  ~Msg() { zmq_msg_close(&m_); }
  Msg(const Msg&) = delete;
  Msg& operator=(const Msg&) = delete;
  zmq_msg_t* get() { return &m_; }
  std::span<const std::byte> bytes() const {
    auto* self = const_cast<zmq_msg_t*>(&m_);
    return {static_cast<const std::byte*>(zmq_msg_data(self)), zmq_msg_size(self)};
  }
  std::byte* data() { return static_cast<std::byte*>(zmq_msg_data(&m_)); }

 private:
  zmq_msg_t m_;
};

using MsgPtr = std::shared_ptr<Msg>;

// Receives every frame of one message (non-blocking: call when the socket is readable).
// Returns false if nothing was waiting.
bool recv_all(void* socket, std::vector<MsgPtr>& frames);

// Payload frames of at least this many bytes are lent to ZeroMQ (zero-copy)
// when the sender passes a Loans counter; smaller ones are copied.
inline constexpr size_t kLendBytes = 64 * 1024;

// The ZeroMQ messages that still point into memory the sender lent (frames
// sent without a copy). ZeroMQ's I/O thread calls back when it is done with
// each; the lent memory must stay valid and unchanged until out() is 0.
class Loans {
 public:
  int64_t out() const { return out_.load(std::memory_order_acquire); }
  void lend() { out_.fetch_add(1, std::memory_order_relaxed); }
  static void returned(void* /*data*/, void* hint) {
    static_cast<Loans*>(hint)->out_.fetch_sub(1, std::memory_order_acq_rel);
  }
  // Waits up to `limit` for every loan to come back; false if some did not.
  bool wait(std::chrono::nanoseconds limit) const;

 private:
  std::atomic<int64_t> out_{0};
};

// Sends [prefix...] [header] [frames...] as one message. Each frame is copied
// into a ZeroMQ message, except that with `loans` frames of at least
// kLendBytes are lent (counted in *loans until ZeroMQ is done with them).
// Returns the bytes of payload frames sent.
size_t send_message(void* socket, std::span<const MsgPtr> prefix, const Header& h,
                    std::span<const std::span<const std::byte>> frames, Loans* loans = nullptr);

// Sockets with the job's security: a ROUTER bound at `bind` (the endpoint it
// got is returned in *bound), a DEALER connected to `endpoint`.
void* make_router(void* context, const std::string& bind, const comm::SecurityOptions& security,
                  const comm::CurveKeys* keys, std::string* bound);
void* make_dealer(void* context, const std::string& endpoint, const comm::SecurityOptions& security,
                  const comm::CurveKeys* keys);
void close_socket(void* socket);

// Frame `i` as i64 values (copied: frames need not be aligned).
std::vector<int64_t> read_i64(std::span<const std::byte> bytes, const char* what);

}  // namespace loom::ps::detail
