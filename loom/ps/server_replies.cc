#include "loom/ps/server_replies.h"

#include <cstring>

namespace loom::ps::detail {

using comm::OutFrame;

size_t send_message(const comm::Socket& socket, std::span<const MsgPtr> prefix, Header h,
                    std::span<const std::span<const std::byte>> frames) {
  h.num_frames = static_cast<uint32_t>(frames.size());
  const HeaderBytes hb = encode_header(h);
  std::vector<OutFrame> out;
  out.reserve(prefix.size() + 1 + frames.size());
  for (const auto& p : prefix) out.push_back(OutFrame::borrow(p->bytes()));
  out.push_back(OutFrame::borrow(hb));
  size_t payload = 0;
  for (const auto& f : frames) {
    out.push_back(OutFrame::borrow(f));
    payload += f.size();
  }
  socket.send(out);
  return payload;
}

void Replier::reply(const std::vector<MsgPtr>& route, const Header& req,
                    std::span<const std::span<const std::byte>> frames, Status status, uint16_t flags) {
  Header h = req;
  h.op = Op::Reply;
  h.status = status;
  h.flags = flags;
  n_.bytes_out += send_message(ep_.router(), route, h, frames);
}

void Replier::reply_error(const std::vector<MsgPtr>& route, const Header& req, const std::string& message) {
  ++n_.errors;
  const std::span<const std::byte> f(reinterpret_cast<const std::byte*>(message.data()), message.size());
  reply(route, req, std::span(&f, 1), Status::Error);
}

void Replier::reply_value(const Waiting& w, std::span<const std::byte> value) {
  if (!w.staged.region) {
    reply(w.route, w.request, std::span(&value, 1));
    return;
  }
  std::memcpy(w.staged.at(), value.data(), value.size());
  n_.bytes_out += value.size();
  reply(w.route, w.request, {}, Status::Ok, flag::kShm);
}

void Replier::answer(Entry& e, const Waiting& w) {
  if (w.join) {
    if (--w.join->remaining == 0) reply(w.join->route, w.join->request, {});
    return;
  }
  if (w.request.op == Op::PushPull) {
    reply_value(w, e.shard->weights());
  } else {
    reply(w.route, w.request, {});
  }
}

}  // namespace loom::ps::detail
