#include "loom/comm/coordinator_protocol.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace loom::comm::coordinator_protocol {

// ---- wire format --------------------------------------------------------

bool known_type(uint16_t t) { return (t >= 1 && t <= 7) || (t >= 32 && t <= 38); }

std::string encode_header(Type type, uint64_t request) {
  std::string h(kHeaderBytes, '\0');
  std::memcpy(h.data(), kMagic, 4);
  const auto t = static_cast<uint16_t>(type);
  h[4] = static_cast<char>(kVersion & 0xff);
  h[5] = static_cast<char>(kVersion >> 8);
  h[6] = static_cast<char>(t & 0xff);
  h[7] = static_cast<char>(t >> 8);
  for (int i = 0; i < 8; ++i) h[8 + i] = static_cast<char>((request >> (8 * i)) & 0xff);
  return h;
}

Header decode_header(std::string_view h) {
  if (h.size() != kHeaderBytes)
    throw CommError(format("coordinator protocol: header of {} bytes, expected {}", h.size(), kHeaderBytes));
  if (std::memcmp(h.data(), kMagic, 4) != 0)
    throw CommError("coordinator protocol: bad magic (not a Loom coordinator message)");
  auto byte = [&](size_t i) { return static_cast<uint64_t>(static_cast<unsigned char>(h[i])); };
  const auto version = static_cast<uint16_t>(byte(4) | byte(5) << 8);
  if (version != kVersion)
    throw CommError(format("coordinator protocol: version {}, this build speaks {}", version, kVersion));
  const auto type = static_cast<uint16_t>(byte(6) | byte(7) << 8);
  if (!known_type(type)) throw CommError(format("coordinator protocol: unknown message type {}", type));
  uint64_t request = 0;
  for (int i = 0; i < 8; ++i) request |= byte(static_cast<size_t>(8 + i)) << (8 * i);
  return {static_cast<Type>(type), request};
}

bool valid_role(const std::string& role) { return role == "worker" || role == "server"; }

std::string describe_process(const std::string& role, int rank, const std::string& host) {
  return format("{} {} on host {}", role, rank, host);
}

void encode_lost(BodyWriter& w, const LostPeer& p) { w.str(p.role).i64(p.rank).str(p.host).str(p.reason); }

LostPeer decode_lost(BodyReader& r) {
  LostPeer p;
  p.role = r.str("role", kMaxNameBytes);
  p.rank = static_cast<int>(r.i64("rank", -1, kMaxProcesses));
  p.host = r.str("host", kMaxNameBytes);
  p.reason = r.str("reason", kMaxNameBytes);
  if (!valid_role(p.role)) throw CommError(format("coordinator protocol: lost process has role '{}'", p.role));
  return p;
}

// ---- waking a polling loop ----------------------------------------------

void drain_eventfd(int fd) {
  uint64_t v = 0;
  while (::read(fd, &v, sizeof v) == static_cast<ssize_t>(sizeof v)) {
  }
}

void signal_eventfd(int fd) {
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(fd, &one, sizeof one);
}

int make_eventfd() {
  int fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) throw CommError(format("coordinator: eventfd failed: {}", std::strerror(errno)));
  return fd;
}

}  // namespace loom::comm::coordinator_protocol
