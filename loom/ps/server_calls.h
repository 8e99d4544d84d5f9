// Internal to loom_ps: a worker's calls to the servers, the RPC glue under
// dist_kvstore.cc. A RequestBatch gathers one KVStore call's requests (a ps
// Header, a replica chain, payload frames, what an Ok reply's payload goes to)
// and collects the servers' error replies; ServerCalls sends a batch through
// comm::RequestClient with one deadline, re-sends to the next replica when the
// FailoverPolicy (failover.h) says a server is lost, and throws ValueError
// with the servers' messages. Which requests a call makes is request_plan.h.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "loom/comm/wire/endpoint.h"
#include "loom/comm/wire/security.h"
#include "loom/io/mode.h"
#include "loom/ps/protocol.h"

namespace loom::comm {
class CoordinatorClient;
}  // namespace loom::comm

namespace loom::ps {

// What an Ok reply's payload frames (the header left out) go to.
using OnPayload = std::function<void(std::span<const comm::FramePtr> payload)>;

// The bytes of a list of i64 (dims, row ids), as a frame carries them.
inline std::span<const std::byte> i64_bytes(const std::vector<int64_t>& v) {
  return {reinterpret_cast<const std::byte*>(v.data()), v.size() * sizeof(int64_t)};
}

// One call's requests and what their replies said. Not copyable or movable:
// each request's reply callback points into it.
class RequestBatch {
 public:
  // `sender`: the worker's rank, written into every header.
  explicit RequestBatch(int sender) : sender_(sender) {}
  RequestBatch(const RequestBatch&) = delete;
  RequestBatch& operator=(const RequestBatch&) = delete;

  // One request: the header (sender and frame count filled in here; the
  // endpoint writes the request id), its payload, who may answer (primary
  // first) and what an Ok reply's payload goes to. An error reply's message is
  // kept. The request is returned so that the caller can mark it optional or
  // read replies its own way (replace on_reply).
  comm::Call& add(Header h, std::vector<int> chain, std::vector<comm::OutFrame> payload, OnPayload on_payload = {});

  std::vector<comm::Call>& calls() { return calls_; }
  bool empty() const { return calls_.empty(); }
  const std::vector<std::string>& errors() const { return errors_; }
  size_t ok() const { return ok_; }  // Ok replies so far
  // ValueError with the servers' error messages (the first, and how many more), if any.
  void throw_errors() const;

 private:
  int sender_;
  std::vector<comm::Call> calls_;
  std::vector<std::string> errors_;
  size_t ok_ = 0;
};

struct ServerCallsOptions {
  io::Mode type = io::Mode::DistSync;  // what a lost worker means (failover.h)
  std::vector<std::string> endpoints;  // the servers', by rank
  comm::SecurityOptions security;
  std::chrono::milliseconds timeout{60000};  // one batch
  // Tells of lost servers, workers and itself; may be null (no failover).
  comm::CoordinatorClient* coordinator = nullptr;
};

// A worker's connection to every server. Not thread-safe, like the KVStore
// that owns it (the coordinator's loss callback is the one other thread).
class ServerCalls {
 public:
  explicit ServerCalls(const ServerCallsOptions& o);

  // Sends every request of `batch`, waits for every reply (one deadline),
  // then throws ValueError with the servers' error replies, if any.
  // TimeoutError / PeerLostError as comm::RequestClient and the policy say.
  void run(RequestBatch& batch, const char* what);
  const comm::RequestStats& stats() const;

 private:
  struct Links;  // shared with the coordinator's loss callback, which may outlive this
  std::shared_ptr<Links> links_;
  std::chrono::milliseconds timeout_;
};

}  // namespace loom::ps
