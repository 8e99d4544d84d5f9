// Internal to the coordinator (coordinator_server.cc, coordinator_client.cc):
// the messages both ends speak, built from the frame codec (core/frame_codec.h),
// and the eventfd that wakes their polling loops. Not part of the public API;
// the format is described in coordinator.h: a 16-byte header {magic "LMCO",
// u16 version (1), u16 type, u64 request id} and a body, the fields of its
// type's struct below in order (i64 little-endian, strings as a u32 length and
// the bytes; Done and Heartbeat are empty).
//
// Every decoder checks every length against the frame and every field against
// its limits, and throws CommError naming the message and the field
// (fuzz/coordinator_message_fuzz.cc runs each of them).
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "loom/comm/rendezvous/coordinator.h"
#include "loom/core/error.h"

namespace loom::comm::coordinator_protocol {

using Ms = std::chrono::milliseconds;

// ---- wire format --------------------------------------------------------

inline constexpr std::array<char, 4> kMagic = {'L', 'M', 'C', 'O'};
inline constexpr uint16_t kVersion = 1;
inline constexpr size_t kHeaderBytes = 16;
inline constexpr size_t kMaxBodyBytes = size_t{4} << 20;
inline constexpr size_t kMaxNameBytes = 4096;  // role, host, endpoint, key, barrier name, reason
inline constexpr size_t kMaxValueBytes = size_t{1} << 20;
inline constexpr int64_t kMaxProcesses = 1 << 16;
inline constexpr int64_t kMaxTimeoutMs = INT64_MAX / 2000000;  // a deadline of now + it cannot overflow

// Propose, TryGet and MaybeValue came later under the same version; a
// coordinator built before them drops them as unknown (the call times out).
enum class Type : uint16_t {
  // client -> coordinator
  Hello = 1,
  Register = 2,
  Barrier = 3,
  Set = 4,
  Get = 5,
  Heartbeat = 6,
  Leave = 7,
  Propose = 8,
  TryGet = 9,
  // coordinator -> client
  Welcome = 32,
  Registered = 33,
  Done = 34,
  Value = 35,
  HeartbeatAck = 36,
  Lost = 37,
  Error = 38,
  MaybeValue = 39,
};

bool known_type(uint16_t t);

enum ErrorCode : int64_t { kRefused = 1, kTimedOut = 2, kPeerLost = 3, kProtocol = 4 };

struct Header {
  Type type;
  uint64_t request;
};

std::string encode_header(Type type, uint64_t request);
// CommError for a wrong size, magic, version or type.
Header decode_header(std::string_view h);

// ---- message bodies ------------------------------------------------------
// One struct per body; encode() writes it, decode_<message>() reads it back.

struct HelloBody {  // Hello
  int64_t pid = 0;
};
struct WelcomeBody {  // Welcome
  Ms heartbeat_interval{0};  // 1 ms .. 1 h
  Ms heartbeat_timeout{0};   // 1 ms .. 10 h
};
struct RegisterBody {  // Register (Registered answers with the Membership)
  std::string role;    // any string: the coordinator refuses a role it does not know
  std::string host;
  int rank = -1;       // -1 .. kMaxProcesses
  std::string endpoint;
  Ms timeout{0};       // 0 .. kMaxTimeoutMs
};
struct BarrierBody {  // Barrier
  std::string name;
  std::string scope;  // "" (everyone) or a role
  Ms timeout{0};
};
struct SetBody {  // Set (Done answers)
  std::string key;
  std::string value;  // at most kMaxValueBytes
};
struct GetBody {  // Get (Value answers)
  std::string key;
  Ms timeout{0};
};
struct ValueBody {  // Value
  std::string value;
};
// Propose: set the key unless it is set (Value answers with the value it holds then).
using ProposeBody = SetBody;
struct TryGetBody {  // TryGet (MaybeValue answers at once)
  std::string key;
};
struct MaybeValueBody {  // MaybeValue: an i64 found (0 or 1), then the value ("" when not found)
  std::optional<std::string> value;
};
struct LeaveBody {  // Leave (Done answers)
  bool clean = true;   // false: the process ended on an error, report it lost
  std::string reason;
};
struct ErrorBody {  // Error: an ErrorCode (others are read as kProtocol) and a message
  int64_t code = kProtocol;
  std::string message;
};
// Lost: a LostPeer. HeartbeatAck: every LostPeer so far, as a count and the list.

std::string encode(const HelloBody& b);
std::string encode(const WelcomeBody& b);
std::string encode(const RegisterBody& b);
std::string encode(const BarrierBody& b);
std::string encode(const SetBody& b);
std::string encode(const GetBody& b);
std::string encode(const ValueBody& b);
std::string encode(const TryGetBody& b);
std::string encode(const MaybeValueBody& b);
std::string encode(const LeaveBody& b);
std::string encode(const ErrorBody& b);
std::string encode(const LostPeer& p);
std::string encode_heartbeat_ack(const std::vector<LostPeer>& lost);
// The asker's role and rank, then the job: counts, then every process
// (workers by rank, then servers by rank). world_size is not sent.
std::string encode_registered(const Membership& m);

HelloBody decode_hello(std::string_view body);
WelcomeBody decode_welcome(std::string_view body);
RegisterBody decode_register(std::string_view body);
BarrierBody decode_barrier(std::string_view body);
SetBody decode_set(std::string_view body);
GetBody decode_get(std::string_view body);
ValueBody decode_value(std::string_view body);
ProposeBody decode_propose(std::string_view body);
TryGetBody decode_try_get(std::string_view body);
MaybeValueBody decode_maybe_value(std::string_view body);
LeaveBody decode_leave(std::string_view body);
ErrorBody decode_error(std::string_view body);
LostPeer decode_lost(std::string_view body);  // role worker or server
std::vector<LostPeer> decode_heartbeat_ack(std::string_view body);
// Checks the list (counts, roles and ranks in order, host indices) and sets world_size.
Membership decode_registered(std::string_view body);
// Heartbeat and Done: nothing.
void decode_empty(std::string_view body, Type type);

bool valid_role(const std::string& role);

// "worker 3 on host a7"
std::string describe_process(const std::string& role, int rank, const std::string& host);

// ---- waking a polling loop ----------------------------------------------

// The eventfd that wakes a loop blocked in zmq_poll.
int make_eventfd();
void drain_eventfd(int fd);
void signal_eventfd(int fd);

}  // namespace loom::comm::coordinator_protocol
