#include "loom/comm/wire/security.h"

#include <sodium.h>
#include <zmq.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <vector>

#include "loom/core/error.h"

namespace loom::comm {
namespace {

constexpr char kSecretKeyLabel[] = "loom-job-secret-v1";  // BLAKE2b key: separates Loom from other uses of a secret
constexpr char kKdfContext[crypto_kdf_CONTEXTBYTES + 1] = "loomcurv";
constexpr uint64_t kServerKeyId = 1;
constexpr uint64_t kClientKeyId = 2;
constexpr char kZapEndpoint[] = "inproc://zeromq.zap.01";
constexpr char kZapDomain[] = "loom";

void ensure_sodium() {
  // sodium_init is thread-safe and idempotent: 0 on the first call, 1 after.
  if (sodium_init() < 0) throw CommError("security: libsodium failed to initialise");
}

std::string z85(const uint8_t* key32) {
  char text[41];
  if (zmq_z85_encode(text, key32, 32) == nullptr) throw InternalError("security: zmq_z85_encode failed");
  return std::string(text, 40);
}

void wipe(std::string& s) {
  if (!s.empty()) sodium_memzero(s.data(), s.size());
}

void set_option(void* socket, int option, const void* value, size_t size, const char* name) {
  if (zmq_setsockopt(socket, option, value, size) != 0) {
    throw CommError(format("security: setting {} failed: {}", name, zmq_strerror(zmq_errno())));
  }
}

std::string trim_trailing_whitespace(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ' || s.back() == '\t')) s.pop_back();
  return s;
}

// One ZAP request: every frame of the multipart message.
std::vector<std::string> receive_frames(void* socket) {
  std::vector<std::string> frames;
  for (;;) {
    zmq_msg_t msg;
    zmq_msg_init(&msg);
    if (zmq_msg_recv(&msg, socket, ZMQ_DONTWAIT) < 0) {
      zmq_msg_close(&msg);
      return frames;  // EAGAIN before the first frame: nothing waiting
    }
    frames.emplace_back(static_cast<const char*>(zmq_msg_data(&msg)), zmq_msg_size(&msg));
    const bool more = zmq_msg_more(&msg) != 0;
    zmq_msg_close(&msg);
    if (!more) return frames;
  }
}

}  // namespace

CurveKeys::~CurveKeys() {
  wipe(server_secret);
  wipe(client_secret);
}

std::string read_secret_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IoError(format("cannot read job secret file {}: {}", path.string(), std::strerror(errno)));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw IoError(format("cannot read job secret file {}", path.string()));
  text = trim_trailing_whitespace(std::move(text));
  LOOM_CHECK(!text.empty(), "job secret file {} is empty", path.string());
  return text;
}

SecurityOptions security_from_env(bool insecure) {
  SecurityOptions options;
  options.insecure = insecure;
  if (const char* secret = std::getenv("LOOM_JOB_SECRET"); secret != nullptr && *secret != '\0') {
    options.secret = secret;
  } else if (const char* file = std::getenv("LOOM_JOB_SECRET_FILE"); file != nullptr && *file != '\0') {
    options.secret = read_secret_file(file);
  }
  return options;
}

void check_security(const SecurityOptions& options) {
  LOOM_CHECK(options.insecure || !options.secret.empty(),
             "no job secret: set LOOM_JOB_SECRET (or LOOM_JOB_SECRET_FILE) to the same value on every process, "
             "or pass --insecure for plaintext on a trusted network");
}

CurveKeys derive_curve_keys(std::string_view secret) {
  LOOM_CHECK(!secret.empty(), "derive_curve_keys: the job secret is empty");
  ensure_sodium();
  uint8_t master[crypto_kdf_KEYBYTES];
  static_assert(crypto_kdf_KEYBYTES <= crypto_generichash_BYTES_MAX);
  static_assert(sizeof(kSecretKeyLabel) - 1 >= crypto_generichash_KEYBYTES_MIN);
  crypto_generichash(master, sizeof master, reinterpret_cast<const unsigned char*>(secret.data()), secret.size(),
                     reinterpret_cast<const unsigned char*>(kSecretKeyLabel), sizeof(kSecretKeyLabel) - 1);

  CurveKeys keys;
  auto make_pair = [&](uint64_t id, std::string& public_z85, std::string& secret_z85, uint8_t* public_raw) {
    uint8_t seed[crypto_box_SEEDBYTES];
    uint8_t pk[crypto_box_PUBLICKEYBYTES];
    uint8_t sk[crypto_box_SECRETKEYBYTES];
    static_assert(crypto_box_SEEDBYTES >= crypto_kdf_BYTES_MIN && crypto_box_SEEDBYTES <= crypto_kdf_BYTES_MAX);
    static_assert(crypto_box_PUBLICKEYBYTES == 32 && crypto_box_SECRETKEYBYTES == 32);
    crypto_kdf_derive_from_key(seed, sizeof seed, id, kKdfContext, master);
    crypto_box_seed_keypair(pk, sk, seed);
    public_z85 = z85(pk);
    secret_z85 = z85(sk);
    if (public_raw != nullptr) std::memcpy(public_raw, pk, sizeof pk);
    sodium_memzero(seed, sizeof seed);
    sodium_memzero(sk, sizeof sk);
  };
  make_pair(kServerKeyId, keys.server_public, keys.server_secret, nullptr);
  make_pair(kClientKeyId, keys.client_public, keys.client_secret, keys.client_public_raw.data());
  sodium_memzero(master, sizeof master);
  return keys;
}

void make_curve_server(void* socket, const CurveKeys& keys) {
  const int on = 1;
  set_option(socket, ZMQ_CURVE_SERVER, &on, sizeof on, "ZMQ_CURVE_SERVER");
  set_option(socket, ZMQ_CURVE_SECRETKEY, keys.server_secret.c_str(), keys.server_secret.size() + 1,
             "ZMQ_CURVE_SECRETKEY");
  set_option(socket, ZMQ_ZAP_DOMAIN, kZapDomain, sizeof(kZapDomain) - 1, "ZMQ_ZAP_DOMAIN");
}

void make_curve_client(void* socket, const CurveKeys& keys) {
  set_option(socket, ZMQ_CURVE_SERVERKEY, keys.server_public.c_str(), keys.server_public.size() + 1,
             "ZMQ_CURVE_SERVERKEY");
  set_option(socket, ZMQ_CURVE_PUBLICKEY, keys.client_public.c_str(), keys.client_public.size() + 1,
             "ZMQ_CURVE_PUBLICKEY");
  set_option(socket, ZMQ_CURVE_SECRETKEY, keys.client_secret.c_str(), keys.client_secret.size() + 1,
             "ZMQ_CURVE_SECRETKEY");
}

ZapHandler::ZapHandler(void* zmq_context, const CurveKeys& keys) : client_public_(keys.client_public_raw) {
  socket_ = zmq_socket(zmq_context, ZMQ_REP);
  if (socket_ == nullptr)
    throw CommError(format("security: cannot create the ZAP socket: {}", zmq_strerror(zmq_errno())));
  const int linger = 0;
  zmq_setsockopt(socket_, ZMQ_LINGER, &linger, sizeof linger);
  if (zmq_bind(socket_, kZapEndpoint) != 0) {
    const int err = zmq_errno();
    zmq_close(socket_);
    throw CommError(format("security: cannot bind the ZAP handler at {}: {}", kZapEndpoint, zmq_strerror(err)));
  }
}

ZapHandler::~ZapHandler() {
  if (socket_ != nullptr) zmq_close(socket_);
}

void ZapHandler::handle() {
  for (;;) {
    std::vector<std::string> request = receive_frames(socket_);
    if (request.empty()) return;
    // ZAP (ZeroMQ RFC 27): version, request id, domain, address, routing id,
    // mechanism, credentials...; for CURVE one credential, the 32-byte client key.
    const std::string request_id = request.size() > 1 ? request[1] : std::string();
    bool ok = request.size() == 7 && request[0] == "1.0" && request[2] == kZapDomain && request[5] == "CURVE" &&
              request[6].size() == client_public_.size() &&
              sodium_memcmp(request[6].data(), client_public_.data(), client_public_.size()) == 0;
    const char* status = "200";
    const char* text = "OK";
    if (!ok) {
      status = "400";
      text = "client key is not derived from this job's secret";
      refused_.fetch_add(1, std::memory_order_relaxed);
    } else {
      accepted_.fetch_add(1, std::memory_order_relaxed);
    }
    const std::string reply[] = {"1.0", request_id, status, text, "", ""};
    for (size_t i = 0; i < std::size(reply); ++i) {
      const int flags = (i + 1 < std::size(reply) ? ZMQ_SNDMORE : 0) | ZMQ_DONTWAIT;
      if (zmq_send(socket_, reply[i].data(), reply[i].size(), flags) < 0) break;  // requester gone: nothing to do
    }
  }
}

}  // namespace loom::comm
