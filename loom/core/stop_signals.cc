#include "loom/core/stop_signals.h"

#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <thread>

#include "loom/core/error.h"

namespace loom::core {
namespace {

struct Named {
  const char* name;
  int number;
};
constexpr std::array<Named, 6> kSignals{{{"TERM", SIGTERM}, {"INT", SIGINT}, {"USR1", SIGUSR1},
                                         {"USR2", SIGUSR2}, {"HUP", SIGHUP}, {"QUIT", SIGQUIT}}};

// The request: lock-free atomics only (a signal handler writes them too).
std::atomic<int> g_requests{0};      // signals seen since the request was last cleared
std::atomic<int> g_signal{0};        // the first one's number
std::atomic<int64_t> g_first_ns{0};  // when the first signal came (CLOCK_MONOTONIC)
std::atomic<bool> g_installed{false};
constexpr int64_t kDuplicateWindowNs = 1000000000;  // a second signal closer than this is the same request

// Temporary files to remove on an abrupt exit; a slot is free, being
// written, or holds a path.
constexpr int kSlots = 64;
constexpr size_t kPathMax = 4096;
enum SlotState : int { kFree = 0, kFilling = 1, kHeld = 2 };
std::array<std::atomic<int>, kSlots> g_slot_state{};
std::array<std::array<char, kPathMax>, kSlots> g_slot_path{};

static_assert(std::atomic<int>::is_always_lock_free && std::atomic<int64_t>::is_always_lock_free);

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

// One stop signal arrived (on the waiting thread, or in the handler of a
// thread that does not block it): async-signal-safe.
void receive(int signal) {
  const int64_t now = monotonic_ns();
  if (g_requests.fetch_add(1) > 0) {
    // The second, at once; unless it is the first one delivered twice (a
    // launcher forwarding it while the scheduler signals every process).
    if (signal != g_signal.load() || now - g_first_ns.load() >= kDuplicateWindowNs) end_now();
    return;
  }
  g_first_ns.store(now);
  g_signal.store(signal);
}

extern "C" void on_stop_signal(int signal) { receive(signal); }

struct Saved {
  int signal;
  struct sigaction action;
};

}  // namespace

// The signals are blocked in the thread that installs them, and so in every
// thread it creates afterwards, and taken by a thread of ours that waits for
// them (sigtimedwait): no system call elsewhere is interrupted (EINTR) by a
// stop signal, and the grace period is that thread's timeout. Threads that
// existed before, with the signals unblocked, get a handler that does the
// same (async-signal-safe) work.
struct StopSignals::Waiter {
  sigset_t set{};
  sigset_t previous_mask{};
  std::vector<Saved> saved;
  int64_t grace_ns = 0;
  std::atomic<bool> stopping{false};
  std::thread thread;

  void loop() {
    constexpr int64_t kTickNs = 50000000;  // how soon the destructor is noticed
    while (!stopping.load()) {
      int64_t wait_ns = kTickNs;
      if (grace_ns > 0 && g_requests.load() > 0) {
        const int64_t left = g_first_ns.load() + grace_ns - monotonic_ns();
        if (left <= 0) end_now();
        wait_ns = std::min(wait_ns, left);
      }
      const timespec ts{static_cast<time_t>(wait_ns / 1000000000), static_cast<long>(wait_ns % 1000000000)};
      siginfo_t info{};
      const int s = ::sigtimedwait(&set, &info, &ts);
      if (s > 0) receive(s);
    }
  }
};

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

StopSignals::StopSignals(const std::vector<std::string>& signal_names, std::chrono::milliseconds grace)
    : waiter_(std::make_unique<Waiter>()) {
  std::vector<int> numbers;
  for (const std::string& name : signal_names) numbers.push_back(signal_number(name));
  LOOM_CHECK_T(ConfigError, !g_installed.exchange(true), "StopSignals: another instance is installed");
  Waiter& w = *waiter_;
  w.grace_ns = std::max<int64_t>(0, grace.count()) * 1000000;
  sigemptyset(&w.set);
  for (int s : numbers) {
    sigaddset(&w.set, s);
    struct sigaction sa{};
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    Saved& saved = w.saved.emplace_back(Saved{s, {}});
    LOOM_CHECK_T(InternalError, ::sigaction(s, &sa, &saved.action) == 0, "sigaction({}): {}", s, std::strerror(errno));
  }
  ::pthread_sigmask(SIG_BLOCK, &w.set, &w.previous_mask);
  w.thread = std::thread([&w] { w.loop(); });
}

StopSignals::~StopSignals() {
  Waiter& w = *waiter_;
  w.stopping.store(true);
  w.thread.join();
  ::pthread_sigmask(SIG_SETMASK, &w.previous_mask, nullptr);
  for (auto it = w.saved.rbegin(); it != w.saved.rend(); ++it) ::sigaction(it->signal, &it->action, nullptr);
  g_installed.store(false);
}

bool stop_requested() { return g_requests.load() > 0; }

int stop_signal() { return g_signal.load(); }

void request_stop(int signal) {
  if (g_requests.fetch_add(1) == 0) {
    g_first_ns.store(monotonic_ns());
    g_signal.store(signal);
  }
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
