#include "loom/core/stop_signals.h"

#include <time.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <csignal>
#include <cstring>

#include "loom/core/error.h"

namespace loom::core {
namespace {

struct Named {
  const char* name;
  int number;
};
constexpr std::array<Named, 6> kSignals{{{"TERM", SIGTERM}, {"INT", SIGINT}, {"USR1", SIGUSR1},
                                         {"USR2", SIGUSR2}, {"HUP", SIGHUP}, {"QUIT", SIGQUIT}}};

// What the handler reads and writes: lock-free atomics only.
std::atomic<int> g_requests{0};      // signals seen since the request was last cleared
std::atomic<int> g_signal{0};        // the first one's number
std::atomic<unsigned> g_grace_s{0};  // alarm() after the first signal; 0: none
std::atomic<bool> g_installed{false};
std::atomic<int64_t> g_first_ns{0};  // when the first signal came (CLOCK_MONOTONIC)
constexpr int64_t kDuplicateWindowNs = 1000000000;  // a second signal closer than this is the same request

// Temporary files to remove on an abrupt exit; a slot is free, being
// written, or holds a path.
constexpr int kSlots = 64;
constexpr size_t kPathMax = 4096;
enum SlotState : int { kFree = 0, kFilling = 1, kHeld = 2 };
std::array<std::atomic<int>, kSlots> g_slot_state{};
std::array<std::array<char, kPathMax>, kSlots> g_slot_path{};

static_assert(std::atomic<int>::is_always_lock_free && std::atomic<unsigned>::is_always_lock_free &&
              std::atomic<int64_t>::is_always_lock_free);

[[noreturn]] void end_now() {
  for (int i = 0; i < kSlots; ++i) {
    if (g_slot_state[i].load() == kHeld) ::unlink(g_slot_path[i].data());
  }
  const int first = g_signal.load();
  ::_exit(128 + (first > 0 ? first : SIGTERM));
}

int64_t monotonic_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);  // async-signal-safe
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

extern "C" void on_stop_signal(int signal) {
  const int64_t now = monotonic_ns();
  if (g_requests.fetch_add(1) > 0) {
    // The second, at once; unless it is the first one delivered twice (a
    // launcher forwarding it while the scheduler signals every process).
    if (signal != g_signal.load() || now - g_first_ns.load() >= kDuplicateWindowNs) end_now();
    return;
  }
  g_first_ns.store(now);
  g_signal.store(signal);
  if (const unsigned grace = g_grace_s.load(); grace > 0) ::alarm(grace);
}

extern "C" void on_grace_alarm(int) { end_now(); }

struct Saved {
  int signal;
  struct sigaction action;
};
std::vector<Saved> g_saved;  // touched only by StopSignals' constructor and destructor
struct sigaction g_saved_alarm;

void install(int signal, void (*handler)(int), struct sigaction* old) {
  struct sigaction sa{};
  sa.sa_handler = handler;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;  // a blocking call in progress goes on; the loop checks between steps
  LOOM_CHECK_T(InternalError, ::sigaction(signal, &sa, old) == 0, "sigaction({}): {}", signal, std::strerror(errno));
}

}  // namespace

const std::vector<std::string>& stop_signal_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> v;
    for (const Named& s : kSignals) v.emplace_back(s.name);
    return v;
  }();
  return names;
}

int signal_number(std::string_view name) {
  for (const Named& s : kSignals) {
    if (name == s.name) return s.number;
  }
  std::string known;
  for (const Named& s : kSignals) known += (known.empty() ? "" : ", ") + std::string(s.name);
  throw ValueError(format("unknown stop signal '{}' (one of {}, without SIG)", name, known));
}

StopSignals::StopSignals(const std::vector<std::string>& signal_names, std::chrono::milliseconds grace) {
  for (const std::string& name : signal_names) signals_.push_back(signal_number(name));
  LOOM_CHECK_T(ConfigError, !g_installed.exchange(true), "StopSignals: another instance is installed");
  const auto ms = grace.count();
  g_grace_s.store(ms <= 0 ? 0u : static_cast<unsigned>((ms + 999) / 1000));
  install(SIGALRM, on_grace_alarm, &g_saved_alarm);
  for (int s : signals_) {
    g_saved.push_back({s, {}});
    install(s, on_stop_signal, &g_saved.back().action);
  }
}

StopSignals::~StopSignals() {
  for (auto it = g_saved.rbegin(); it != g_saved.rend(); ++it) ::sigaction(it->signal, &it->action, nullptr);
  g_saved.clear();
  ::alarm(0);
  ::sigaction(SIGALRM, &g_saved_alarm, nullptr);
  g_grace_s.store(0);
  g_installed.store(false);
}

bool stop_requested() { return g_requests.load() > 0; }

int stop_signal() { return g_signal.load(); }

void request_stop(int signal) {
  if (g_requests.fetch_add(1) == 0) g_signal.store(signal);
}

void clear_stop_request() {
  g_signal.store(0);
  g_requests.store(0);
}

AbortCleanup::AbortCleanup(const std::filesystem::path& path) {
  const std::string& p = path.native();
  LOOM_CHECK_T(InternalError, p.size() < kPathMax, "AbortCleanup: path too long ({} bytes)", p.size());
  for (int i = 0; i < kSlots; ++i) {
    int expected = kFree;
    if (g_slot_state[i].compare_exchange_strong(expected, kFilling)) {
      std::memcpy(g_slot_path[i].data(), p.c_str(), p.size() + 1);
      g_slot_state[i].store(kHeld);
      slot_ = i;
      return;
    }
  }
  throw InternalError(format("AbortCleanup: more than {} temporary files at once", kSlots));
}

AbortCleanup::~AbortCleanup() {
  if (slot_ >= 0) g_slot_state[slot_].store(kFree);
}

}  // namespace loom::core
