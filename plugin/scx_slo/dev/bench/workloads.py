"""The benchmark's processes, each started in its own container scope:

    python3 -m scx_slo.dev.bench.workloads server  --port P
    python3 -m scx_slo.dev.bench.workloads loadgen --port P --rate R --duration S --delay D
    python3 -m scx_slo.dev.bench.workloads probe   --duration S [--period-us 1000]

server   answers GET /delay/<seconds> after that delay (like httpbin's); an
         event loop with a timer heap (see serve); prints "ready".
loadgen  an open-loop client: request i is due at start + i/rate whatever the
         earlier ones did, and its latency counts from that due time (see
         stats.open_loop_latencies); prints one JSON object.
probe    a sleep loop: sleep PERIOD, record how much later than asked it woke
         up (the wakeup latency a latency-critical thread sees); prints JSON.

The batch load is stress-ng (stress_ng_argv / parse_stress_ng). Standard
library only: this runs inside the guest, where nothing else is installed.
"""
from __future__ import annotations

import argparse
import errno
import heapq
import json
import re
import selectors
import socket
import sys
import time

from scx_slo.dev.bench import stats


# -- server ---------------------------------------------------------------------------------
_REQUEST_RE = re.compile(rb"GET /delay/([0-9]*\.?[0-9]+) HTTP/1\.[01]")
_NOT_FOUND = b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n"


def response(head: bytes) -> tuple[float | None, bytes]:
    """(delay in seconds, response bytes) for a request head; delay None: answer now."""
    m = _REQUEST_RE.match(head)
    if m is None:
        return None, _NOT_FOUND
    delay = min(float(m.group(1)), 10.0)
    body = b'{"delay": %s}' % m.group(1)
    return delay, (b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n"
                   b"Content-Length: %d\r\n\r\n%s" % (len(body), body))


def serve(port: int) -> int:
    """An event-loop HTTP/1.0 server: one thread, non-blocking sockets, a timer heap
    for the delays. Like a threaded server, it sleeps until a request's delay is up
    and must then be scheduled promptly to answer on time; unlike one, it does not
    spend the (emulated, slow) CPU on a thread per request, so the load it puts
    on the critical pod stays small and the scheduler, not the server, is measured."""
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", port))
    lsock.listen(1024)
    lsock.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(lsock, selectors.EVENT_READ, None)
    timers: list[tuple[float, int, socket.socket, bytes]] = []
    seq = 0
    print("ready", flush=True)
    while True:
        timeout = None
        if timers:
            timeout = max(0.0, timers[0][0] - time.monotonic())
        for key, _ in sel.select(timeout):
            if key.data is None:
                try:
                    conn, _ = lsock.accept()
                except (BlockingIOError, InterruptedError):
                    continue
                conn.setblocking(False)
                sel.register(conn, selectors.EVENT_READ, bytearray())
                continue
            conn, buf = key.fileobj, key.data
            try:
                chunk = conn.recv(4096)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                chunk = b""
            if chunk:
                buf += chunk
                if b"\r\n\r\n" not in buf and b"\n\n" not in buf and len(buf) < 16384:
                    continue
            sel.unregister(conn)
            if not chunk and not buf:
                conn.close()
                continue
            delay, resp = response(bytes(buf))
            seq += 1
            heapq.heappush(timers, (time.monotonic() + (delay or 0.0), seq, conn, resp))
        now = time.monotonic()
        while timers and timers[0][0] <= now:
            _, _, conn, resp = heapq.heappop(timers)
            try:
                conn.setblocking(True)
                conn.sendall(resp)
            except OSError:
                pass
            conn.close()


def wait_for_go() -> None:
    """Say "ready" on stdout, then block until a line arrives on stdin, so that the
    interpreter's start-up (slow in an emulated guest) stays out of the window."""
    print("ready", flush=True)
    sys.stdin.readline()


# -- open-loop load generator -------------------------------------------------------------------
def loadgen(port: int, rate: float, duration: float, delay: float, grace: float,
            timeout: float) -> dict:
    """One thread, non-blocking sockets (selectors): sending never waits for answers,
    and the client's own CPU cost stays small next to the server's."""
    intended = stats.intended_send_times(rate, duration)
    n = len(intended)
    sent: list[float | None] = [None] * n
    done: list[float | None] = [None] * n
    ok = [False] * n
    request = f"GET /delay/{delay:g} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode()
    sel = selectors.DefaultSelector()
    now = time.monotonic
    t0 = now() + 0.1
    end = duration + delay + grace
    nxt = 0
    inflight = 0

    def finish(key, good: bool) -> None:
        nonlocal inflight
        i, sock, _ = key.data
        sel.unregister(sock)
        sock.close()
        done[i] = now() - t0
        ok[i] = good
        inflight -= 1

    while True:
        t = now() - t0
        while nxt < n and intended[nxt] <= t:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            sent[nxt] = t
            err = sock.connect_ex(("127.0.0.1", port))
            if err == 0:      # loopback connects at once: send now, skip a select round
                try:
                    sock.send(request)
                    sel.register(sock, selectors.EVENT_READ, (nxt, sock, bytearray()))
                except OSError:
                    err = -1
            elif err in (errno.EINPROGRESS, errno.EAGAIN):
                sel.register(sock, selectors.EVENT_WRITE, (nxt, sock, bytearray()))
                err = 0
            if err != 0:
                sock.close()
                done[nxt] = now() - t0
                nxt += 1
                continue
            inflight += 1
            nxt += 1
        if nxt >= n and inflight == 0:
            break
        if t >= end:
            break
        wait = (intended[nxt] - t) if nxt < n else end - t
        for key, events in sel.select(timeout=max(0.0, min(wait, 0.5))):
            i, sock, buf = key.data
            try:
                if events & selectors.EVENT_WRITE:
                    sock.sendall(request)
                    sel.modify(sock, selectors.EVENT_READ, key.data)
                    continue
                chunk = sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                finish(key, False)
                continue
            if chunk:
                buf += chunk
            else:
                finish(key, buf.startswith(b"HTTP/1.") and buf[9:12] == b"200")
    for key in list(sel.get_map().values()):
        key.data[1].close()
    lat, unfinished = stats.open_loop_latencies(intended, done, end)
    lags = [s - due for s, due in zip(sent, intended) if s is not None]
    return {"rate": rate, "duration_s": duration, "delay_s": delay, "n": n,
            "unfinished": unfinished,
            "errors": sum(1 for d, g in zip(done, ok) if d is not None and not g),
            "latency_s": [round(x, 6) for x in lat],
            "send_lag_s": stats.summarize(lags)}


# -- wakeup probe --------------------------------------------------------------------------
def probe(duration: float, period_us: int) -> dict:
    period = period_us / 1e6
    pns = period_us * 1000
    lat: list[int] = []
    end = time.monotonic() + duration
    clock = time.perf_counter_ns
    while time.monotonic() < end:
        t = clock()
        time.sleep(period)
        lat.append(max(clock() - t - pns, 0))
    us = [x / 1000 for x in lat]
    return {"period_us": period_us, "duration_s": duration, **stats.summarize(us),
            "cdf_us": stats.cdf_points(us)}


# -- stress-ng ---------------------------------------------------------------------------------
def stress_ng_argv(workers: int, seconds: float) -> list[str]:
    """CPU hogs: WORKERS stress-ng cpu stressors for SECONDS, one fixed method (so
    bogo-ops mean the same work in every configuration), metrics at the end."""
    return ["stress-ng", "--cpu", str(workers), "--cpu-method", "int64",
            "--timeout", f"{max(1, round(seconds))}s", "--metrics-brief"]


_METRICS = (r"\b{}\s+(?P<ops>\d+)\s+(?P<real>[\d.]+)\s+(?P<usr>[\d.]+)\s+(?P<sys>[\d.]+)"
            r"\s+(?P<rate>[\d.]+)")


def parse_stress_ng(output: str, stressor: str = "cpu") -> dict | None:
    """bogo-ops, real time and bogo-ops/s (real time) of STRESSOR from stress-ng
    --metrics-brief output, or None if there is no metrics line."""
    pattern = re.compile(_METRICS.format(re.escape(stressor)))
    for line in output.splitlines():
        m = pattern.search(line)
        if m:
            return {"bogo_ops": int(m["ops"]), "real_s": float(m["real"]),
                    "usr_s": float(m["usr"]), "sys_s": float(m["sys"]),
                    "bogo_ops_per_s": float(m["rate"])}
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m scx_slo.dev.bench.workloads")
    sub = ap.add_subparsers(dest="role", required=True)
    s = sub.add_parser("server")
    s.add_argument("--port", type=int, required=True)
    g = sub.add_parser("loadgen")
    g.add_argument("--port", type=int, required=True)
    g.add_argument("--rate", type=float, required=True)
    g.add_argument("--duration", type=float, required=True)
    g.add_argument("--delay", type=float, required=True)
    g.add_argument("--grace", type=float, default=5.0)
    g.add_argument("--timeout", type=float, default=30.0)
    p = sub.add_parser("probe")
    p.add_argument("--duration", type=float, required=True)
    p.add_argument("--period-us", type=int, default=1000)
    for sp in (g, p):
        sp.add_argument("--wait", action="store_true",
                        help='print "ready", start when a line arrives on stdin')
    a = ap.parse_args(argv)
    if a.role == "server":
        return serve(a.port)
    if a.wait:
        wait_for_go()
    if a.role == "loadgen":
        res = loadgen(a.port, a.rate, a.duration, a.delay, a.grace, a.timeout)
    else:
        res = probe(a.duration, a.period_us)
    json.dump(res, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
