// The shared-memory all-reduce (Algorithm::SharedMemory, "shm"): on one host,
// over a ShmTransport, the whole buffer goes through the all-reduce lanes of
// the transport's segment (shm_allreduce.h has the schedule) instead of
// messages: per byte of buffer a rank moves 4(p-1)/p + 1 + 2/p bytes, against
// 11(p-1)/p for the ring over the shared-memory message rings. It is an
// algorithm of the collectives like the others; the transport only lends its
// lanes (ShmTransport::lanes()), and this file decides whether they can be
// used by looking at what the communicator's transport is.
#include "loom/comm/collectives/collectives.h"
#include "loom/comm/collectives/shm_allreduce.h"
#include "loom/comm/transport/shm_transport.h"

namespace loom::comm {

namespace {

ShmTransport* shm_transport_of(const Communicator& c) { return dynamic_cast<ShmTransport*>(c.transport.get()); }

}  // namespace

std::string shared_memory_unavailable(const Communicator& c) {
  ShmTransport* shm = shm_transport_of(c);
  if (shm == nullptr) {
    return format("it runs on the shared-memory transport (every rank on one host), this communicator's transport "
                  "is '{}'",
                  c.transport->kind());
  }
  if (num_hosts(c) > 1) return format("the communicator's ranks are on {} hosts", num_hosts(c));
  if (c.size == 1) return "";  // nothing to reduce
  return shm->lanes().missing_lane(c.channel);
}

bool shared_memory_available(const Communicator& c) {
  if (!shared_memory_unavailable(c).empty()) return false;
  return c.size == 1 || !shm_transport_of(c)->lanes().broken(c.channel);
}

namespace detail {

void shared_memory_allreduce(const Call& call, const Communicator& c, Buffer buf, ReduceOp op) {
  ShmTransport* shm = shm_transport_of(c);
  LOOM_ASSERT(shm != nullptr && shm == call.transport);
  // Communicators on different channels may run at once: one lane each.
  const shm::LaneCall lane_call{.stream = c.channel, .data = buf.data, .numel = buf.numel, .dtype = buf.dtype,
                                .op = op};
  shm->lanes().run(lane_call, call.deadline);
}

}  // namespace detail
}  // namespace loom::comm
