// Internal to loom/ps: ZeroMQ messages as RAII values and multipart send/receive.
#pragma once

#include <zmq.h>

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

// Sends [prefix...] [header] [frames...] as one message; copies each frame into
// a ZeroMQ message. Returns the bytes of payload frames sent.
size_t send_message(void* socket, std::span<const MsgPtr> prefix, const Header& h,
                    std::span<const std::span<const std::byte>> frames);

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
