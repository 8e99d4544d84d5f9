// Parameter-server message bodies that are not slices of a key, and how the
// request ids of protocol.h's header meet comm::RequestClient.
//
//   std::string bytes = ps::encode_config({.replicas = 1, .split_bound = 1 << 20, .slice_elements = 1 << 16});
//   ps::ServerConfig config = ps::decode_config(bytes);      // CommError naming what is wrong
//   comm::RequestIds ids = ps::request_ids();                 // for comm::RequestClient
//
// Config layout (little-endian): magic "LMPC", u16 version (2), u16 reserved
// (0), i32 replicas, i64 split_bound, i64 slice_elements; 28 bytes, checked by
// check_placement's limits as the servers' own options are. Server 0
// publishes it as "ps/config"; the workers place keys by it.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "loom/comm/wire/endpoint.h"

namespace loom::ps {

// What every server and worker must agree on to place keys alike.
struct ServerConfig {
  int replicas = 0;
  int64_t split_bound = 0;
  int64_t slice_elements = 0;
};
std::string encode_config(const ServerConfig& config);
ServerConfig decode_config(std::string_view bytes);

// Writes `id` into an encoded header (and its checksum).
void stamp_request_id(std::span<std::byte> header, uint64_t id);
// The request a reply answers. CommError if the header is malformed, or if it
// is a server's error reply to a request it could not read (id 0), with the
// server's message.
uint64_t reply_request_id(std::span<const comm::FramePtr> reply);
comm::RequestIds request_ids();

}  // namespace loom::ps
