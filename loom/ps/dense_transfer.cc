#include "loom/ps/dense_transfer.h"

#include <algorithm>
#include <cstring>

#include "loom/core/error.h"

namespace loom::ps {
namespace {

using comm::FramePtr;
using comm::OutFrame;

constexpr size_t kOverSocket = ~size_t{0};

OnPayload receive_into(std::span<std::byte> dst, int64_t key) {
  return [dst, key](std::span<const FramePtr> f) {
    LOOM_CHECK_T(CommError, f.size() == 1 && f[0]->bytes().size() == dst.size(),
                 "kvstore: key {}: reply of {} bytes for a slice of {}", key, f.empty() ? 0 : f[0]->bytes().size(),
                 dst.size());
    std::memcpy(dst.data(), f[0]->bytes().data(), dst.size());
  };
}

OnPayload receive_staged(const std::byte* slot, std::span<std::byte> dst, int64_t key, uint64_t& counted) {
  return [slot, dst, key, &counted](std::span<const FramePtr> f) {
    LOOM_CHECK_T(CommError, f.empty(), "kvstore: key {}: a shared-memory reply with {} frames", key, f.size());
    std::memcpy(dst.data(), slot, dst.size());
    counted += dst.size();
  };
}

}  // namespace

DenseTransfer::DenseTransfer(ServerCalls& servers, DenseTransferOptions o)
    : servers_(servers), o_(std::move(o)), staging_(o_.worker, o_.on_my_host) {}

void DenseTransfer::add(RequestBatch& batch, std::vector<DenseSlice>& slices) {
  std::vector<size_t> at(slices.size(), kOverSocket);
  size_t total = 0;
  for (size_t k = 0; k < slices.size(); ++k) {
    if (!staging_.on_host(slices[k].r.chain)) continue;
    at[k] = total;
    // The slot takes the pushed bytes, then the reply's (a fixed-point push sends more than comes back).
    const size_t n = std::max(slices[k].in.size(), slices[k].r.nbytes);
    total += (n + ShmStaging::kAlign - 1) / ShmStaging::kAlign * ShmStaging::kAlign;
  }
  if (total > 0) attach(staging_.reserve(total));
  for (size_t k = 0; k < slices.size(); ++k) {
    DenseSlice& d = slices[k];
    if (at[k] != kOverSocket && staging_.covers(d.r.chain)) {
      std::byte* slot = staging_.data() + at[k];
      if (!d.in.empty()) std::memcpy(slot, d.in.data(), d.in.size());
      shm_bytes_sent_ += d.in.size();
      d.r.header.flags |= flag::kShm;
      const uint64_t offset = at[k];
      OnPayload into;
      if (!d.out.empty()) into = receive_staged(slot, d.out, d.key, shm_bytes_received_);
      batch.add(d.r.header, std::move(d.r.chain), {OutFrame::copy({reinterpret_cast<const std::byte*>(&offset), 8})},
                std::move(into));
      continue;
    }
    std::vector<OutFrame> payload;
    if (!d.in.empty()) payload.push_back(OutFrame::lend(d.in, d.owner));
    batch.add(d.r.header, std::move(d.r.chain), std::move(payload),
              d.out.empty() ? OnPayload() : receive_into(d.out, d.key));
  }
}

// The servers in `servers` map the staging region (Op::ShmAttach); one that
// cannot is served over the socket from now on.
void DenseTransfer::attach(const std::vector<int>& servers) {
  if (servers.empty()) return;
  RequestBatch batch(o_.worker);
  const std::string& name = staging_.name();
  for (int s : servers) {
    comm::Call& c = batch.add(Header{.op = Op::ShmAttach}, {s}, {OutFrame::copy(name)});
    c.optional = true;  // a lost server maps nothing; its slices go to their backups over the socket
    c.on_reply = [this, s](std::span<const FramePtr> reply) {
      const Header h = decode_header(reply[0]->bytes());
      if (h.status == Status::Ok) return staging_.attached(s, true);
      staging_.attached(s, false);
      core::log(o_.log, core::LogLevel::Warning,
                format("kvstore: server {} cannot map worker {}'s shared memory ({}); its slices go over the socket",
                       s, o_.worker, reply.size() > 1 ? reply[1]->view() : std::string_view("no reason given")));
    };
  }
  try {
    servers_.run(batch, "shm_attach");
  } catch (...) {
    staging_.attach_done();
    throw;
  }
  staging_.attach_done();
}

}  // namespace loom::ps
