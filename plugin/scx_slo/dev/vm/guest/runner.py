"""The guest side of the VM's control channel (runs as PID 1's exec).

JSON lines over the virtio-serial port named scx.ctl. The guest says
{"event": "ready"} once; then for each {"op": "run", "id", "argv", "env",
"cwd", "input", "timeout"} it streams {"id", "stream": "stdout"|"stderr",
"data"} and ends with {"id", "exit": rc, "timed_out": bool}. {"op":
"poweroff"} syncs and powers the machine off. Standard library only.
"""
import glob
import json
import os
import signal
import subprocess
import threading
import time

PORT_NAME = "scx.ctl"


def find_port():
    for _ in range(100):
        for d in glob.glob("/sys/class/virtio-ports/*"):
            try:
                with open(os.path.join(d, "name")) as f:
                    if f.read().strip() == PORT_NAME:
                        return "/dev/" + os.path.basename(d)
            except OSError:
                pass
        time.sleep(0.05)
    raise SystemExit("runner: no virtio-serial port named " + PORT_NAME)


class Channel:
    def __init__(self, path):
        self.fd = os.open(path, os.O_RDWR)
        self.lock = threading.Lock()
        self.buf = b""

    def send(self, msg):
        data = (json.dumps(msg) + "\n").encode()
        with self.lock:
            while data:
                n = os.write(self.fd, data)
                data = data[n:]

    def recv(self):
        while b"\n" not in self.buf:
            chunk = os.read(self.fd, 65536)
            if not chunk:
                time.sleep(0.05)  # host side not connected yet
                continue
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)


def pump(chan, rid, name, pipe):
    while True:
        chunk = pipe.read1(65536)
        if not chunk:
            return
        chan.send({"id": rid, "stream": name, "data": chunk.decode("utf-8", "replace")})


def run(chan, req):
    rid = req["id"]
    env = dict(os.environ)
    env.update(req.get("env") or {})
    stdin = req.get("input")
    try:
        p = subprocess.Popen(req["argv"], cwd=req.get("cwd") or "/root", env=env,
                             stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             start_new_session=True)
    except OSError as e:
        chan.send({"id": rid, "stream": "stderr", "data": f"runner: {e}\n"})
        chan.send({"id": rid, "exit": 127, "timed_out": False})
        return
    threads = [threading.Thread(target=pump, args=(chan, rid, n, s), daemon=True)
               for n, s in (("stdout", p.stdout), ("stderr", p.stderr))]
    for t in threads:
        t.start()
    if stdin is not None:
        try:
            p.stdin.write(stdin.encode())
            p.stdin.close()
        except BrokenPipeError:
            pass
    timed_out = False
    try:
        rc = p.wait(timeout=req.get("timeout"))
    except subprocess.TimeoutExpired:
        timed_out = True
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        rc = p.wait()
    for t in threads:
        t.join(timeout=5)
    chan.send({"id": rid, "exit": rc, "timed_out": timed_out})


def main():
    chan = Channel(find_port())
    with open("/proc/sys/kernel/osrelease") as f:
        release = f.read().strip()
    chan.send({"event": "ready", "kernel": release, "cpus": os.cpu_count()})
    while True:
        req = chan.recv()
        if req.get("op") == "run":
            run(chan, req)
        elif req.get("op") == "poweroff":
            os.sync()
            with open("/proc/sysrq-trigger", "w") as f:
                f.write("o")
            time.sleep(30)


if __name__ == "__main__":
    main()
