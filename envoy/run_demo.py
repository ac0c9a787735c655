#!/usr/bin/env python3
"""`make run`: the meshgate demo in the foreground.

Starts the echo upstream (envoy/echo_upstream.py) and Envoy with the meshgate filter
(bootstrap rendered from envoy/demo.yaml.in with envoy/demo-plugin.json), prints requests
to try with freshly minted demo tokens, streams Envoy's access log, and stops both on
Ctrl-C (or when either exits).

Environment (all optional; see envoy/render.py for the full list):
  ENVOY                      Envoy binary (default .venv/bin/envoy)
  MESHGATE_WASM              filter module (default target/wasm32-wasip1/release/meshgate_filter.wasm)
  MESHGATE_PLUGIN_CONFIG     plugin JSON (default envoy/demo-plugin.json)
  MESHGATE_ENVOY_PORT        listener port (8080)
  MESHGATE_ENVOY_ADMIN_PORT  admin port (9901)
  MESHGATE_UPSTREAM_PORT     echo upstream port (8082)
  MESHGATE_CONTROL_PLANE_PORT / MESHGATE_LISTEN   where the control_plane cluster points (8081)
  MESHGATE_ENVOY_CONCURRENCY worker threads (2)
  MESHGATE_ENVOY_LOG_LEVEL   Envoy log level (warning; the filter's own logs at info)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.dont_write_bytecode = True  # no envoy/__pycache__ in the work tree

import demo_tokens  # noqa: E402
import render  # noqa: E402

DEMO_API_KEY = "mg_2NPz4fHrjWQ6j6Mxfc1SRUFAiWCQwghHLULYAYgzb6yvH1rxR2"  # digest in demo-plugin.json


def env(name: str, default: str) -> str:
    return os.environ.get(name) or default


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


def stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _interrupt(_signum, _frame) -> None:
    raise KeyboardInterrupt


def main() -> int:
    envoy = env("ENVOY", str(REPO / ".venv" / "bin" / "envoy"))
    wasm = Path(env("MESHGATE_WASM", str(render.DEFAULT_WASM)))
    if not wasm.is_absolute():
        wasm = REPO / wasm
    plugin = Path(env("MESHGATE_PLUGIN_CONFIG", str(render.DEFAULT_PLUGIN_CONFIG)))
    envoy_port = int(env("MESHGATE_ENVOY_PORT", "8080"))
    admin_port = int(env("MESHGATE_ENVOY_ADMIN_PORT", "9901"))
    upstream_port = int(env("MESHGATE_UPSTREAM_PORT", "8082"))
    cp_host, cp_port = render._listen_parts()
    cp_host = env("MESHGATE_CONTROL_PLANE_HOST", cp_host or "127.0.0.1")
    cp_port = int(env("MESHGATE_CONTROL_PLANE_PORT", cp_port or "8081"))

    for path, hint in ((envoy, "make envoy-install"), (wasm, "make build")):
        if not Path(path).exists():
            print(f"run_demo: {path} not found (run `{hint}`)", file=sys.stderr)
            return 2

    work = Path(tempfile.mkdtemp(prefix="meshgate-demo."))
    config = work / "envoy.yaml"
    config.write_text(
        render.render(
            wasm=wasm,
            plugin_json=plugin.read_text(),
            envoy_port=envoy_port,
            admin_port=admin_port,
            upstream_port=upstream_port,
            control_plane_host=cp_host,
            control_plane_port=cp_port,
        )
    )

    echo = envoy_proc = None
    # Ctrl-C reaches the whole foreground process group; children stop on their own
    # and we only have to notice. SIGTERM is turned into the same path.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        echo = subprocess.Popen(
            [sys.executable, str(HERE / "echo_upstream.py"), "--port", str(upstream_port)],
            env={**os.environ, "MESHGATE_UPSTREAM_QUIET": "1"},
        )
        envoy_proc = subprocess.Popen(
            [
                envoy, "-c", str(config),
                "--concurrency", env("MESHGATE_ENVOY_CONCURRENCY", "2"),
                "--disable-hot-restart",
                "--log-level", env("MESHGATE_ENVOY_LOG_LEVEL", "warning"),
                "--component-log-level", "wasm:info",
            ]
        )
        if not wait_ready(f"http://127.0.0.1:{admin_port}/ready", envoy_proc):
            print("run_demo: Envoy did not become ready (see its log above)", file=sys.stderr)
            return 1

        base = f"http://127.0.0.1:{envoy_port}"
        alice = demo_tokens.mint(plugin, "alice", ["user"])
        admin = demo_tokens.mint(plugin, "root", ["admin", "user"])
        print(
            f"""
meshgate demo is up: Envoy {base} (admin http://127.0.0.1:{admin_port}), echo upstream :{upstream_port}
config {config}

Try (tokens valid for one hour; the upstream echoes the headers it received):
  curl -i {base}/health                                         # public: 200
  curl -i {base}/api/orders                                     # 401 + WWW-Authenticate
  curl -i -H 'Authorization: Bearer {alice}' {base}/api/orders
  curl -i -H 'Authorization: Bearer {alice}' {base}/admin/users   # 403: no admin role
  curl -i -H 'Authorization: Bearer {admin}' {base}/admin/users
  curl -i -H 'X-API-Key: {DEMO_API_KEY}' {base}/api/orders
  python3 envoy/demo_tokens.py --sub bob --roles admin           # mint more

Ctrl-C stops everything.
""",
            flush=True,
        )
        while envoy_proc.poll() is None and echo.poll() is None:
            time.sleep(0.5)
        print("run_demo: a process exited; stopping", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nrun_demo: stopping", file=sys.stderr)
        return 0
    finally:
        stop(envoy_proc)
        stop(echo)
        for f in work.iterdir():
            f.unlink()
        work.rmdir()


if __name__ == "__main__":
    sys.exit(main())
