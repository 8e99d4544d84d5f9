// The worker side's pieces, each alone against a scripted server (a
// comm::ServerEndpoint on a thread, real sockets with CURVE): the RPC glue
// (ps/server_calls.h), dense slices by socket and by shared memory
// (ps/dense_transfer.h), row-sparse rows (ps/sparse_transfer.h) and the
// optimizer state's transfer (ps/worker_state.h).
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "loom/comm/transport/shared_region.h"
#include "loom/core/error.h"
#include "loom/ps/dense_transfer.h"
#include "loom/ps/server_calls.h"
#include "loom/ps/sparse_transfer.h"
#include "loom/ps/worker_state.h"

namespace loom::ps {
namespace {

using namespace std::chrono_literals;
using comm::FramePtr;
using comm::OutFrame;
using Bytes = std::vector<std::byte>;

const comm::SecurityOptions kSec{.secret = "worker-calls-test"};

Bytes bytes_of(std::string_view s) {
  const auto* p = reinterpret_cast<const std::byte*>(s.data());
  return {p, p + s.size()};
}
std::string text_of(std::span<const std::byte> b) { return {reinterpret_cast<const char*>(b.data()), b.size()}; }

// What the script answers: a status, flags, and payload frames.
struct Answer {
  Status status = Status::Ok;
  std::vector<Bytes> frames;
  uint16_t flags = 0;
};
Answer error(std::string_view message) { return {.status = Status::Error, .frames = {bytes_of(message)}}; }

// A server whose answers come from a script run on its own thread, one request at a time.
class ScriptedServer {
 public:
  using Script = std::function<Answer(const Header& h, std::span<const FramePtr> payload)>;
  explicit ScriptedServer(Script script) : ep_({.security = kSec}), script_(std::move(script)) {
    thread_ = std::thread([this] {
      while (!stop_) {
        ep_.poll(5ms, [this](const comm::Route& from, std::vector<FramePtr>& frames) {
          const Header h = decode_header(frames[0]->bytes());
          Answer a;
          {
            std::lock_guard lock(mu_);
            seen_.push_back(h);
            a = script_(h, std::span(frames).subspan(1));
          }
          Header r = h;
          r.op = Op::Reply;
          r.status = a.status;
          r.flags = a.flags;
          r.num_frames = static_cast<uint32_t>(a.frames.size());
          const HeaderBytes hb = encode_header(r);
          std::vector<OutFrame> out = {OutFrame::copy(hb)};
          for (const Bytes& f : a.frames) out.push_back(OutFrame::copy(f));
          ep_.reply(from, out);
        });
      }
    });
  }
  ~ScriptedServer() {
    stop_ = true;
    thread_.join();
  }
  std::string endpoint() const { return ep_.endpoint(); }
  std::vector<Header> seen() {
    std::lock_guard lock(mu_);
    return seen_;
  }

 private:
  comm::ServerEndpoint ep_;
  Script script_;
  std::mutex mu_;
  std::vector<Header> seen_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

ServerCallsOptions calls_to(const ScriptedServer& s) {
  return {.type = io::Mode::DistSync, .endpoints = {s.endpoint()}, .security = kSec, .timeout = 10s};
}

TEST(ServerCalls, OkRepliesReachTheirRequestsAndErrorsBecomeOneValueError) {
  ScriptedServer server([](const Header& h, std::span<const FramePtr>) {
    if (h.key == 1) return Answer{.frames = {bytes_of("value of 1")}};
    return error(format("no key {}", h.key));
  });
  ServerCalls calls(calls_to(server));
  {
    RequestBatch batch(/*sender=*/3);
    std::string got;
    batch.add(Header{.op = Op::Pull, .key = 1}, {0}, {OutFrame::copy(std::string_view("x"))},
              [&](std::span<const FramePtr> payload) {
                ASSERT_EQ(payload.size(), 1u);
                got = text_of(payload[0]->bytes());
              });
    calls.run(batch, "pull");
    EXPECT_EQ(got, "value of 1");
    EXPECT_EQ(batch.ok(), 1u);
    ASSERT_EQ(server.seen().size(), 1u);
    EXPECT_EQ(server.seen()[0].sender, 3);      // filled in by the batch
    EXPECT_EQ(server.seen()[0].num_frames, 1u);
  }
  RequestBatch batch(3);
  for (int64_t key : {1, 2, 7}) batch.add(Header{.op = Op::Pull, .key = key}, {0}, {});
  try {
    calls.run(batch, "pull");
    FAIL() << "two error replies, no ValueError";
  } catch (const ValueError& e) {
    const std::string what = e.what();
    EXPECT_TRUE(what.starts_with("no key 2") || what.starts_with("no key 7")) << what;
    EXPECT_NE(what.find("(and 1 more errors)"), std::string::npos) << what;
  }
  EXPECT_EQ(batch.ok(), 1u);
  EXPECT_EQ(batch.errors().size(), 2u);
  EXPECT_EQ(calls.stats().requests, 4u);
}

// A server that keeps each dense slice pushed to it and answers pulls with it,
// over the socket, or in the worker's staging region once it has mapped it
// (unless told to refuse).
class SliceKeeper {
 public:
  explicit SliceKeeper(bool refuse_shm) : refuse_shm_(refuse_shm) {}
  Answer operator()(const Header& h, std::span<const FramePtr> payload) {
    if (h.op == Op::ShmAttach) {
      ++attaches;
      if (refuse_shm_) return error("no /dev/shm here");
      region_ = comm::SharedRegion::open(text_of(payload[0]->bytes()));
      return {};
    }
    const size_t n = h.slice_nbytes();
    std::byte* staged = nullptr;
    if (h.flags & flag::kShm) {
      ++staged_requests;
      uint64_t offset = 0;
      std::memcpy(&offset, payload[0]->bytes().data(), 8);
      staged = region_->data() + offset;
    }
    Bytes& slice = slices_[h.row_begin];
    if (h.op == Op::Push || h.op == Op::PushPull) {
      const std::byte* in = staged ? staged : payload[0]->bytes().data();
      slice.assign(in, in + n);
    }
    if (h.op == Op::Push) return {};
    if (staged) {
      std::memcpy(staged, slice.data(), n);
      return {.flags = flag::kShm};
    }
    return {.frames = {slice}};
  }
  int attaches = 0, staged_requests = 0;

 private:
  bool refuse_shm_;
  std::shared_ptr<comm::SharedRegion> region_;
  std::map<int64_t, Bytes> slices_;
};

// Pushes `value` then pulls it back through `dense`, with 4 slices of one server.
std::vector<float> push_then_pull(DenseTransfer& dense, ServerCalls& calls, const std::vector<float>& value) {
  const PlacementOptions placement{.num_servers = 1, .split_bound = 64, .slice_elements = 64};
  const KeyLayout layout = key_layout(5, {256}, core::DType::F32, placement);
  EXPECT_EQ(layout.slices.size(), 4u);
  const std::span<const std::byte> in(reinterpret_cast<const std::byte*>(value.data()), value.size() * 4);
  std::vector<float> back(value.size(), 0.0f);
  const std::span<std::byte> out(reinterpret_cast<std::byte*>(back.data()), back.size() * 4);
  for (Op op : {Op::Push, Op::Pull}) {
    std::vector<DenseSlice> slices;
    for (DenseRequest& r : plan_dense(op, 5, layout, 1, placement)) {
      DenseSlice d{.key = 5};
      if (op == Op::Push) d.in = in.subspan(r.offset, r.nbytes);
      if (op == Op::Pull) d.out = out.subspan(r.offset, r.nbytes);
      d.r = std::move(r);
      slices.push_back(std::move(d));
    }
    RequestBatch batch(0);
    dense.add(batch, slices);
    calls.run(batch, op_name(op).data());
  }
  return back;
}

std::vector<float> ramp(size_t n) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = 0.5f * static_cast<float>(i);
  return v;
}

TEST(DenseTransfer, SlicesTravelOverTheSocketWhenNoServerSharesTheHost) {
  SliceKeeper keeper(false);
  ScriptedServer server(std::ref(keeper));
  ServerCalls calls(calls_to(server));
  DenseTransfer dense(calls, {.worker = 0, .on_my_host = {false}});
  EXPECT_EQ(push_then_pull(dense, calls, ramp(256)), ramp(256));
  EXPECT_EQ(keeper.attaches, 0);
  EXPECT_EQ(keeper.staged_requests, 0);
  EXPECT_EQ(dense.shm_bytes_sent() + dense.shm_bytes_received(), 0u);
}

TEST(DenseTransfer, SlicesGoThroughTheStagingRegionOfAServerOnThisHost) {
  SliceKeeper keeper(false);
  ScriptedServer server(std::ref(keeper));
  ServerCalls calls(calls_to(server));
  DenseTransfer dense(calls, {.worker = 0, .on_my_host = {true}});
  EXPECT_EQ(push_then_pull(dense, calls, ramp(256)), ramp(256));
  EXPECT_EQ(push_then_pull(dense, calls, ramp(256)), ramp(256));
  EXPECT_EQ(keeper.attaches, 1);  // the region was big enough the second time
  EXPECT_EQ(keeper.staged_requests, 16);
  EXPECT_EQ(dense.shm_bytes_sent(), 2 * 1024u);
  EXPECT_EQ(dense.shm_bytes_received(), 2 * 1024u);
}

TEST(DenseTransfer, AServerThatCannotMapTheRegionIsServedOverTheSocket) {
  SliceKeeper keeper(true);
  ScriptedServer server(std::ref(keeper));
  ServerCalls calls(calls_to(server));
  std::vector<std::string> lines;
  DenseTransfer dense(calls, {.worker = 2, .on_my_host = {true},
                              .log = [&](core::LogLevel, std::string_view m) { lines.emplace_back(m); }});
  EXPECT_EQ(push_then_pull(dense, calls, ramp(256)), ramp(256));
  EXPECT_EQ(keeper.attaches, 1);  // asked once, then the socket
  EXPECT_EQ(keeper.staged_requests, 0);
  EXPECT_EQ(dense.shm_bytes_sent(), 0u);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_NE(lines[0].find("server 0 cannot map worker 2's shared memory (no /dev/shm here)"), std::string::npos)
      << lines[0];
}

TEST(SparseTransfer, PushGathersEachServersRowsAndPullScattersThemBack) {
  // Rows of 2 f64; 2 servers; a table of 40 rows cut into slices of 5 rows.
  const PlacementOptions placement{.num_servers = 2, .split_bound = 10, .slice_elements = 10};
  const KeyLayout layout = key_layout(0, {40, 2}, core::DType::F64, placement);
  std::mutex mu;
  std::map<int64_t, std::vector<double>> table;  // row id -> row, on whichever server
  auto script = [&](const Header& h, std::span<const FramePtr> payload) {
    const auto ids = decode_i64_frame(payload[1]->bytes(), "ids");
    std::lock_guard lock(mu);
    if (h.op == Op::Push) {
      const auto* rows = reinterpret_cast<const double*>(payload[2]->bytes().data());
      for (size_t i = 0; i < ids.size(); ++i) table[ids[i]] = {rows[2 * i], rows[2 * i + 1]};
      return Answer{};
    }
    std::vector<double> rows;
    for (int64_t id : ids) rows.insert(rows.end(), table[id].begin(), table[id].end());
    const auto* b = reinterpret_cast<const std::byte*>(rows.data());
    return Answer{.frames = {Bytes(b, b + rows.size() * 8)}};
  };
  ScriptedServer s0(script), s1(script);
  ServerCalls calls({.type = io::Mode::DistAsync, .endpoints = {s0.endpoint(), s1.endpoint()}, .security = kSec,
                     .timeout = 10s});

  const std::vector<int64_t> ids = {1, 7, 12, 33};  // slices 0, 1, 2, 6: both servers
  std::vector<double> rows;
  for (int64_t id : ids) rows.insert(rows.end(), {100.0 + static_cast<double>(id), -static_cast<double>(id)});
  RequestBatch push(0);
  add_sparse_push(push, std::make_shared<const std::vector<SparseRequest>>(
                            plan_sparse(Op::Push, 0, layout, ids, false, placement, 1)),
                  std::as_bytes(std::span(rows)), layout.row_bytes());
  EXPECT_EQ(push.calls().size(), 2u);  // one request per server
  calls.run(push, "row_sparse_push");

  const std::vector<int64_t> asked = {33, 1, 12};  // any order
  std::vector<double> out(6, 0.0);
  RequestBatch pull(0);
  add_sparse_pull(pull, std::make_shared<const std::vector<SparseRequest>>(
                            plan_sparse(Op::Pull, 0, layout, asked, false, placement)),
                  std::as_writable_bytes(std::span(out)), layout.row_bytes(), 0);
  calls.run(pull, "row_sparse_pull");
  EXPECT_EQ(out, (std::vector<double>{133, -33, 101, -1, 112, -12}));
}

TEST(WorkerState, KeysAreSentAsSlicesAndFetchedWhole) {
  const PlacementOptions placement{.num_servers = 1, .split_bound = 8, .slice_elements = 8};
  std::mutex mu;
  std::map<std::pair<int64_t, int64_t>, ShardState> kept;  // (key, row_begin) -> state
  ScriptedServer server([&](const Header& h, std::span<const FramePtr> payload) {
    std::lock_guard lock(mu);
    ShardState& s = kept[{h.key, h.row_begin}];
    if (h.op == Op::SetState) {
      std::vector<std::span<const std::byte>> frames;
      for (const FramePtr& f : payload.subspan(1)) frames.push_back(f->bytes());
      s = decode_shard_state(frames);
      return Answer{};
    }
    EncodedShardState e = encode_shard_state(s);
    Answer a;
    for (auto f : e.frames) a.frames.emplace_back(f.begin(), f.end());
    return a;
  });
  ServerCalls calls(calls_to(server));
  const std::map<int64_t, KeyLayout> layouts = {{4, key_layout(4, {6, 3}, core::DType::F32, placement)}};
  const LayoutOf layout_of = [&](int64_t key) -> const KeyLayout& { return layouts.at(key); };
  ASSERT_EQ(layouts.at(4).slices.size(), 3u);  // 2 rows of 3 each

  detail::KeyState st{.shape = {6, 3}, .dtype = core::DType::F32, .updates = 9};
  for (int part = 0; part < 3; ++part) {  // the value and two slots
    std::vector<float> v(18);
    for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(part * 100 + static_cast<int>(i));
    const auto b = std::as_bytes(std::span(v));
    st.parts.emplace_back(b.begin(), b.end());
  }
  const WorkerStateOptions o{.rank = 0, .num_workers = 3, .placement = placement};
  send_key_states(calls, {{4, st}}, layout_of, "ckpt.safetensors", o);
  ASSERT_EQ(kept.size(), 3u);
  for (const auto& [where, s] : kept) {
    EXPECT_EQ(s.updates, 9);
    EXPECT_EQ(s.round, 0);
    EXPECT_EQ(s.versions, std::vector<int64_t>(3, 0));  // every worker counts from 0 again
    EXPECT_EQ(s.weights.size(), 24u);
  }

  const std::vector<int64_t> keys = {4};
  const auto back = fetch_key_states(calls, keys, layout_of, o);
  ASSERT_EQ(back.size(), 1u);
  EXPECT_EQ(back.at(4).parts, st.parts);
  EXPECT_EQ(back.at(4).updates, 9);
  EXPECT_EQ(back.at(4).shape, st.shape);

  detail::KeyState wrong = st;
  wrong.shape = {9, 2};
  try {
    send_key_states(calls, {{4, wrong}}, layout_of, "ckpt.safetensors", o);
    FAIL() << "a state of another shape was sent";
  } catch (const ShapeError& e) {
    EXPECT_NE(std::string(e.what()).find("ckpt.safetensors: key 4 is "), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace loom::ps
