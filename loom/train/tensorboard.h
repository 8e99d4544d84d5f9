// Writes scalars to a TensorBoard event file, without TensorFlow or protobuf.
//
//   // given: int64_t step, int64_t epoch, const train::ClassificationResult& result
//   train::TensorBoardWriter tb("runs/mnist");           // creates the folder if needed
//   tb.add_scalar("train/loss", 0.42, step);
//   tb.add_scalars(result.as_map("test/"), epoch);       // several tags, one event
//   tb.flush();                                           // also every 10 records / 10 s
//   // `tensorboard --logdir runs` shows them; the destructor closes the file.
//
// The file, `<log_dir>/events.out.tfevents.<unix seconds>.<hostname>` (".1",
// ".2", ... appended if that name exists, then options.filename_suffix), is a
// TFRecord stream: each record is
//   uint64 length (LE) | uint32 masked CRC32C(length) | data | uint32 masked CRC32C(data)
// and each data is a serialised tensorflow.Event protobuf, encoded here by
// hand. The first event carries file_version "brain.Event:2"; each later one
// carries wall_time, step and a Summary of {tag, simple_value (float32)}.
// tests/train/read_tfevents.py decodes the format independently.
//
// Records are buffered and written when `flush_every_records` are pending,
// or on the first add after `flush_every` has passed (there is no background
// thread), and on flush() / close(). Not thread-safe: one writer per thread.
// Every I/O failure throws IoError naming the file.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>

namespace loom::train {

struct TensorBoardOptions {
  int64_t flush_every_records = 10;
  std::chrono::milliseconds flush_every{10'000};
  std::string filename_suffix{};  // e.g. ".worker3"
};

class TensorBoardWriter {
 public:
  explicit TensorBoardWriter(const std::filesystem::path& log_dir, TensorBoardOptions options = {});
  ~TensorBoardWriter();  // close(), swallowing errors: call close() to see them
  TensorBoardWriter(const TensorBoardWriter&) = delete;
  TensorBoardWriter& operator=(const TensorBoardWriter&) = delete;

  // `value` is stored as float32 (TensorBoard's simple_value); wall time is now.
  void add_scalar(std::string_view tag, double value, int64_t step);
  void add_scalar(std::string_view tag, double value, int64_t step, double wall_time_s);
  // One event holding every (tag, value) pair.
  void add_scalars(const std::map<std::string, double>& values, int64_t step);

  void flush();  // writes pending records to the OS
  void close();  // flush() and close; later adds throw ValueError; idempotent

  const std::filesystem::path& path() const { return path_; }
  int64_t num_records() const { return num_records_; }  // including the file_version event

 private:
  void begin_event(double wall_time_s, int64_t step);
  void add_value(std::string_view tag, double value);
  void end_event();
  void append_record(std::string_view data);

  TensorBoardOptions options_;
  std::filesystem::path path_;
  int fd_ = -1;
  std::string pending_;                  // framed records not yet written
  std::string event_, summary_, value_;  // encoding buffers, reused
  int64_t num_records_ = 0;
  int64_t pending_records_ = 0;
  std::chrono::steady_clock::time_point last_flush_;
};

// Frames `data` as one TFRecord (length, masked CRCs) and appends it to `out`.
void append_tfrecord(std::string& out, std::string_view data);

}  // namespace loom::train
