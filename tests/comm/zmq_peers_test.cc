// The ZeroMQ transport against peers that are not well-behaved ranks:
// security settings and keys, authentication (another secret, plaintext
// against CURVE, a client key not derived from the secret), and malformed
// messages from a raw ZeroMQ socket, each of which breaks only that peer.
#include <gtest/gtest.h>
#include <zmq.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "loom/comm/wire/security.h"
#include "loom/comm/wire/wire.h"
#include "loom/comm/transport/zmq_transport.h"
#include "transport_contract.h"
#include "zmq_test_worlds.h"

namespace loom::comm {
namespace {

using namespace std::chrono_literals;
using namespace testing_worlds;
using contract::patient;
using contract::pattern;

// ---- security ----

TEST(Security, EmptySecretWithoutInsecureIsAValueErrorThatSaysWhatToDo) {
  try {
    check_security({});
    ADD_FAILURE() << "no error";
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("LOOM_JOB_SECRET"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("--insecure"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(check_security({.secret = {}, .insecure = true}));
  EXPECT_NO_THROW(check_security({.secret = "s"}));
  EXPECT_THROW(ZmqTransport(0, {pick_free_tcp_endpoint()}, SecurityOptions{}), ValueError);
}

TEST(Security, KeysAreDeterministicPerSecretAndDistinct) {
  const CurveKeys a = derive_curve_keys("alpha");
  const CurveKeys a2 = derive_curve_keys("alpha");
  const CurveKeys b = derive_curve_keys("alphb");
  EXPECT_EQ(a.server_public, a2.server_public);
  EXPECT_EQ(a.server_secret, a2.server_secret);
  EXPECT_EQ(a.client_public, a2.client_public);
  EXPECT_EQ(a.client_secret, a2.client_secret);
  EXPECT_NE(a.server_public, b.server_public);
  EXPECT_NE(a.client_public, b.client_public);
  EXPECT_NE(a.server_public, a.client_public);
  for (const std::string* k : {&a.server_public, &a.server_secret, &a.client_public, &a.client_secret}) {
    EXPECT_EQ(k->size(), 40u);
  }
  // The public key is the one ZeroMQ derives from the secret key.
  char derived[41];
  ASSERT_EQ(zmq_curve_public(derived, a.server_secret.c_str()), 0);
  EXPECT_EQ(std::string(derived), a.server_public);
  ASSERT_EQ(zmq_curve_public(derived, a.client_secret.c_str()), 0);
  EXPECT_EQ(std::string(derived), a.client_public);
  EXPECT_THROW(derive_curve_keys(""), ValueError);
}

TEST(Security, SecretFromEnvironmentOrFile) {
  ::unsetenv("LOOM_JOB_SECRET");
  ::unsetenv("LOOM_JOB_SECRET_FILE");
  EXPECT_TRUE(security_from_env().secret.empty());
  EXPECT_TRUE(security_from_env(true).insecure);

  const auto path = std::filesystem::temp_directory_path() / ("loom-secret-" + std::to_string(::getpid()));
  std::ofstream(path) << "from-file\n";
  ::setenv("LOOM_JOB_SECRET_FILE", path.c_str(), 1);
  EXPECT_EQ(security_from_env().secret, "from-file");
  ::setenv("LOOM_JOB_SECRET", "from-env", 1);  // the variable wins over the file
  EXPECT_EQ(security_from_env().secret, "from-env");
  ::unsetenv("LOOM_JOB_SECRET");
  ::unsetenv("LOOM_JOB_SECRET_FILE");

  std::ofstream(path) << "\n";
  EXPECT_THROW(read_secret_file(path), ValueError);
  std::filesystem::remove(path);
  EXPECT_THROW(read_secret_file(path), IoError);
}

// ---- a raw ZeroMQ peer, to play a stranger or a broken rank ----

class RawPeer {
 public:
  struct Curve {
    std::string server_public, client_public, client_secret;
  };
  RawPeer(const std::string& endpoint, const std::string& routing_id, std::optional<Curve> curve) {
    ctx_ = zmq_ctx_new();
    s_ = zmq_socket(ctx_, ZMQ_DEALER);
    const int zero = 0;
    zmq_setsockopt(s_, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(s_, ZMQ_ROUTING_ID, routing_id.data(), routing_id.size());
    if (curve) {
      zmq_setsockopt(s_, ZMQ_CURVE_SERVERKEY, curve->server_public.c_str(), 41);
      zmq_setsockopt(s_, ZMQ_CURVE_PUBLICKEY, curve->client_public.c_str(), 41);
      zmq_setsockopt(s_, ZMQ_CURVE_SECRETKEY, curve->client_secret.c_str(), 41);
    }
    EXPECT_EQ(zmq_connect(s_, endpoint.c_str()), 0);
  }
  ~RawPeer() {
    zmq_close(s_);
    zmq_ctx_term(ctx_);
  }
  void send(const std::vector<std::vector<std::byte>>& frames) {
    for (size_t i = 0; i < frames.size(); ++i) {
      const int flags = i + 1 < frames.size() ? ZMQ_SNDMORE : 0;
      ASSERT_GE(zmq_send(s_, frames[i].data(), frames[i].size(), flags), 0) << zmq_strerror(zmq_errno());
    }
  }

 private:
  void* ctx_;
  void* s_;
};

std::vector<std::byte> header_bytes(const wire::Header& h) {
  const wire::HeaderBytes b = wire::encode_header(h);
  return {b.begin(), b.end()};
}

// Waits up to `limit` for `cond`.
template <class F>
bool eventually(F cond, std::chrono::milliseconds limit = 5000ms) {
  const auto until = Clock::now() + limit;
  while (Clock::now() < until) {
    if (cond()) return true;
    std::this_thread::sleep_for(10ms);
  }
  return cond();
}

// ---- authentication ----

// Sends from a rank the other side will refuse. Whether the message waits in
// the send queue or the send times out depends on when ZeroMQ drops the
// refused connection; either way nothing is delivered, which is what the
// tests check.
void send_to_a_refusing_peer(ZmqTransport& from, int to, int tag, std::span<const std::byte> bytes) {
  try {
    from.send(to, tag, bytes, Deadline::in(2s));
  } catch (const TimeoutError&) {
  }
}

TEST(ZmqAuth, RankWithAnotherSecretCannotDeliver) {
  const auto endpoints = tcp_endpoints(2);
  ZmqTransport good(0, endpoints, {.secret = kSecret}, test_options());
  ZmqTransport stranger(1, endpoints, {.secret = "not-the-job-secret"}, test_options());
  send_to_a_refusing_peer(stranger, 0, 1, pattern(100, 1, 0, 1));
  std::vector<std::byte> got(100);
  try {
    good.recv(1, 1, got, Deadline::in(1500ms));
    ADD_FAILURE() << "a message from a process without the secret was delivered";
  } catch (const TimeoutError& e) {
    EXPECT_TRUE(eventually([&] { return good.stats().handshakes_failed > 0; })) << e.what();
  }
  EXPECT_EQ(good.stats().messages_received, 0u);
  // The refusal is what the error names.
  try {
    good.recv(1, 1, got, Deadline::in(100ms));
  } catch (const TimeoutError& e) {
    EXPECT_NE(std::string(e.what()).find("LOOM_JOB_SECRET"), std::string::npos) << e.what();
  }
  // And the other way round.
  send_to_a_refusing_peer(good, 1, 2, pattern(10, 0, 1, 2));
  std::vector<std::byte> small(10);
  EXPECT_THROW(stranger.recv(0, 2, small, Deadline::in(1000ms)), TimeoutError);
  EXPECT_EQ(stranger.stats().messages_received, 0u);
}

TEST(ZmqAuth, PlaintextPeerCannotDeliverToCurveRank) {
  const auto endpoints = tcp_endpoints(2);
  ZmqTransport secure(0, endpoints, curve(), test_options());
  ZmqTransport plain(1, endpoints, plaintext(), test_options());
  send_to_a_refusing_peer(plain, 0, 1, pattern(5, 1, 0, 1));
  std::vector<std::byte> got(5);
  EXPECT_THROW(secure.recv(1, 1, got, Deadline::in(1000ms)), TimeoutError);
  EXPECT_EQ(secure.stats().messages_received, 0u);
}

TEST(ZmqAuth, ZapRefusesAClientKeyNotDerivedFromTheSecret) {
  // The stranger knows the server's public key (it is public) but not the secret.
  const auto endpoints = tcp_endpoints(2);
  ZmqTransport rank0(0, endpoints, curve(), test_options());
  const CurveKeys keys = derive_curve_keys(kSecret);
  char other_public[41], other_secret[41];
  ASSERT_EQ(zmq_curve_keypair(other_public, other_secret), 0);
  const std::vector<std::vector<std::byte>> message = {header_bytes({.sender = 1, .tag = 3, .payload_nbytes = 4}),
                                                       pattern(4, 1, 0, 3)};
  std::vector<std::byte> got(4);
  {
    RawPeer stranger(endpoints[0], "r1", RawPeer::Curve{keys.server_public, other_public, other_secret});
    stranger.send(message);
    EXPECT_THROW(rank0.recv(1, 3, got, Deadline::in(1000ms)), TimeoutError);
    EXPECT_TRUE(eventually([&] { return rank0.stats().handshakes_failed > 0; }));
  }
  // The same bytes with the derived client key get through: ZAP was the gate.
  RawPeer member(endpoints[0], "r1", RawPeer::Curve{keys.server_public, keys.client_public, keys.client_secret});
  member.send(message);
  rank0.recv(1, 3, got, Deadline::in(5s));
  EXPECT_EQ(got, pattern(4, 1, 0, 3));
}

// ---- malformed peers ----

TEST(ZmqTransportTest, MalformedHeaderBreaksOnlyThatPeer) {
  const auto endpoints = tcp_endpoints(3);
  ZmqTransport rank0(0, endpoints, plaintext(), test_options());
  ZmqTransport rank2(2, endpoints, plaintext(), test_options());
  RawPeer bad(endpoints[0], "r1", std::nullopt);
  auto good_header = header_bytes({.sender = 1, .tag = 7, .payload_nbytes = 3});
  bad.send({good_header, pattern(3, 1, 0, 7)});  // a valid message first: it is still delivered
  auto corrupt = good_header;
  corrupt[0] = std::byte{'X'};
  bad.send({corrupt, pattern(3, 1, 0, 7)});
  bad.send({good_header, pattern(3, 1, 0, 7, 1)});  // after a bad one, nothing from rank 1 is trusted

  std::vector<std::byte> got(3);
  rank0.recv(1, 7, got, Deadline::in(5s));
  EXPECT_EQ(got, pattern(3, 1, 0, 7));
  try {
    rank0.recv(1, 7, got, Deadline::in(5s));
    ADD_FAILURE() << "a message after a corrupted header was delivered";
  } catch (const TimeoutError& e) {
    ADD_FAILURE() << "expected CommError, got TimeoutError: " << e.what();
  } catch (const CommError& e) {
    EXPECT_NE(std::string(e.what()).find("bad magic"), std::string::npos) << e.what();
  }
  EXPECT_THROW(rank0.recv(1, 8, got, Deadline::in(1s)), CommError);
  EXPECT_GE(rank0.stats().messages_dropped, 1u);
  // Rank 2 is unaffected.
  rank2.send(0, 7, pattern(3, 2, 0, 7), patient());
  rank0.recv(2, 7, got, patient());
  EXPECT_EQ(got, pattern(3, 2, 0, 7));
}

TEST(ZmqTransportTest, WrongFrameCountSenderOrSizeBreaksThePeer) {
  struct Case {
    std::string name;
    std::vector<std::vector<std::byte>> frames;
    std::string expect;
  };
  const std::vector<Case> cases = {
      {"one frame", {header_bytes({.sender = 1, .tag = 7})}, "1 frame"},
      {"three frames", {header_bytes({.sender = 1, .tag = 7}), {}, {}}, "3 frame"},
      {"sender mismatch", {header_bytes({.sender = 2, .tag = 7}), {}}, "names sender rank 2"},
      {"short payload",
       {header_bytes({.sender = 1, .tag = 7, .payload_nbytes = 5}), pattern(4, 1, 0, 7)},
       "payload frame is 4 bytes"},
      {"rank out of range", {header_bytes({.sender = 5, .tag = 7}), {}}, "out of range"},
      {"truncated header", {std::vector<std::byte>(6), {}}, "truncated"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const auto endpoints = tcp_endpoints(3);
    ZmqTransport rank0(0, endpoints, plaintext(), test_options());
    RawPeer bad(endpoints[0], "r1", std::nullopt);
    bad.send(c.frames);
    std::vector<std::byte> got;
    try {
      rank0.recv(1, 7, got, Deadline::in(5s));
      ADD_FAILURE() << "accepted";
    } catch (const TimeoutError& e) {
      ADD_FAILURE() << "expected CommError, got TimeoutError: " << e.what();
    } catch (const CommError& e) {
      EXPECT_NE(std::string(e.what()).find(c.expect), std::string::npos) << e.what();
    }
  }
}

TEST(ZmqTransportTest, UnknownRoutingIdIsDroppedWithoutBreakingAnyone) {
  const auto endpoints = tcp_endpoints(2);
  ZmqTransport rank0(0, endpoints, plaintext(), test_options());
  ZmqTransport rank1(1, endpoints, plaintext(), test_options());
  {
    RawPeer nobody(endpoints[0], "zz", std::nullopt);
    nobody.send({header_bytes({.sender = 1, .tag = 7}), {}});
    EXPECT_TRUE(eventually([&] { return rank0.stats().messages_dropped == 1; }));
  }
  rank1.send(0, 7, {}, patient());
  std::vector<std::byte> none;
  rank0.recv(1, 7, none, patient());
}

TEST(ZmqTransportTest, FrameOverTheLimitNeverArrives) {
  const auto endpoints = tcp_endpoints(2);
  ZmqOptions o = test_options();
  o.max_payload_nbytes = 1000;
  ZmqTransport rank0(0, endpoints, plaintext(), o);
  RawPeer big(endpoints[0], "r1", std::nullopt);
  big.send({header_bytes({.sender = 1, .tag = 7, .payload_nbytes = 5000}), pattern(5000, 1, 0, 7)});
  std::vector<std::byte> got(5000);
  EXPECT_THROW(rank0.recv(1, 7, got, Deadline::in(1000ms)), CommError);  // ZeroMQ drops the connection
}

}  // namespace
}  // namespace loom::comm
