#!/usr/bin/env python3
"""What plain TCP delivers on the shaped netns links, in the traffic pattern of
2 workers + 2 servers: hosts 0-1 (workers) each send to and receive from
hosts 2-3 (servers), all 8 flows at once, as a pushpull of big keys does.
Every flow starts at the same instant; a host's rate is the bytes it
received over the time from its first byte to its last. Prints one JSON
line: GB/s received per host (min and mean) and its ratio to the nominal
link rate. The parameter-server benchmark (ps_throughput.sh)
runs it first, as the ceiling beside `loom bench ps`'s "of_link_bound".

    python3 bench/tcp_pattern.py --prefix lmps --hosts 4 --mib 256 [--gbit 1]

Needs root (ip netns exec) and the namespaces <prefix>0..3 at 10.77.0.1-4
(../shared/tools/netns-cluster up 4 --rate 1gbit --prefix lmps)."""
import argparse
import json
import socket
import subprocess
import sys
import threading
import time

CHUNK = 1 << 20


def receiver(port, nbytes, conns):
    """Accepts `conns` connections and reads `nbytes` from each; prints seconds."""
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("0.0.0.0", port))
    ls.listen(conns)
    ls.settimeout(60)
    socks = [ls.accept()[0] for _ in range(conns)]
    done = []

    first = []

    def read_timed(c):
        c.settimeout(120)
        buf = bytearray(CHUNK)
        k = c.recv_into(buf)  # the first bytes start the clock
        first.append(time.time())
        got = k
        while 0 < k and got < nbytes:
            k = c.recv_into(buf)
            got += k
        done.append(got)

    threads = [threading.Thread(target=read_timed, args=(c,)) for c in socks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({"seconds": time.time() - min(first), "bytes": sum(done)}), flush=True)


def sender(host, port, nbytes, start_at):
    deadline = time.time() + 30
    while True:
        try:
            s = socket.create_connection((host, port), timeout=5)
            break
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.1)
    s.settimeout(120)
    time.sleep(max(0.0, start_at - time.time()))  # every flow starts at once
    buf = bytes(CHUNK)
    sent = 0
    while sent < nbytes:
        s.sendall(buf)
        sent += CHUNK
    s.shutdown(socket.SHUT_WR)
    s.recv(1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prefix", default="lmps")
    ap.add_argument("--hosts", type=int, default=4)
    ap.add_argument("--mib", type=int, default=256, help="MiB per flow")
    ap.add_argument("--gbit", type=float, default=1.0)
    ap.add_argument("--port", type=int, default=7301)
    ap.add_argument("--role", help=argparse.SUPPRESS)
    ap.add_argument("--peer", help=argparse.SUPPRESS)
    ap.add_argument("--start-at", type=float, help=argparse.SUPPRESS)
    a = ap.parse_args()
    nbytes = a.mib << 20
    if a.role == "recv":
        return receiver(a.port, nbytes, 2)
    if a.role == "send":
        return sender(a.peer, a.port, nbytes, a.start_at)
    assert a.hosts == 4, "the 2 + 2 pattern needs 4 hosts"
    me = [sys.executable, __file__, "--mib", str(a.mib), "--port", str(a.port)]
    ns = lambda i: ["ip", "netns", "exec", f"{a.prefix}{i}"]
    addr = lambda i: f"10.77.0.{i + 1}"
    recvs = [subprocess.Popen(ns(i) + me + ["--role", "recv"], stdout=subprocess.PIPE, text=True) for i in range(4)]
    time.sleep(0.5)
    pairs = [(w, s) for w in (0, 1) for s in (2, 3)]
    start_at = str(time.time() + 2.0)
    sends = [subprocess.Popen(ns(src) + me + ["--role", "send", "--peer", addr(dst), "--start-at", start_at])
             for w, s in pairs for src, dst in ((w, s), (s, w))]
    for p in sends:
        p.wait(timeout=300)
    rates = []
    for p in recvs:
        out, _ = p.communicate(timeout=300)
        r = json.loads(out.strip().splitlines()[-1])
        rates.append(r["bytes"] / r["seconds"] / 1e9)
    link = a.gbit * 1e9 / 8 / 1e9
    print(json.dumps({"pattern": "2 workers + 2 servers, 8 flows", "MiB_per_flow": a.mib,
                      "GBs_in_per_host_min": round(min(rates), 4), "GBs_in_per_host_mean": round(sum(rates) / 4, 4),
                      "link_GBs": link, "of_link_min": round(min(rates) / link, 3),
                      "of_link_mean": round(sum(rates) / 4 / link, 3)}), flush=True)


if __name__ == "__main__":
    main()
