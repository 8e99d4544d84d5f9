// The request/reply endpoint over real ZeroMQ sockets on loopback, servers as
// threads: replies, one deadline per call, re-sending to the next peer,
// refusing a client without the secret, malformed frames, owned zero-copy
// payloads; and the parts a thread of its own builds on: poll() with a
// timeout, hearing of refused handshakes.
#include "loom/comm/wire/endpoint.h"

#include <gtest/gtest.h>
#include <unistd.h>
#include <zmq.h>

#include <atomic>
#include <cstring>
#include <thread>

#include "loom/core/error.h"

namespace loom::comm {
namespace {

using namespace std::chrono_literals;

// A toy protocol: the header frame is the request id (8 bytes, little-endian) and nothing else.
RequestIds toy_ids() {
  return {.stamp = [](std::vector<std::byte>& h, uint64_t id) {
            h.resize(8);
            std::memcpy(h.data(), &id, 8);
          },
          .read = [](std::span<const FramePtr> reply) {
            const auto h = reply[0]->bytes();
            LOOM_CHECK_T(CommError, h.size() == 8, "toy header of {} bytes", h.size());
            uint64_t id = 0;
            std::memcpy(&id, h.data(), 8);
            return id;
          }};
}

// A server on its own thread. mode: echo (header + payload back), silent, garbage (an 3-byte header).
class ToyServer {
 public:
  enum class Mode { Echo, Silent, Garbage };
  ToyServer(Mode mode, SecurityOptions sec) : ep_({.security = sec}), mode_(mode) {
    thread_ = std::thread([this] {
      while (!stop_) {
        ep_.poll(5ms, [this](const Route& from, std::vector<FramePtr>& frames) {
          ++requests_;
          if (mode_ == Mode::Silent) return;
          if (mode_ == Mode::Garbage) {
            ep_.reply(from, {OutFrame::copy(std::string_view("bad"))});
            return;
          }
          std::vector<OutFrame> out;
          for (const auto& f : frames) out.push_back(OutFrame::copy(f->bytes()));
          ep_.reply(from, out);
        });
      }
    });
  }
  ~ToyServer() {
    stop_ = true;
    thread_.join();
  }
  std::string endpoint() const { return ep_.endpoint(); }
  int requests() const { return requests_; }
  uint64_t refused() { return ep_.context().zap()->refused(); }

 private:
  ServerEndpoint ep_;
  Mode mode_;
  std::atomic<bool> stop_{false};
  std::atomic<int> requests_{0};
  std::thread thread_;
};

const SecurityOptions kSec{.secret = "endpoint-test-secret"};

Call toy_call(std::vector<int> peers, std::string* got) {
  Call c;
  c.payload = {OutFrame::copy(std::string_view("hello"))};
  c.peers = std::move(peers);
  c.on_reply = [got](std::span<const FramePtr> reply) {
    ASSERT_EQ(reply.size(), 2u);
    *got = std::string(reply[1]->view());
  };
  return c;
}

TEST(Endpoint, CallsGetTheirReplies) {
  ToyServer a(ToyServer::Mode::Echo, kSec), b(ToyServer::Mode::Echo, kSec);
  RequestClient client({.peers = {a.endpoint(), b.endpoint()}, .security = kSec, .ids = toy_ids()});
  std::vector<std::string> got(6);
  std::vector<Call> calls;
  for (int i = 0; i < 6; ++i) calls.push_back(toy_call({i % 2}, &got[static_cast<size_t>(i)]));
  client.call(calls, {.timeout = 10s});
  for (const auto& g : got) EXPECT_EQ(g, "hello");
  EXPECT_EQ(a.requests() + b.requests(), 6);
  EXPECT_EQ(client.stats().requests, 6u);
  EXPECT_EQ(client.stats().bytes_sent, 30u);
}

TEST(Endpoint, ZeroCopyPayloadsKeepTheirOwnerAliveUntilSent) {
  ToyServer a(ToyServer::Mode::Echo, kSec);
  RequestClient client({.peers = {a.endpoint()}, .security = kSec, .ids = toy_ids()});
  auto big = std::make_shared<std::vector<std::byte>>(kZeroCopyBytes * 4, std::byte{7});
  std::weak_ptr<std::vector<std::byte>> watch = big;
  size_t reply_bytes = 0;
  {
    std::vector<Call> calls(1);
    calls[0].payload = {OutFrame::lend(*big, big)};
    calls[0].peers = {0};
    calls[0].on_reply = [&](std::span<const FramePtr> r) { reply_bytes = r.back()->bytes().size(); };
    big.reset();  // the call's frame is now the only owner
    client.call(calls, {.timeout = 10s});
  }
  EXPECT_EQ(reply_bytes, kZeroCopyBytes * 4);
  for (int i = 0; i < 500 && !watch.expired(); ++i) std::this_thread::sleep_for(2ms);
  EXPECT_TRUE(watch.expired()) << "ZeroMQ kept the owner after the message went out";
}

TEST(Endpoint, OneDeadlinePerCall) {
  ToyServer silent(ToyServer::Mode::Silent, kSec);
  RequestClient client({.peers = {silent.endpoint()}, .security = kSec, .ids = toy_ids(), .name = "toy"});
  std::string got;
  std::vector<Call> calls = {toy_call({0}, &got), toy_call({0}, &got)};
  const auto t0 = std::chrono::steady_clock::now();
  try {
    client.call(calls, {.timeout = 300ms, .what = "ping"});
    FAIL() << "no TimeoutError";
  } catch (const TimeoutError& e) {
    EXPECT_NE(std::string(e.what()).find("toy: ping: no answer from tcp://"), std::string::npos) << e.what();
  }
  const auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(took, 300ms);
  EXPECT_LT(took, 3s);
}

TEST(Endpoint, ResendsToTheNextPeerWhenOneIsLost) {
  ToyServer silent(ToyServer::Mode::Silent, kSec), backup(ToyServer::Mode::Echo, kSec);
  RequestClient client({.peers = {silent.endpoint(), backup.endpoint()}, .security = kSec, .ids = toy_ids()});
  std::string got;
  std::vector<Call> calls = {toy_call({0, 1}, &got)};
  std::thread loser([&] {
    std::this_thread::sleep_for(100ms);
    client.peer_lost(0, "peer 0 lost: killed");
  });
  client.call(calls, {.timeout = 10s});
  loser.join();
  EXPECT_EQ(got, "hello");
  EXPECT_EQ(calls[0].sent_to, 1);
  EXPECT_EQ(silent.requests(), 1);
  EXPECT_EQ(backup.requests(), 1);

  // Lost peers are skipped from the start; an optional call with no peer left is done unanswered.
  client.peer_lost(1, "peer 1 lost: killed");
  std::vector<Call> bye(1);
  bye[0].peers = {0};
  bye[0].optional = true;
  client.call(bye, {.timeout = 1s});
  EXPECT_TRUE(bye[0].done);
  std::vector<Call> stuck = {toy_call({0, 1}, &got)};
  try {
    client.call(stuck, {.timeout = 1s});
    FAIL() << "no PeerLostError";
  } catch (const PeerLostError& e) {
    EXPECT_NE(std::string(e.what()).find("peer 0 lost: killed"), std::string::npos) << e.what();
  }
}

TEST(Endpoint, CheckEndsACall) {
  ToyServer silent(ToyServer::Mode::Silent, kSec);
  RequestClient client({.peers = {silent.endpoint()}, .security = kSec, .ids = toy_ids()});
  std::string got;
  std::vector<Call> calls = {toy_call({0}, &got)};
  int polls = 0;
  EXPECT_THROW(client.call(calls, {.timeout = 10s,
                                   .check = [&] {
                                     if (++polls == 5) throw PeerLostError("the coordinator lost");
                                   }}),
               PeerLostError);
}

TEST(Endpoint, AClientWithoutTheSecretIsRefused) {
  ToyServer server(ToyServer::Mode::Echo, kSec);
  RequestClient stranger({.peers = {server.endpoint()}, .security = {.secret = "another-secret"}, .ids = toy_ids()});
  std::string got;
  std::vector<Call> calls = {toy_call({0}, &got)};
  EXPECT_THROW(stranger.call(calls, {.timeout = 500ms}), TimeoutError);
  EXPECT_EQ(server.requests(), 0);
  // A client that knows the server's public key but not the job's client key: ZAP refuses it.
  CurveKeys mixed = derive_curve_keys(kSec.secret);
  const CurveKeys other = derive_curve_keys("another-secret");
  mixed.client_public = other.client_public;
  mixed.client_secret = other.client_secret;
  ZmqContext ctx({.insecure = true}, false);
  void* s = zmq_socket(ctx.get(), ZMQ_DEALER);
  make_curve_client(s, mixed);
  const int zero = 0;
  zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
  zmq_connect(s, server.endpoint().c_str());
  zmq_send(s, "12345678", 8, 0);
  for (int i = 0; i < 250 && server.refused() == 0; ++i) std::this_thread::sleep_for(2ms);
  zmq_close(s);
  EXPECT_GE(server.refused(), 1u);
  RequestClient plain({.peers = {server.endpoint()}, .security = {.insecure = true}, .ids = toy_ids()});
  std::vector<Call> again = {toy_call({0}, &got)};
  EXPECT_THROW(plain.call(again, {.timeout = 500ms}), TimeoutError);
  EXPECT_EQ(server.requests(), 0);
}

TEST(Endpoint, MalformedRepliesAreCommErrors) {
  ToyServer garbage(ToyServer::Mode::Garbage, kSec);
  RequestClient client({.peers = {garbage.endpoint()}, .security = kSec, .ids = toy_ids(), .name = "toy"});
  std::string got;
  std::vector<Call> calls = {toy_call({0}, &got)};
  try {
    client.call(calls, {.timeout = 5s});
    FAIL() << "no CommError";
  } catch (const CommError& e) {
    EXPECT_NE(std::string(e.what()).find("toy: bad reply from"), std::string::npos) << e.what();
  }
}

TEST(Endpoint, ServerSkipsMalformedRequestsAndGoesOn) {
  ToyServer server(ToyServer::Mode::Echo, {.insecure = true});
  ZmqContext ctx({.insecure = true}, false);
  Socket raw = Socket::dealer(ctx, server.endpoint());
  raw.send({OutFrame::copy(std::string_view(""))});  // an empty frame: still a request, echoed
  std::vector<FramePtr> frames;
  for (int i = 0; i < 500 && !raw.recv(frames); ++i) std::this_thread::sleep_for(2ms);
  ASSERT_EQ(frames.size(), 1u);
  RequestClient client({.peers = {server.endpoint()}, .security = {.insecure = true}, .ids = toy_ids()});
  std::string got;
  std::vector<Call> calls = {toy_call({0}, &got)};
  client.call(calls, {.timeout = 5s});
  EXPECT_EQ(got, "hello");
}

TEST(Endpoint, PollWaitsForASocketOrAnFdUntilItsTimeout) {
  ToyServer server(ToyServer::Mode::Echo, kSec);
  ZmqContext ctx(kSec, /*serves=*/false);
  Socket dealer = Socket::dealer(ctx, server.endpoint());
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  PollItem items[2];
  items[0].socket = &dealer;
  items[1].fd = fds[0];
  // Nothing to read: 0 after the timeout.
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(poll(items, 100ms), 0);
  auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(took, 90ms);
  EXPECT_LT(took, 2s);
  EXPECT_FALSE(items[0].ready || items[1].ready);
  // The fd wakes it at once.
  ASSERT_EQ(::write(fds[1], "x", 1), 1);
  t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(poll(items, 10s), 1);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  EXPECT_TRUE(items[1].ready);
  EXPECT_FALSE(items[0].ready);
  char c = 0;
  ASSERT_EQ(::read(fds[0], &c, 1), 1);
  // So does a reply on the socket.
  dealer.send({OutFrame::borrow(std::string_view("hi"))});
  for (int i = 0; i < 100 && !items[0].ready; ++i) poll(items, 100ms);
  ASSERT_TRUE(items[0].ready);
  EXPECT_FALSE(items[1].ready);
  std::vector<FramePtr> frames;
  ASSERT_TRUE(dealer.recv(frames));
  ASSERT_EQ(frames.size(), 1u);
  EXPECT_EQ(frames[0]->view(), "hi");
  // A closed socket is skipped, not an error.
  dealer.close();
  EXPECT_EQ(poll(items, 10ms), 0);
  ::close(fds[0]);
  ::close(fds[1]);
}

// Polls `refusals` until it names a refused handshake (or 5 s pass).
std::string wait_for_refusal(const Socket& refusals) {
  PollItem item;
  item.socket = &refusals;
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (std::chrono::steady_clock::now() < deadline) {
    poll(std::span<PollItem>(&item, 1), 50ms);
    if (std::string why = handshake_refused(refusals); !why.empty()) return why;
  }
  return "";
}

TEST(Endpoint, ADealerHearsWhenThePeerRefusesItsKeys) {
  ToyServer server(ToyServer::Mode::Echo, kSec);
  // The wrong job secret: the server cannot read our CURVE hello.
  {
    ZmqContext ctx({.secret = "another-secret"}, /*serves=*/false);
    Socket refusals;
    Socket dealer = Socket::dealer(ctx, server.endpoint(), {}, &refusals);
    ASSERT_TRUE(refusals);
    EXPECT_EQ(wait_for_refusal(refusals), "CURVE handshake failed");
  }
  // Plaintext against CURVE.
  {
    ZmqContext ctx({.insecure = true}, /*serves=*/false);
    Socket refusals;
    Socket dealer = Socket::dealer(ctx, server.endpoint(), {}, &refusals);
    EXPECT_EQ(wait_for_refusal(refusals), "CURVE handshake failed");
  }
  EXPECT_EQ(server.requests(), 0);
  // The right secret: a reply, and nothing refused.
  ZmqContext ctx(kSec, /*serves=*/false);
  Socket refusals;
  Socket dealer = Socket::dealer(ctx, server.endpoint(), {}, &refusals);
  dealer.send({OutFrame::borrow(std::string_view("hi"))});
  std::vector<FramePtr> frames;
  for (int i = 0; i < 500 && !dealer.recv(frames); ++i) std::this_thread::sleep_for(2ms);
  ASSERT_EQ(frames.size(), 1u);
  EXPECT_EQ(handshake_refused(refusals), "");
}

}  // namespace
}  // namespace loom::comm
