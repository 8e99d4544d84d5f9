#include "loom/ps/zmq_frames.h"

#include <cerrno>
#include <cstring>
#include <thread>

#include "loom/core/error.h"

namespace loom::ps::detail {
namespace {

std::string zmq_error() { return zmq_strerror(zmq_errno()); }

void set_int(void* s, int option, int value, const char* name) {
  if (zmq_setsockopt(s, option, &value, sizeof value) != 0) {
    throw CommError(format("zmq: setting {} failed: {}", name, zmq_error()));
  }
}

void common_options(void* s) {
  set_int(s, ZMQ_LINGER, 0, "ZMQ_LINGER");
  // Requests and replies are bounded by the protocol (a worker waits for its
  // replies), so queues never grow without bound; a limit would drop messages
  // on a ROUTER instead of blocking.
  set_int(s, ZMQ_SNDHWM, 0, "ZMQ_SNDHWM");
  set_int(s, ZMQ_RCVHWM, 0, "ZMQ_RCVHWM");
}

}  // namespace

bool Loans::wait(std::chrono::nanoseconds limit) const {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  for (int spins = 0; out() > 0; ++spins) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    if (spins < 100) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  }
  return true;
}

bool recv_all(void* socket, std::vector<MsgPtr>& frames) {
  frames.clear();
  for (;;) {
    auto m = std::make_shared<Msg>();
    if (zmq_msg_recv(m->get(), socket, frames.empty() ? ZMQ_DONTWAIT : 0) < 0) {
      if (frames.empty() && (zmq_errno() == EAGAIN || zmq_errno() == EINTR)) return false;
      throw CommError(format("zmq: receive failed: {}", zmq_error()));
    }
    const bool more = zmq_msg_more(m->get()) != 0;
    frames.push_back(std::move(m));
    if (!more) return true;
  }
}

size_t send_message(void* socket, std::span<const MsgPtr> prefix, const Header& h,
                    std::span<const std::span<const std::byte>> frames, Loans* loans) {
  auto send = [&](const void* data, size_t n, bool more, bool lend) {
    zmq_msg_t m;
    if (lend) {
      // zmq_msg_close (on failure) or ZeroMQ's I/O thread gives it back.
      loans->lend();
      zmq_msg_init_data(&m, const_cast<void*>(data), n, &Loans::returned, loans);
    } else {
      zmq_msg_init_size(&m, n);
      if (n > 0) std::memcpy(zmq_msg_data(&m), data, n);
    }
    if (zmq_msg_send(&m, socket, more ? ZMQ_SNDMORE : 0) < 0) {
      zmq_msg_close(&m);
      throw CommError(format("zmq: send failed: {}", zmq_error()));
    }
  };
  for (const auto& p : prefix) send(p->bytes().data(), p->bytes().size(), true, false);
  Header hh = h;
  hh.num_frames = static_cast<uint32_t>(frames.size());
  const HeaderBytes hb = encode_header(hh);
  send(hb.data(), hb.size(), !frames.empty(), false);
  size_t total = 0;
  for (size_t i = 0; i < frames.size(); ++i) {
    send(frames[i].data(), frames[i].size(), i + 1 < frames.size(), loans != nullptr && frames[i].size() >= kLendBytes);
    total += frames[i].size();
  }
  return total;
}

void* make_router(void* context, const std::string& bind, const comm::SecurityOptions& security,
                  const comm::CurveKeys* keys, std::string* bound) {
  void* s = zmq_socket(context, ZMQ_ROUTER);
  if (s == nullptr) throw CommError(format("zmq: cannot create a socket: {}", zmq_error()));
  try {
    common_options(s);
    set_int(s, ZMQ_ROUTER_HANDOVER, 1, "ZMQ_ROUTER_HANDOVER");
    if (!security.insecure) comm::make_curve_server(s, *keys);
    if (zmq_bind(s, bind.c_str()) != 0) {
      throw CommError(format("parameter server: cannot listen on {}: {}", bind, zmq_error()));
    }
    char buf[256];
    size_t len = sizeof buf;
    zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, buf, &len);
    *bound = std::string(buf, strnlen(buf, len));
  } catch (...) {
    zmq_close(s);
    throw;
  }
  return s;
}

void* make_dealer(void* context, const std::string& endpoint, const comm::SecurityOptions& security,
                  const comm::CurveKeys* keys) {
  void* s = zmq_socket(context, ZMQ_DEALER);
  if (s == nullptr) throw CommError(format("zmq: cannot create a socket: {}", zmq_error()));
  try {
    common_options(s);
    if (!security.insecure) comm::make_curve_client(s, *keys);
    if (zmq_connect(s, endpoint.c_str()) != 0) {
      throw CommError(format("parameter server: cannot connect to {}: {}", endpoint, zmq_error()));
    }
  } catch (...) {
    zmq_close(s);
    throw;
  }
  return s;
}

void close_socket(void* socket) {
  if (socket != nullptr) zmq_close(socket);
}

std::vector<int64_t> read_i64(std::span<const std::byte> bytes, const char* what) {
  LOOM_CHECK_T(CommError, bytes.size() % 8 == 0, "ps protocol: {} frame of {} bytes is not a list of i64", what,
               bytes.size());
  std::vector<int64_t> out(bytes.size() / 8);
  if (!out.empty()) std::memcpy(out.data(), bytes.data(), bytes.size());
  return out;
}

}  // namespace loom::ps::detail
