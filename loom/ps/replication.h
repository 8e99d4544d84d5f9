// Internal to the parameter server (server.h describes replication): both
// sides of it. As a primary: every applied update (and init, and state) of a
// slice goes to each live backup after this server in the slice's chain as
// a job; the requests it answers wait until every backup has acknowledged
// it. As a backup: the primary's Init, SetState and Replicate are applied
// (the same rule on the same bytes), and a worker's request for a slice whose
// primary is still believed alive is deferred. When a server is lost, jobs
// stop waiting for it, this server takes over the chains where it is next
// (first sending its full state to the backups after it, Op::SetState), and
// the deferred requests are handed back to be served.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "loom/comm/wire/endpoint.h"
#include "loom/ps/server.h"
#include "loom/ps/server_replies.h"
#include "loom/ps/server_slices.h"

namespace loom::ps::detail {

class Replication {
 public:
  // Must go before the endpoint whose context its DEALERs live in.
  Replication(const ServerOptions& options, SliceTable& slices, Replier& replier, ServerCounters& counters);

  // A DEALER to every other server (by rank; none to itself), watched by
  // `endpoint` for acknowledgements. Only with replicas > 0.
  void connect(comm::ServerEndpoint& endpoint, const std::vector<std::string>& endpoints);

  bool alive(int server) const { return !lost_[static_cast<size_t>(server)]; }
  // The first live server of a chain (-1 when none is).
  int primary_of(const std::vector<int>& chain) const;

  // Primary: sends one message about a slice to every live backup after this
  // server in its chain; `replies` are answered (and, with `marks_value`, the
  // slice's value counts as held by its backups) once all have acknowledged it.
  void replicate(const SliceId& id, Entry& e, Header h, std::span<const std::span<const std::byte>> frames,
                 std::vector<Waiting> replies, bool marks_value);
  // Primary: an update was applied to `e`: it goes to the backups (Op::Replicate,
  // the merged update itself), and the round's pushes are answered once they hold it.
  void applied(const SliceId& id, Entry& e);
  // Backup: a request (frames: [route] [header] [payload...]) for a slice whose
  // primary is still believed alive waits until it is lost.
  void defer(const std::vector<MsgPtr>& frames) { deferred_.push_back(frames); }
  // Backup: the primary's Init, SetState or Replicate, applied and acknowledged.
  void from_primary(const std::vector<MsgPtr>& route, const Header& h, std::vector<MsgPtr>& frames,
                    const SliceId& id, int owner);

  // A backup's acknowledgement (or refusal) of a job, from its DEALER.
  void on_peer_reply(int server, std::vector<MsgPtr>& frames);
  // Server `server` is gone: jobs finish without it and this server takes
  // over the slices it now leads. Returns the deferred requests, to be served
  // again (their primary may now be this server).
  std::deque<std::vector<MsgPtr>> server_lost(int server);

 private:
  struct Job {  // an update sent to backups, not yet acknowledged by all
    SliceId slice;
    std::set<int> waiting;
    std::vector<Waiting> replies;
    bool marks_value = false;  // an init or a state: value_acked once done
  };
  void finish(Job& job);
  void take_over(const SliceId& id, Entry& e);

  const ServerOptions& o_;
  SliceTable& slices_;
  Replier& replier_;
  ServerCounters& n_;
  std::vector<comm::Socket> peers_;  // DEALER per server (none for self), watched by the endpoint; never resized
  std::vector<bool> lost_;
  std::map<uint64_t, Job> jobs_;
  uint64_t next_job_ = 1;
  std::deque<std::vector<MsgPtr>> deferred_;
};

}  // namespace loom::ps::detail
