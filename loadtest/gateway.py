"""Shared by the load-test scripts: start `maas sim` and `maas proxy` with
loadtest/bench.catalog.yaml applied and a key issued, and read process
figures from /proc."""

import datetime
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "maas")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what):
    deadline = time.time() + 20
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


def to_us(text):
    value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 1, "ms": 1000, "s": 1_000_000}[unit]


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"



def write_report(name, report):
    """Prints a markdown report and writes it to loadtest/results/<date>-<name>.md."""
    print(report)
    os.makedirs(os.path.join(ROOT, "loadtest/results"), exist_ok=True)
    path = os.path.join(ROOT, "loadtest/results", f"{datetime.date.today()}-{name}.md")
    with open(path, "w") as f:
        f.write(report)
    print(f"written to {os.path.relpath(path, ROOT)}")


def machine():
    return f"{platform.machine()}, {os.cpu_count()} cores ({cpu_model()}), Linux {platform.release()}"


class Gateway:
    """The simulator (with `models`) and a proxy in front of it; `mode` is
    the limits mode, `redis` an optional Redis URL for the store."""

    def __init__(self, models, mode="local", redis=None):
        if not os.path.exists(BIN):
            sys.exit("no release build: cargo build --release")
        self.work = tempfile.mkdtemp(prefix="maas-bench-")
        self.redis = redis
        env = dict(os.environ, MAAS_DATA_DIR=os.path.join(self.work, "data"), MAAS_LOG_LEVEL="warn",
                   MAAS_LIMITS_MODE=mode)
        env.pop("MAAS_CONFIG", None)
        if redis:
            env.update(MAAS_REDIS_URL=redis, MAAS_REDIS_PREFIX=f"maasbench-{os.getpid()}")
        self.env = env
        self.procs = []
        sim_port, proxy_port, metrics_port = free_port(), free_port(), free_port()
        sim = subprocess.Popen([BIN, "sim", "--listen", f"127.0.0.1:{sim_port}", "--models", models],
                               stdout=subprocess.DEVNULL, env=env)
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
        self.access_log_path = os.path.join(self.work, "access.log")
        self.access_log = open(self.access_log_path, "w")
        self.proxy = subprocess.Popen(
            [BIN, "proxy", "--listen", f"127.0.0.1:{proxy_port}", "--metrics-listen", f"127.0.0.1:{metrics_port}"],
            stdout=self.access_log, env=env)
        self.procs.append(self.proxy)
        wait_port(proxy_port, self.proxy, "maas proxy")
        self.sim_port, self.proxy_port = sim_port, proxy_port

    def logged_lines(self):
        self.access_log.flush()
        time.sleep(0.1)
        with open(self.access_log_path) as f:
            return sum(1 for _ in f)

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
