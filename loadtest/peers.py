"""The gateways MaaS is compared with, started for loadtest/compare.py:
nginx as a plain reverse proxy, a bare Pingora proxy with no policy (the
floor maas is built on), and LiteLLM's proxy with per-key limits through
its `custom_auth` hook (its database-backed keys need PostgreSQL)."""

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile

from gateway import BIN, free_port, pinned, wait_port

NGINX_CONF = """
{user}
worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 16384; }}
http {{
    access_log {work}/access.log combined buffer=64k;
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    upstream sim {{ server 127.0.0.1:{sim_port}; keepalive 512; }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://sim;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
        }}
    }}
}}
"""


class Nginx:
    """nginx (Debian `nginx-light`): one worker, kept-alive upstream
    connections, no buffering, the default access log."""

    def __init__(self, sim_port, cpus=None):
        binary = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
        if not binary:
            sys.exit("nginx is missing: apt install nginx-light")
        self.work = tempfile.mkdtemp(prefix="maas-nginx-")
        self.port = free_port()
        conf = os.path.join(self.work, "nginx.conf")
        with open(conf, "w") as f:
            f.write(NGINX_CONF.format(user="user root;" if os.getuid() == 0 else "", work=self.work,
                                      sim_port=sim_port, port=self.port))
        self.proc = subprocess.Popen([binary, "-p", self.work, "-c", conf, "-e", os.path.join(self.work, "error.log")],
                                     preexec_fn=pinned(cpus))
        wait_port(self.port, self.proc, "nginx")

    def close(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)
        shutil.rmtree(self.work, ignore_errors=True)


class BarePingora:
    """`proxy/examples/bare_pingora.rs`: Pingora 0.9 forwarding every request
    to the simulator, one worker thread, no policy. Found next to the maas
    binary under test (`cargo build --release -p maas-proxy --example
    bare_pingora`, or MAAS_BARE_PINGORA); `prefix` runs it under another
    program (valgrind), given `ready_seconds` to listen."""

    def __init__(self, sim_port, cpus=None, prefix=(), ready_seconds=20):
        binary = os.environ.get("MAAS_BARE_PINGORA") or os.path.join(os.path.dirname(BIN), "examples",
                                                                      "bare_pingora")
        if not os.path.exists(binary):
            sys.exit(f"no bare Pingora build at {binary}: cargo build --release -p maas-proxy --example bare_pingora "
                     "(or set MAAS_BARE_PINGORA)")
        self.port = free_port()
        self.proc = subprocess.Popen([*prefix, binary, f"127.0.0.1:{self.port}", f"127.0.0.1:{sim_port}", "1"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=pinned(cpus))
        wait_port(self.port, self.proc, "bare Pingora", timeout=ready_seconds)

    def close(self):
        self.proc.send_signal(signal.SIGINT)  # Pingora's fast shutdown
        self.proc.wait(timeout=30)


LITELLM_CONFIG = """
model_list:
{models}
general_settings:
  master_key: {master_key}
  custom_auth: custom_auth.user_api_key_auth
litellm_settings:
  drop_params: true
  telemetry: false
"""

LITELLM_AUTH = '''
"""Per-key limits without LiteLLM's database: one key, rpm/tpm set high
enough never to refuse, checked by LiteLLM's limiter on every request."""
from fastapi import Request
from litellm.proxy._types import UserAPIKeyAuth

KEY = {key!r}


async def user_api_key_auth(request: Request, api_key: str) -> UserAPIKeyAuth:
    if api_key == KEY:
        return UserAPIKeyAuth(api_key=api_key, rpm_limit=1_000_000_000, tpm_limit=1_000_000_000_000)
    raise Exception("invalid API key")
'''


class LiteLLM:
    """`litellm --config` with one worker in front of the simulator."""

    def __init__(self, binary, sim_port, models, key, cpus=None):
        self.work = tempfile.mkdtemp(prefix="maas-litellm-")
        self.port = free_port()
        self.key = key
        entries = "".join(
            f"  - model_name: {m}\n    litellm_params:\n      model: openai/{m}\n"
            f"      api_base: http://127.0.0.1:{sim_port}/v1\n      api_key: none\n"
            for m in models
        )
        config = os.path.join(self.work, "config.yaml")
        with open(config, "w") as f:
            f.write(LITELLM_CONFIG.format(models=entries, master_key="sk-" + secrets.token_hex(32)))
        with open(os.path.join(self.work, "custom_auth.py"), "w") as f:
            f.write(LITELLM_AUTH.format(key=key))
        env = dict(os.environ, PYTHONPATH=self.work, LITELLM_LOG="ERROR", LITELLM_TELEMETRY="False",
                   DISABLE_ADMIN_UI="True", NO_DOCS="True")
        for unset in ("DATABASE_URL", "REDIS_HOST", "REDIS_URL"):
            env.pop(unset, None)
        self.log = open(os.path.join(self.work, "litellm.log"), "w")
        self.proc = subprocess.Popen(
            [binary, "--config", config, "--host", "127.0.0.1", "--port", str(self.port), "--num_workers", "1"],
            cwd=self.work, env=env, stdout=self.log, stderr=subprocess.STDOUT, preexec_fn=pinned(cpus))
        try:
            wait_port(self.port, self.proc, "litellm", timeout=120)
        except SystemExit:
            self.log.flush()
            with open(os.path.join(self.work, "litellm.log")) as f:
                sys.stderr.write(f.read()[-4000:])
            raise

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.work, ignore_errors=True)
