"""Shared by the load-test scripts: start `maas sim` and `maas proxy` with
loadtest/bench.catalog.yaml applied and a key issued, and read process
figures from /proc."""

import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("MAAS_BIN") or os.path.join(ROOT, "target", "release", "maas")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{what} exited early ({proc.returncode})")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"{what} did not listen on {port}")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"



def machine():
    return f"{platform.machine()}, {os.cpu_count()} cores ({cpu_model()}), Linux {platform.release()}"


def revision():
    """The commit measured, `-dirty` when tracked files differ from it."""
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "unknown"
    if subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                      text=True).stdout.strip():
        commit += "-dirty"
    return commit


def pinned(cpus):
    """A `preexec_fn` that runs the child on `cpus` (None: anywhere)."""
    if not cpus:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def tree(pid):
    """`pid` and its descendants (nginx's workers, uvicorn's)."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def tree_cpu_seconds(pid):
    return sum(cpu_seconds(p) for p in tree(pid) if os.path.exists(f"/proc/{p}"))


def tree_rss_mib(pid):
    return sum(rss_mib(p) for p in tree(pid) if os.path.exists(f"/proc/{p}"))


class Gateway:
    """The simulator (with `models`) and a proxy in front of it; `mode` is
    the limits mode, `redis` an optional Redis URL for the store. The
    simulator runs on `sim_cpus`, the proxy on `proxy_cpus` with
    `proxy_threads` worker threads (0: one per core); `proxy_prefix` runs
    the proxy under another program (valgrind), given `ready_seconds` to
    listen."""

    def __init__(self, models, mode="local", redis=None, sim_cpus=None, proxy_cpus=None, proxy_threads=0,
                 proxy_prefix=(), ready_seconds=20):
        if not os.path.exists(BIN):
            sys.exit(f"no build at {BIN}: cargo build --release (or set MAAS_BIN)")
        self.work = tempfile.mkdtemp(prefix="maas-bench-")
        self.redis = redis
        env = dict(os.environ, MAAS_DATA_DIR=os.path.join(self.work, "data"), MAAS_LOG_LEVEL="warn",
                   MAAS_LIMITS_MODE=mode, MAAS_PROXY_THREADS=str(proxy_threads))
        env.pop("MAAS_CONFIG", None)
        if redis:
            env.update(MAAS_REDIS_URL=redis, MAAS_REDIS_PREFIX=f"maasbench-{os.getpid()}")
        self.env = env
        self.procs = []
        sim_port, proxy_port, metrics_port = free_port(), free_port(), free_port()
        sim = subprocess.Popen([BIN, "sim", "--listen", f"127.0.0.1:{sim_port}", "--models", models],
                               stdout=subprocess.DEVNULL, env=env, preexec_fn=pinned(sim_cpus))
        self.procs.append(sim)
        wait_port(sim_port, sim, "maas sim")
        catalog = os.path.join(self.work, "catalog.yaml")
        with open(os.path.join(ROOT, "loadtest/bench.catalog.yaml")) as f:
            text = f.read().replace("{SIM}", f"http://127.0.0.1:{sim_port}")
        with open(catalog, "w") as f:
            f.write(text)
        subprocess.run([BIN, "apply", "-f", catalog], env=env, check=True, stdout=subprocess.DEVNULL)
        self.key = subprocess.run([BIN, "create-key", "--app", "Bench/bench-app"], env=env, check=True,
                                  capture_output=True, text=True).stdout.strip()
        self.access_log = open(os.path.join(self.work, "access.log"), "w")
        self.proxy = subprocess.Popen(
            [*proxy_prefix, BIN, "proxy", "--listen", f"127.0.0.1:{proxy_port}", "--metrics-listen",
             f"127.0.0.1:{metrics_port}"],
            stdout=self.access_log, env=env, preexec_fn=pinned(proxy_cpus))
        self.procs.append(self.proxy)
        wait_port(proxy_port, self.proxy, "maas proxy", timeout=ready_seconds)
        self.sim_port, self.proxy_port, self.metrics_port = sim_port, proxy_port, metrics_port

    def close(self):
        for proc in self.procs:
            proc.terminate()
            proc.wait(timeout=30)
        if self.redis and shutil.which("redis-cli"):
            # Leave the operator's Redis as it was.
            keys = subprocess.run(
                ["redis-cli", "-u", self.redis, "--scan", "--pattern", f"{self.env['MAAS_REDIS_PREFIX']}:*"],
                capture_output=True, text=True,
            ).stdout.split()
            for start in range(0, len(keys), 500):
                subprocess.run(["redis-cli", "-u", self.redis, "DEL", *keys[start:start + 500]], capture_output=True)
        shutil.rmtree(self.work, ignore_errors=True)
