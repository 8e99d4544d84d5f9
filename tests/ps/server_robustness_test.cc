// A KVServer fed malformed messages from a raw socket (bad header, wrong
// frame counts and sizes, impossible shapes, unknown ops) answers each with an
// error and keeps serving a well-behaved worker.
#include <gtest/gtest.h>

#include <condition_variable>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "loom/ps/protocol.h"
#include "loom/ps/server.h"
#include "loom/comm/wire/endpoint.h"
#include "loom/comm/transport/shared_region.h"

namespace loom::ps {
namespace {

using MsgPtr = comm::FramePtr;

class RawClient {
 public:
  explicit RawClient(const std::string& endpoint)
      : ctx_({.insecure = true}, false), sock_(comm::Socket::dealer(ctx_, endpoint)) {}
  // Sends raw frames; returns the reply frames (header first), or empty after 5 s.
  std::vector<MsgPtr> ask(const std::vector<std::string>& frames) {
    std::vector<comm::OutFrame> out;
    for (const auto& f : frames) out.push_back(comm::OutFrame::copy(f));
    sock_.send(out);
    std::vector<MsgPtr> reply;
    for (int i = 0; i < 5000 && !sock_.recv(reply); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return reply;
  }
  std::vector<MsgPtr> ask(const Header& h, const std::vector<std::string>& payload) {
    Header hh = h;
    hh.num_frames = static_cast<uint32_t>(payload.size());
    const HeaderBytes b = encode_header(hh);
    std::vector<std::string> frames = {std::string(reinterpret_cast<const char*>(b.data()), b.size())};
    frames.insert(frames.end(), payload.begin(), payload.end());
    return ask(frames);
  }

 private:
  comm::ZmqContext ctx_;
  comm::Socket sock_;
};

std::string bytes_of(const std::vector<int64_t>& v) { return {reinterpret_cast<const char*>(v.data()), v.size() * 8}; }
std::string bytes_of(const std::vector<float>& v) { return {reinterpret_cast<const char*>(v.data()), v.size() * 4}; }

Status status_of(const std::vector<MsgPtr>& reply) {
  EXPECT_FALSE(reply.empty()) << "no reply: the server stopped answering";
  if (reply.empty()) return Status::Error;
  return decode_header(reply[0]->bytes()).status;
}

TEST(KVServer, MalformedRequestsGetErrorsAndTheServerGoesOn) {
  KVServer server({.rank = 0, .num_workers = 1, .sync = false, .placement = {.num_servers = 1},
                   .security = {.insecure = true}});
  server.start();
  RawClient c(server.endpoint());
  const Header init{.op = Op::Init, .flags = flag::kHasData, .key = 0, .num_rows = 4, .row_numel = 1, .total_rows = 4};
  ASSERT_EQ(status_of(c.ask(init, {bytes_of(std::vector<int64_t>{4}), bytes_of(std::vector<float>{1, 2, 3, 4})})),
            Status::Ok);

  const std::vector<std::vector<std::string>> garbage = {
      {"hello"},                                  // not a header
      {std::string(kHeaderBytes, '\0')},          // zeros: bad magic
      {std::string(kHeaderBytes + 1, 'L')},       // wrong length
  };
  for (const auto& g : garbage) EXPECT_EQ(status_of(c.ask(g)), Status::Error);

  Header push{.op = Op::Push, .sender = 0, .key = 0, .version = 1, .num_rows = 4, .row_numel = 1, .total_rows = 4};
  EXPECT_EQ(status_of(c.ask(push, {})), Status::Error);                                     // no data frame
  EXPECT_EQ(status_of(c.ask(push, {"abc"})), Status::Error);                                // wrong size
  EXPECT_EQ(status_of(c.ask(push, {bytes_of(std::vector<float>{1, 2, 3, 4}), "x"})), Status::Error);  // extra frame
  Header wrong_dtype = push;
  wrong_dtype.dtype = core::DType::F64;
  EXPECT_EQ(status_of(c.ask(wrong_dtype, {std::string(32, '\0')})), Status::Error);
  Header stranger = push;
  stranger.sender = 7;  // not a worker of this job
  EXPECT_EQ(status_of(c.ask(stranger, {bytes_of(std::vector<float>{1, 2, 3, 4})})), Status::Error);
  // Row-sparse: [first rows of the slices] [row ids] [rows]; the key has one slice, at row 0.
  Header sparse = push;
  sparse.flags = flag::kSparse;
  const std::string slice0 = bytes_of(std::vector<int64_t>{0});
  EXPECT_EQ(status_of(c.ask(sparse, {slice0, bytes_of(std::vector<int64_t>{9}), bytes_of(std::vector<float>{1})})),
            Status::Error);  // row 9 of 4
  EXPECT_EQ(status_of(c.ask(sparse, {slice0, bytes_of(std::vector<int64_t>{2, 1}), bytes_of(std::vector<float>{1, 1})})),
            Status::Error);  // not ascending
  EXPECT_EQ(status_of(c.ask(sparse, {bytes_of(std::vector<int64_t>{2}), bytes_of(std::vector<int64_t>{2}),
                                     bytes_of(std::vector<float>{1})})),
            Status::Error);  // no slice starts at row 2
  EXPECT_EQ(status_of(c.ask(sparse, {slice0, bytes_of(std::vector<int64_t>{2})})), Status::Error);  // rows missing
  EXPECT_EQ(status_of(c.ask(sparse, {slice0, bytes_of(std::vector<int64_t>{2}), bytes_of(std::vector<float>{1, 1})})),
            Status::Error);  // 2 rows of data for 1 id
  EXPECT_EQ(status_of(c.ask(sparse, {bytes_of(std::vector<int64_t>{0, 0}), bytes_of(std::vector<int64_t>{2}),
                                     bytes_of(std::vector<float>{1})})),
            Status::Error);  // the same slice twice
  EXPECT_EQ(status_of(c.ask(sparse, {bytes_of(std::vector<int64_t>{-2}), bytes_of(std::vector<int64_t>{2}),
                                     bytes_of(std::vector<float>{1})})),
            Status::Error);  // "every slice of server 1": the job has one server
  Header sparse_init = init;
  sparse_init.flags = flag::kSparse;
  EXPECT_EQ(status_of(c.ask(sparse_init, {slice0})), Status::Error);
  Header huge = init;
  huge.key = 1;
  huge.total_rows = int64_t{1} << 40;
  huge.num_rows = int64_t{1} << 40;
  huge.row_numel = int64_t{1} << 30;  // 4 PB: refused before allocating
  EXPECT_EQ(status_of(c.ask(huge, {bytes_of(std::vector<int64_t>{int64_t{1} << 40, int64_t{1} << 30}), ""})),
            Status::Error);
  Header bad_dims = init;
  bad_dims.key = 2;
  EXPECT_EQ(status_of(c.ask(bad_dims, {bytes_of(std::vector<int64_t>{5}), bytes_of(std::vector<float>{1, 2, 3, 4})})),
            Status::Error);  // dims disagree with the header
  Header reply_op = push;
  reply_op.op = Op::Reply;
  EXPECT_EQ(status_of(c.ask(reply_op, {})), Status::Error);

  // Still serving: a good push and pull.
  EXPECT_EQ(status_of(c.ask(push, {bytes_of(std::vector<float>{5, 6, 7, 8})})), Status::Ok);
  Header pull{.op = Op::Pull, .sender = 0, .key = 0, .num_rows = 4, .row_numel = 1, .total_rows = 4};
  auto r = c.ask(pull, {});
  ASSERT_EQ(status_of(r), Status::Ok);
  ASSERT_EQ(r.size(), 2u);
  std::vector<float> got(4);
  std::memcpy(got.data(), r[1]->bytes().data(), 16);
  EXPECT_EQ(got, (std::vector<float>{5, 6, 7, 8}));  // no optimizer: the value is the push
  EXPECT_GE(server.stats().errors, 17u);
  server.stop();
}

// The one-host data path (Flag::Shm): a region that cannot be opened, a
// request before the region is mapped, an offset outside it or not aligned,
// and a sparse request with the flag are refused; a good one reads its push
// from the region and writes the pull there.
TEST(KVServer, SharedMemoryRequestsAreCheckedAgainstTheRegion) {
  KVServer server({.rank = 0, .num_workers = 1, .sync = false, .placement = {.num_servers = 1},
                   .security = {.insecure = true}});
  server.start();
  RawClient c(server.endpoint());
  const Header init{.op = Op::Init, .flags = flag::kHasData, .key = 0, .num_rows = 4, .row_numel = 1, .total_rows = 4};
  ASSERT_EQ(status_of(c.ask(init, {bytes_of(std::vector<int64_t>{4}), bytes_of(std::vector<float>{1, 2, 3, 4})})),
            Status::Ok);
  auto offset = [](uint64_t o) { return std::string(reinterpret_cast<const char*>(&o), 8); };
  Header push{.op = Op::Push, .flags = flag::kShm, .sender = 0, .key = 0, .version = 1, .num_rows = 4, .row_numel = 1,
              .total_rows = 4};
  EXPECT_EQ(status_of(c.ask(push, {offset(0)})), Status::Error);  // no region mapped yet
  const Header attach{.op = Op::ShmAttach, .sender = 0};
  EXPECT_EQ(status_of(c.ask(attach, {"/../etc/passwd"})), Status::Error);
  EXPECT_EQ(status_of(c.ask(attach, {"/loom-no-such-region-0000"})), Status::Error);
  Header stranger = attach;
  stranger.sender = 3;
  auto other = comm::SharedRegion::create("loom-test-ps", 4096);
  EXPECT_EQ(status_of(c.ask(attach, {other->name()})), Status::Error);  // a region, but not a worker's staging one
  auto region = comm::SharedRegion::create("loom-ps-w0-test", 4096);
  EXPECT_EQ(status_of(c.ask(stranger, {region->name()})), Status::Error);  // not a worker of this job
  ASSERT_EQ(status_of(c.ask(attach, {region->name()})), Status::Ok);
  region->unlink();

  EXPECT_EQ(status_of(c.ask(push, {offset(4096 - 8)})), Status::Error);  // 16 bytes from 4088: outside
  EXPECT_EQ(status_of(c.ask(push, {offset(~uint64_t{0} - 3)})), Status::Error);
  EXPECT_EQ(status_of(c.ask(push, {offset(2)})), Status::Error);       // not aligned for f32
  EXPECT_EQ(status_of(c.ask(push, {"abc"})), Status::Error);           // not an offset
  EXPECT_EQ(status_of(c.ask(push, {offset(0), offset(0)})), Status::Error);
  Header sparse = push;
  sparse.flags = flag::kShm | flag::kSparse;
  EXPECT_EQ(status_of(c.ask(sparse, {offset(0)})), Status::Error);

  const std::vector<float> pushed = {5, 6, 7, 8};
  std::memcpy(region->data() + 64, pushed.data(), 16);
  EXPECT_EQ(status_of(c.ask(push, {offset(64)})), Status::Ok);
  Header pull{.op = Op::Pull, .flags = flag::kShm, .sender = 0, .key = 0, .num_rows = 4, .row_numel = 1,
              .total_rows = 4};
  const auto r = c.ask(pull, {offset(1024)});
  ASSERT_EQ(status_of(r), Status::Ok);
  EXPECT_EQ(r.size(), 1u);  // the value is in the region, not in a frame
  EXPECT_EQ(decode_header(r[0]->bytes()).flags, flag::kShm);
  std::vector<float> got(4);
  std::memcpy(got.data(), region->data() + 1024, 16);
  EXPECT_EQ(got, pushed);  // no optimizer: the value is the push
  server.stop();
}

// What the server's own thread has to say goes to the sink in its options,
// not to stderr: here, taking over from a lost server.
TEST(KVServer, ItsThreadLogsToTheSinkItWasGiven) {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::string> lines;
  core::LogSink sink = [&](core::LogLevel level, std::string_view m) {
    std::lock_guard lock(mu);
    lines.emplace_back(m);
    EXPECT_EQ(level, core::LogLevel::Warning);
    cv.notify_all();
  };
  ServerOptions options{.rank = 0, .num_workers = 1, .sync = false, .placement = {.num_servers = 2}};
  options.security.insecure = true;
  options.log = sink;
  KVServer server(options);
  server.start();
  server.server_lost(1);
  std::unique_lock lock(mu);
  ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(10), [&] { return !lines.empty(); }))
      << "the server's thread logged nothing within 10 s";
  EXPECT_EQ(lines[0], "server 0: server 1 lost; taking over its slices where this server is next");
  lock.unlock();
  server.stop();
}

}  // namespace
}  // namespace loom::ps
