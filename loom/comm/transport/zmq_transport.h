// The ZeroMQ transport: ranks in different processes or hosts, over TCP (or
// ipc:// sockets on one host), encrypted and authenticated with CURVE keys
// derived from the job secret (security.h).
//
//   // given: int rank, uint64_t tag, std::span<const std::byte> bytes, std::span<std::byte> out
//   std::vector<std::string> endpoints = {"tcp://10.77.0.1:5601", "tcp://10.77.0.2:5601"};
//   comm::ZmqTransport t(rank, endpoints, comm::security_from_env(), {});
//   t.send(1 - rank, tag, bytes, comm::Deadline::in(30s));   // semantics: transport.h
//   t.recv(1 - rank, tag, out, comm::Deadline::in(30s));
//
// Sockets: rank r binds a ROUTER at endpoints[r]; it connects one DEALER per
// peer (routing id "r<rank>"), lazily, on the first send to that peer. A
// message is two frames, the 40-byte wire header (wire.h) and the payload.
// One background thread per transport owns the ROUTER (and the ZAP handler):
// it validates each header and files the payload into a per-(peer, tag) queue,
// as the in-process transport does; recv() waits on a condition variable.
// A malformed message from a peer (bad header, wrong frame count or size)
// breaks that peer: queued messages are still delivered, then recv() from it
// throws CommError (the stream lost a message, so what follows cannot be
// matched safely). Nothing a peer sends can crash or stall the I/O thread.
//
// Copies. A payload of at least `zero_copy_min_nbytes` is not copied on the
// way out: it goes to ZeroMQ as a message that points at the caller's bytes
// (zmq_msg_init_data), and send() waits until ZeroMQ releases it, i.e. until
// the bytes are in the kernel's socket buffer (insecure) or have been
// encrypted into ZeroMQ's own buffer (CURVE). Smaller payloads are copied
// into a ZeroMQ message and send() returns at once. On the receiving side
// ZeroMQ reads a large frame into its own buffer, which waits in the queue
// until recv() copies it into `out`: one copy, which the span API requires.
//
// Deadlines. send() hands the header to ZeroMQ with ZMQ_SNDTIMEO set to the
// time left, so a full queue (ZMQ_SNDHWM) becomes TimeoutError, never a hang.
// If a zero-copy payload is not released by the deadline, the connection to
// that peer is reset (linger 0, which makes ZeroMQ release the payload), and
// send() throws TimeoutError; messages to that peer that had not left yet are
// lost with it. A send to a peer declared lost (fail_peer) throws PeerLostError.
//
// Shutdown. The destructor stops the I/O thread and closes every socket:
// messages still queued to live peers get up to `linger` to leave (bounded:
// never a hang), those to lost peers none.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "loom/comm/wire/security.h"
#include "loom/comm/transport/transport.h"
#include "loom/comm/wire/wire.h"

namespace loom::comm {

struct ZmqOptions {
  // Payloads this large or larger are sent without a copy (see above).
  size_t zero_copy_min_nbytes = size_t{64} << 10;
  // Peers may not send payloads longer than this (decode_header refuses them;
  // ZeroMQ drops the connection of a peer whose frame exceeds it).
  uint64_t max_payload_nbytes = wire::kDefaultMaxPayloadBytes;
  // Messages queued per peer before send() waits (ZMQ_SNDHWM); 0 = no limit.
  int send_queue_messages = 1000;
  // How long the destructor lets queued messages leave.
  std::chrono::milliseconds linger{1000};
  // Kernel socket buffers (ZMQ_SNDBUF / ZMQ_RCVBUF); 0 = the OS default.
  int socket_buffer_nbytes = 0;
  // ZeroMQ I/O threads of this transport's context.
  int io_threads = 1;
};

// What the I/O thread has seen; for tests, benchmarks and error messages.
struct ZmqStats {
  uint64_t messages_received = 0;
  uint64_t messages_dropped = 0;   // malformed, or from an unknown routing id
  uint64_t handshakes_failed = 0;  // incoming connections refused by CURVE or ZAP
  uint64_t zero_copy_sends = 0;
  uint64_t copied_sends = 0;
};

class ZmqTransport final : public Transport {
 public:
  // `endpoints[r]` is where rank r listens ("tcp://host:port" or "ipc:///path").
  // Binds this rank's endpoint (CommError if it cannot); connects to peers
  // lazily, so peers may start in any order. `security` must hold a secret or
  // say insecure (ValueError otherwise, see check_security).
  ZmqTransport(int rank, std::vector<std::string> endpoints, const SecurityOptions& security, ZmqOptions options = {});
  ~ZmqTransport() override;
  ZmqTransport(const ZmqTransport&) = delete;
  ZmqTransport& operator=(const ZmqTransport&) = delete;

  int rank() const override;
  int size() const override;
  const char* kind() const override { return "zmq"; }

  void send(int peer, uint64_t tag, std::span<const std::byte> data, Deadline deadline) override;
  void recv(int peer, uint64_t tag, std::span<std::byte> out, Deadline deadline) override;
  void fail_peer(int peer, const std::string& why) override;

  ZmqStats stats() const;
  bool secure() const;  // CURVE (false: plaintext, --insecure)

 private:
  struct Impl;  // sockets, the I/O thread and the receive queues (zmq_transport_impl.h)
  std::unique_ptr<Impl> impl_;
};

// "tcp://<host>:<port>" with a port nothing listens on right now, chosen below
// the kernel's ephemeral range where possible (so it cannot collide with the
// local port of an outgoing connection). For tests; racy by nature.
std::string pick_free_tcp_endpoint(const std::string& host = "127.0.0.1");

}  // namespace loom::comm
