// Internal to the parameter server (server.cc's loop hands it every decoded
// request): what the requests do to the slices. Init, push and pushpull,
// pull, the row-sparse forms about several slices, get/set state, set the
// optimizer, a worker leaving, and mapping a worker's staging region for the
// one-host path (Flag::Shm). A request for a slice this server backs up
// while its primary lives is deferred (replication.h); one from another
// server goes to the backup side of replication. A handler throws what the
// worker is to be told; the loop answers it with the error.
#pragma once

#include <map>
#include <memory>
#include <vector>

#include "loom/comm/transport/shared_region.h"
#include "loom/ps/replication.h"
#include "loom/ps/server.h"
#include "loom/ps/server_replies.h"
#include "loom/ps/server_slices.h"

namespace loom::ps::detail {

class RequestHandlers {
 public:
  RequestHandlers(const ServerOptions& options, SliceTable& slices, Replier& replier, Replication& replication,
                  ServerCounters& counters)
      : o_(options), slices_(slices), replier_(replier), replication_(replication), n_(counters) {}

  // frames: [route] [header] [payload...], the header decoded as `h` and its frame count checked.
  void handle(const std::vector<MsgPtr>& route, const Header& h, std::vector<MsgPtr>& frames);

 private:
  struct SparsePart;  // one slice's share of a row-sparse request

  void set_optimizer(const std::vector<MsgPtr>& route, const Header& h, std::vector<MsgPtr>& frames);
  void leave(const std::vector<MsgPtr>& route, const Header& h);
  void shm_attach(const std::vector<MsgPtr>& route, const Header& h, std::vector<MsgPtr>& frames);
  void init(const std::vector<MsgPtr>& route, const Header& h, std::vector<MsgPtr>& frames, const SliceId& id,
            int owner);
  void push(const std::vector<MsgPtr>& route, const Header& h, std::vector<MsgPtr>& frames, const SliceId& id);
  void pull(const std::vector<MsgPtr>& route, const Header& h, std::vector<MsgPtr>& frames, const SliceId& id);
  void sparse(const std::vector<MsgPtr>& route, const Header& h, std::vector<MsgPtr>& frames);
  // The slices a sparse request is about, each checked; false when this
  // server is a backup of them whose primary lives (the request is deferred).
  bool sparse_parts(const Header& h, std::vector<MsgPtr>& frames, std::vector<SparsePart>& parts);
  void get_state(const std::vector<MsgPtr>& route, const Header& h, const SliceId& id);
  void set_state(const std::vector<MsgPtr>& route, const Header& h, std::vector<MsgPtr>& frames, const SliceId& id,
                 int owner);
  // A Flag::Shm request's place in its worker's region: the offset its one
  // frame names, checked against the region and the slice's size.
  Staged staged(const Header& h, const std::vector<MsgPtr>& frames);

  const ServerOptions& o_;
  SliceTable& slices_;
  Replier& replier_;
  Replication& replication_;
  ServerCounters& n_;
  std::map<int, std::shared_ptr<comm::SharedRegion>> regions_;  // staging regions of workers on this host
};

}  // namespace loom::ps::detail
