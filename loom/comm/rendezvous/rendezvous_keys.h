// Every name the processes of a job meet under at the coordinator
// (comm/rendezvous/coordinator.h): the keys of its key-value store and the barriers,
// each with who sets or reaches it and what its value holds. Use these, never
// a string literal: a misspelt name is then a compile error instead of a
// get() that waits out its timeout, and this file lists the whole bootstrap.
//
//   // given: comm::CoordinatorClient& client, int rank, int64_t step, std::string config_bytes
//   namespace keys = comm::rendezvous;
//   if (rank == 0) client.set(keys::kPsConfig, config_bytes);         // ps::encode_config's bytes
//   client.set(keys::ssp_clock(rank, step), keys::kDone);             // "ssp/3/17"
//   client.barrier(keys::kTransportReady, 60s, "worker");
//
// The names are the wire protocol between processes of one job, which run the
// same build; tests/comm/join_job_test.cc pins them anyway.
#pragma once

#include <cstdint>
#include <string>

namespace loom::comm::rendezvous {

// ---- keys of the coordinator's store (CoordinatorClient::set / get) ----

// The value of a key whose presence is the message (ps/finished, ssp clocks).
inline constexpr char kDone[] = "1";

// The servers' placement settings. Set by server 0 at its join; every worker
// reads it in ps::join_kvstore and places keys by it. Value: the bytes of
// ps::encode_config (ps/messages.h), read back with ps::decode_config.
inline constexpr char kPsConfig[] = "ps/config";

// The KVStore type. Set by worker 0 in ps::join_kvstore; every server reads it
// at its join (it says whether to merge rounds). Value: io::name(io::Mode),
// parsed back with io::parse_mode.
inline constexpr char kPsType[] = "ps/type";

// The job is done. Set by worker 0 when every worker has closed its KVStore
// (after the kKvClose barrier); the servers poll for it, then exit. Value: kDone.
inline constexpr char kPsFinished[] = "ps/finished";

// dist_ssp's clock: worker `rank` finished step `step` (KVStore::advance_clock,
// steps from 1). Workers wait for the others' keys to bound staleness. Value: kDone.
inline std::string ssp_clock(int rank, int64_t step) {
  return "ssp/" + std::to_string(rank) + "/" + std::to_string(step);
}

// ---- barrier names (CoordinatorClient::barrier) ----

// Every process of the role has opened its data transport (ProcessGroup::join).
inline constexpr char kTransportReady[] = "transport-ready";

// A ProcessGroup's last barrier before it leaves (ProcessGroup::finish).
inline constexpr char kFinish[] = "finish";

// Every worker has closed its KVStore; worker 0 then sets kPsFinished.
inline constexpr char kKvClose[] = "kv-close";

// The n-th KVStore::barrier() of the workers (n from 0); set_optimizer and
// restoring optimizer states count as one each.
inline std::string kv_barrier(int64_t n) { return "kv-barrier-" + std::to_string(n); }

}  // namespace loom::comm::rendezvous
