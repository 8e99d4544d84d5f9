// Job security: one secret per job, from which every process derives the same
// CURVE keys, so a process without the secret cannot connect, push or pull.
//
//   // given: bool insecure
//   comm::SecurityOptions sec = comm::security_from_env();   // LOOM_JOB_SECRET / LOOM_JOB_SECRET_FILE
//   sec.insecure = insecure;                                  // --insecure: plaintext only when asked for
//   comm::check_security(sec);                                // ValueError: no secret and not insecure
//   comm::CurveKeys keys = comm::derive_curve_keys(sec.secret);
//
// Derivation (libsodium): master = BLAKE2b-256(secret, key = "loom-job-secret-v1"),
// seed_i = crypto_kdf(master, id i, context "loomcurv"), key pair i =
// crypto_box_seed_keypair(seed_i) (Curve25519, what ZeroMQ CURVE uses); id 1 is
// the server pair, id 2 the client pair. Every rank is a server (its ROUTER)
// and a client (its DEALERs). Servers also answer ZAP requests
// (inproc://zeromq.zap.01, see ZapHandler): a client must present the derived
// client public key, so knowing the server's public key is not enough.
// The secret is never sent anywhere; CURVE encrypts and authenticates traffic.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

namespace loom::comm {

struct SecurityOptions {
  std::string secret;     // the job secret; never logged
  bool insecure = false;  // plaintext, no authentication: only for trusted networks and tests
};

// LOOM_JOB_SECRET, else the contents of the file named by LOOM_JOB_SECRET_FILE
// (trailing newline removed), else an empty secret. `insecure` is copied in.
SecurityOptions security_from_env(bool insecure = false);

// Reads a secret file (trailing whitespace removed). IoError if unreadable,
// ValueError if empty.
std::string read_secret_file(const std::filesystem::path& path);

// ValueError unless the options say what to do: a secret, or insecure.
void check_security(const SecurityOptions& options);

// Z85-encoded (40 characters) CURVE keys, the form zmq_setsockopt takes.
struct CurveKeys {
  std::string server_public;
  std::string server_secret;
  std::string client_public;
  std::string client_secret;
  std::array<uint8_t, 32> client_public_raw{};  // what a ZAP request carries
  CurveKeys() = default;
  CurveKeys(const CurveKeys&) = default;
  CurveKeys& operator=(const CurveKeys&) = default;
  ~CurveKeys();  // wipes the secret keys
};

// Deterministic: the same secret gives the same keys in every process.
// ValueError for an empty secret.
CurveKeys derive_curve_keys(std::string_view secret);

// Socket set-up (`socket` is a libzmq socket handle).
void make_curve_server(void* socket, const CurveKeys& keys);  // before bind()
void make_curve_client(void* socket, const CurveKeys& keys);  // before connect()

// The ZAP handler of one ZeroMQ context: accepts CURVE clients whose public key
// is the derived client key and refuses everyone else. It does not run a
// thread: the owner polls socket() and calls handle() when it is readable.
// Create it (binding inproc://zeromq.zap.01) before any server socket binds,
// or ZeroMQ accepts clients without asking.
class ZapHandler {
 public:
  ZapHandler(void* zmq_context, const CurveKeys& keys);
  ~ZapHandler();
  ZapHandler(const ZapHandler&) = delete;
  ZapHandler& operator=(const ZapHandler&) = delete;

  void* socket() const { return socket_; }
  // Answers every request waiting on the socket (does not block).
  void handle();
  // Counts, readable from any thread.
  uint64_t accepted() const { return accepted_.load(std::memory_order_relaxed); }
  uint64_t refused() const { return refused_.load(std::memory_order_relaxed); }

 private:
  void* socket_ = nullptr;
  std::array<uint8_t, 32> client_public_{};
  std::atomic<uint64_t> accepted_{0};
  std::atomic<uint64_t> refused_{0};
};

}  // namespace loom::comm
