// The contract every Transport keeps (transport.h), as reusable checks.
//
//   contract::Factory make = [](int n) { ...; return transports; };  // index = rank, each its own object
//   contract::check_ordering(make, 4);
//   contract::check_ring_exchange(make, 3);   // sizes 0, 1, 7, 1000, 1M+3
//
// Each check makes a fresh world of `n` ranks, runs one thread per rank and
// reports problems through GoogleTest (naming the rank). Every blocking call
// has a deadline, so a broken transport fails a check instead of hanging it.
#pragma once

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "loom/comm/transport/transport.h"

namespace loom::comm::contract {

using namespace std::chrono_literals;

using World = std::vector<std::shared_ptr<Transport>>;
// Makes `n` connected transports; element r has rank r.
using Factory = std::function<World(int n)>;

inline constexpr auto kPatience = 30s;  // deadline for operations that must succeed

inline Deadline patient() { return Deadline::in(kPatience); }

// Bytes that name who sent them to whom, with which tag and sequence number.
inline std::vector<std::byte> pattern(size_t nbytes, int from, int to, uint64_t tag, uint64_t seq = 0) {
  std::vector<std::byte> v(nbytes);
  uint64_t x = (static_cast<uint64_t>(from) << 48) ^ (static_cast<uint64_t>(to) << 32) ^ (tag << 16) ^ seq ^ nbytes;
  for (size_t i = 0; i < nbytes; ++i) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    v[i] = static_cast<std::byte>(x >> 56);
  }
  return v;
}

// Runs fn(transport) for every rank on its own thread; an exception is a
// failure that names the rank.
inline void run_ranks(const World& world, const std::function<void(Transport&)>& fn) {
  std::vector<std::thread> threads;
  for (const auto& t : world) {
    threads.emplace_back([&fn, t] {
      try {
        fn(*t);
      } catch (const std::exception& e) {
        ADD_FAILURE() << "rank " << t->rank() << " (" << t->kind() << "): " << e.what();
      }
    });
  }
  for (auto& th : threads) th.join();
}

inline void expect_world(const World& world, int n) {
  ASSERT_EQ(static_cast<int>(world.size()), n);
  for (int r = 0; r < n; ++r) {
    ASSERT_EQ(world[static_cast<size_t>(r)]->rank(), r);
    ASSERT_EQ(world[static_cast<size_t>(r)]->size(), n);
  }
}

// Messages of one (pair, tag) arrive in send order.
inline void check_ordering(const Factory& make, int n) {
  World world = make(n);
  expect_world(world, n);
  constexpr int kMessages = 100;
  run_ranks(world, [&](Transport& t) {
    const int r = t.rank();
    for (int peer = 0; peer < n; ++peer) {
      if (peer == r) continue;
      for (int i = 0; i < kMessages; ++i)
        t.send(peer, 5, pattern(static_cast<size_t>(i % 17), r, peer, 5, i), patient());
    }
    for (int peer = 0; peer < n; ++peer) {
      if (peer == r) continue;
      for (int i = 0; i < kMessages; ++i) {
        std::vector<std::byte> got(static_cast<size_t>(i % 17));
        t.recv(peer, 5, got, patient());
        EXPECT_EQ(got, pattern(got.size(), peer, r, 5, i)) << "rank " << r << " message " << i << " from " << peer;
      }
    }
  });
}

// A receiver waiting for one tag keeps earlier messages with other tags.
inline void check_out_of_order_tags(const Factory& make, int n) {
  World world = make(n);
  expect_world(world, n);
  const std::vector<uint64_t> tags = {1, 2, 3, uint64_t{1} << 40, ~uint64_t{0}};
  run_ranks(world, [&](Transport& t) {
    const int r = t.rank();
    const int right = (r + 1) % n;
    const int left = (r + n - 1) % n;
    for (uint64_t tag : tags) t.send(right, tag, pattern(33, r, right, tag), patient());
    for (auto it = tags.rbegin(); it != tags.rend(); ++it) {  // the reverse of the send order
      std::vector<std::byte> got(33);
      t.recv(left, *it, got, patient());
      EXPECT_EQ(got, pattern(33, left, r, *it)) << "rank " << r << " tag " << *it;
    }
  });
}

// Everyone sends to the right, then receives from the left: send() never
// waits for the matching recv(), so this cannot deadlock. Several rounds, one tag.
inline void check_ring_exchange(const Factory& make, int n,
                                std::vector<size_t> sizes = {0, 1, 7, 1000, (size_t{1} << 20) + 3}) {
  World world = make(n);
  expect_world(world, n);
  run_ranks(world, [&](Transport& t) {
    const int r = t.rank();
    const int right = (r + 1) % n;
    const int left = (r + n - 1) % n;
    for (size_t round = 0; round < sizes.size(); ++round) {
      const size_t nbytes = sizes[round];
      t.send(right, 9, pattern(nbytes, r, right, 9, round), patient());
      std::vector<std::byte> got(nbytes);
      t.recv(left, 9, got, patient());
      EXPECT_TRUE(got == pattern(nbytes, left, r, 9, round)) << "rank " << r << ", " << nbytes << " bytes";
    }
  });
}

// Everyone sends to everyone (itself included) before receiving anything.
inline void check_all_to_all(const Factory& make, int n, size_t nbytes = 4099) {
  World world = make(n);
  expect_world(world, n);
  run_ranks(world, [&](Transport& t) {
    const int r = t.rank();
    for (int peer = 0; peer < n; ++peer) t.send(peer, 11, pattern(nbytes + peer, r, peer, 11), patient());
    for (int peer = n - 1; peer >= 0; --peer) {
      std::vector<std::byte> got(nbytes + r);
      t.recv(peer, 11, got, patient());
      EXPECT_TRUE(got == pattern(nbytes + r, peer, r, 11)) << "rank " << r << " from " << peer;
    }
  });
}

// recv() with nothing coming throws TimeoutError at the deadline (not early,
// not much later), then works normally.
inline void check_recv_timeout(const Factory& make, int n, std::chrono::milliseconds slack = 750ms) {
  World world = make(n);
  expect_world(world, n);
  Transport& t = *world[0];
  std::vector<std::byte> got(8);
  constexpr auto kWait = 200ms;
  const auto start = Clock::now();
  EXPECT_THROW(t.recv(1, 77, got, Deadline::in(kWait)), TimeoutError);
  const auto waited = Clock::now() - start;
  EXPECT_GE(waited, kWait);
  EXPECT_LE(waited, kWait + slack);
  // An expired deadline with nothing queued: TimeoutError at once.
  EXPECT_THROW(t.recv(1, 77, got, Deadline{Clock::now()}), TimeoutError);
  // The transport still works afterwards.
  world[1]->send(0, 77, pattern(8, 1, 0, 77), patient());
  t.recv(1, 77, got, patient());
  EXPECT_EQ(got, pattern(8, 1, 0, 77));
}

// fail_peer wakes a waiting recv() with PeerLostError whose message is the reason;
// later recv()s from that peer fail the same way; other peers are unaffected.
inline void check_fail_peer(const Factory& make, int n) {
  World world = make(n);
  expect_world(world, n);
  Transport& t = *world[0];
  std::atomic<bool> threw{false};
  std::string what;
  std::thread waiter([&] {
    std::vector<std::byte> got(4);
    try {
      t.recv(1, 3, got, Deadline::in(20s));
    } catch (const PeerLostError& e) {
      what = e.what();
      threw = true;
    } catch (const std::exception& e) {
      what = e.what();  // the wrong error: reported below
    }
  });
  std::this_thread::sleep_for(50ms);
  const auto start = Clock::now();
  t.fail_peer(1, "heartbeat missed");
  waiter.join();
  EXPECT_TRUE(threw) << "recv did not throw PeerLostError: " << what;
  EXPECT_LT(Clock::now() - start, 5s);
  EXPECT_EQ(what, "heartbeat missed");  // the reason, verbatim
  std::vector<std::byte> got(4);
  EXPECT_THROW(t.recv(1, 4, got, Deadline::in(5s)), PeerLostError);
  if (n > 2) {
    world[2]->send(0, 3, pattern(4, 2, 0, 3), patient());
    t.recv(2, 3, got, patient());
    EXPECT_EQ(got, pattern(4, 2, 0, 3));
  }
}

// recv() into a buffer of the wrong size is a CommError (not a timeout).
inline void check_wrong_size(const Factory& make, int n) {
  World world = make(n);
  expect_world(world, n);
  world[1]->send(0, 6, pattern(10, 1, 0, 6), patient());
  world[1]->send(0, 6, pattern(10, 1, 0, 6, 1), patient());
  std::vector<std::byte> small(9), right(10);
  try {
    world[0]->recv(1, 6, small, patient());
    ADD_FAILURE() << "recv into 9 bytes of a 10-byte message did not throw";
  } catch (const TimeoutError& e) {
    ADD_FAILURE() << "wrong size gave TimeoutError: " << e.what();
  } catch (const PeerLostError& e) {
    ADD_FAILURE() << "wrong size gave PeerLostError: " << e.what();
  } catch (const CommError& e) {
    EXPECT_NE(std::string(e.what()).find("10"), std::string::npos) << e.what();
  }
  world[0]->recv(1, 6, right, patient());  // the next message is still there
  EXPECT_EQ(right, pattern(10, 1, 0, 6, 1));
}

// A peer outside the world is a CommError for send and recv.
inline void check_bad_peer(const Factory& make, int n) {
  World world = make(n);
  expect_world(world, n);
  std::vector<std::byte> buf(1);
  EXPECT_THROW(world[0]->send(n, 1, buf, patient()), CommError);
  EXPECT_THROW(world[0]->send(-1, 1, buf, patient()), CommError);
  EXPECT_THROW(world[0]->recv(n, 1, buf, patient()), CommError);
}

// Several threads per rank send and receive at once, each on its own tag;
// per-(peer, tag) order still holds.
inline void check_concurrent_senders(const Factory& make, int n, int threads_per_rank = 4, int messages = 50) {
  World world = make(n);
  expect_world(world, n);
  run_ranks(world, [&](Transport& t) {
    const int r = t.rank();
    std::vector<std::thread> workers;
    for (int w = 0; w < threads_per_rank; ++w) {
      workers.emplace_back([&, w] {
        const auto tag = static_cast<uint64_t>(100 + w);
        try {
          for (int i = 0; i < messages; ++i) {
            for (int peer = 0; peer < n; ++peer) {
              if (peer != r)
                t.send(peer, tag, pattern(static_cast<size_t>(64 + (i * 131) % 9000), r, peer, tag, i), patient());
            }
          }
          for (int peer = 0; peer < n; ++peer) {
            if (peer == r) continue;
            for (int i = 0; i < messages; ++i) {
              std::vector<std::byte> got(static_cast<size_t>(64 + (i * 131) % 9000));
              t.recv(peer, tag, got, patient());
              EXPECT_TRUE(got == pattern(got.size(), peer, r, tag, i))
                  << "rank " << r << " thread " << w << " message " << i << " from " << peer;
            }
          }
        } catch (const std::exception& e) {
          ADD_FAILURE() << "rank " << r << " thread " << w << ": " << e.what();
        }
      });
    }
    for (auto& th : workers) th.join();
  });
}

// All of the above.
inline void check_all(const Factory& make, int n) {
  check_ordering(make, n);
  check_out_of_order_tags(make, n);
  check_ring_exchange(make, n);
  check_all_to_all(make, n);
  check_recv_timeout(make, n);
  check_fail_peer(make, n);
  check_wrong_size(make, n);
  check_bad_peer(make, n);
  check_concurrent_senders(make, n);
}

}  // namespace loom::comm::contract
