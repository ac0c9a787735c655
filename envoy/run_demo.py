#!/usr/bin/env python3
"""`make run`: the meshgate demo in the foreground.

Starts, in this order:
  1. the control plane (`meshgate serve`, SQLite under ./data/, built with
     `cargo build -p meshgate` unless MESHGATE_BIN names a binary),
  2. the echo upstream (envoy/echo_upstream.py),
  3. Envoy with the meshgate filter (bootstrap rendered from envoy/demo.yaml.in) whose
     plugin configuration is envoy/demo-plugin.json plus, added here, the control plane
     as an issuer (keys from the feed) and a `sync` section: the filter follows the
     control plane's sync feed (signing keys, API keys, revocations).

Envoy routes /api/v1/ and /.well-known/ to the control plane (the filter makes
/api/v1/auth/* and /.well-known/* public and the rest of /api/v1 admin-only), everything
else to the echo upstream. Prints ready-to-paste curl commands (log in through the gateway,
call a protected route, log out, see the same token refused), streams the logs, and stops
all three on Ctrl-C (or when one of them exits).

State kept in the data directory across runs (all git-ignored, demo only):
  meshgate.db, master.key     the control plane's (its defaults)
  demo-admin-password         the admin password chosen on the first run (mode 0600)
  demo-sync-key               the filter's API key with scope `sync` (mode 0600), created
                              through the API on the first run, re-created if it stops
                              verifying (revoked, expired, another database)
A demo user `alice` (password `alice-demo-password`, no roles) is created on the first run.
Remove the data directory to start over.

Environment (all optional; see envoy/render.py for the full list):
  ENVOY                      Envoy binary (default .venv/bin/envoy)
  MESHGATE_WASM              filter module (default target/wasm32-wasip1/release/meshgate_filter.wasm)
  MESHGATE_BIN               control plane binary (default: `cargo build -p meshgate`, then
                             target/debug/meshgate)
  MESHGATE_PLUGIN_CONFIG     plugin JSON (default envoy/demo-plugin.json)
  MESHGATE_ENVOY_PORT        listener port (8080)
  MESHGATE_ENVOY_ADMIN_PORT  admin port (9901)
  MESHGATE_UPSTREAM_PORT     echo upstream port (8082)
  MESHGATE_CONTROL_PLANE_PORT / MESHGATE_LISTEN   the control plane's port (8081)
  MESHGATE_DATA_DIR          data directory (<repo>/data)
  MESHGATE_ADMIN_PASSWORD    admin password (default: generated on the first run, kept)
  MESHGATE_ISSUER            issuer (default http://127.0.0.1:<control plane port>)
  MESHGATE_ENVOY_CONCURRENCY worker threads (2)
  MESHGATE_ENVOY_LOG_LEVEL   Envoy log level (warning; the filter's own logs at info)
Any other MESHGATE_* variable reaches the control plane unchanged (README "Settings").
"""

from __future__ import annotations

import http.client
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
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
DEMO_USER, DEMO_USER_PASSWORD = "alice", "alice-demo-password"
PASSWORD_LINE = re.compile(r"created admin user '([^']+)' with password: (\S+)")


def env(name: str, default: str) -> str:
    return os.environ.get(name) or default


def say(msg: str) -> None:
    print(f"run_demo: {msg}", file=sys.stderr, flush=True)


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
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _interrupt(_signum, _frame) -> None:
    raise KeyboardInterrupt


def call(port: int, method: str, path: str, body: dict | None = None,
         token: str | None = None) -> tuple[int, dict]:
    """A JSON request to 127.0.0.1:port; (status, JSON object or {})."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        c.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
        r = c.getresponse()
        raw = r.read()
        try:
            value = json.loads(raw) if raw else {}
        except ValueError:
            value = {}
        return r.status, value if isinstance(value, dict) else {}
    finally:
        c.close()


def write_secret(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")


def read_secret(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def control_plane_binary() -> Path | None:
    given = os.environ.get("MESHGATE_BIN")
    if given:
        return Path(given)
    say("building the control plane: cargo build -p meshgate")
    cargo = os.environ.get("CARGO", "cargo")
    if subprocess.run([cargo, "build", "-p", "meshgate"], cwd=REPO).returncode != 0:
        return None
    return REPO / "target" / "debug" / "meshgate"


class ControlPlaneOutput(threading.Thread):
    """Relays the control plane's output with a prefix; remembers a generated password."""

    def __init__(self, proc: subprocess.Popen) -> None:
        super().__init__(daemon=True)
        self.proc = proc
        self.generated: tuple[str, str] | None = None

    def run(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            m = PASSWORD_LINE.search(line)
            if m:
                self.generated = (m.group(1), m.group(2))
            sys.stderr.write(f"[control-plane] {line}")
            sys.stderr.flush()


def ensure_sync_key(cp_port: int, key_file: Path, admin_user: str, admin_password: str | None) -> str:
    """The stored sync key if it still verifies, else a new one (needs the admin)."""
    key = read_secret(key_file)
    if key:
        status, meta = call(cp_port, "POST", "/api/v1/apikeys/verify", {"key": key})
        fresh = meta.get("expires_at", 0) > time.time() + 86_400
        if status == 200 and "sync" in meta.get("scopes", []) and fresh:
            return key
        say(f"the stored sync key in {key_file} no longer verifies (status {status}); creating a new one")
    if not admin_password:
        raise SystemExit(
            f"run_demo: cannot create the filter's sync key: the admin password of this database is "
            f"unknown. Set MESHGATE_ADMIN_PASSWORD, or remove {key_file.parent} to start over."
        )
    status, body = call(cp_port, "POST", "/api/v1/auth/login",
                        {"username": admin_user, "password": admin_password})
    if status != 200:
        raise SystemExit(f"run_demo: admin login failed ({status} {body}); set MESHGATE_ADMIN_PASSWORD "
                         f"or remove {key_file.parent} to start over")
    admin = body["access_token"]
    for days in (365, 30, 1):  # MESHGATE_APIKEY_MAX_DAYS may be lower than 365
        status, created = call(cp_port, "POST", "/api/v1/apikeys",
                               {"name": "demo envoy sync", "scopes": ["sync"], "expires_in_days": days},
                               admin)
        if status == 201:
            write_secret(key_file, created["key"])
            say(f"created the filter's sync key (id {created.get('id')}, {days} days) into {key_file}")
            # The demo's plain user, created once with the key.
            s, b = call(cp_port, "POST", "/api/v1/users",
                        {"username": DEMO_USER, "password": DEMO_USER_PASSWORD}, admin)
            if s == 201:
                say(f"created the demo user {DEMO_USER!r}")
            return created["key"]
    raise SystemExit(f"run_demo: cannot create the sync key: {status} {created}")


def plugin_config(base: Path, issuer: str, audience: str, sync_key: str) -> str:
    cfg = json.loads(base.read_text())
    cfg.setdefault("issuers", []).append({"issuer": issuer, "audiences": [audience]})
    cfg["sync"] = {"cluster": "control_plane", "api_key": sync_key, "wait_secs": 30}
    return json.dumps(cfg)


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
    data_dir = Path(env("MESHGATE_DATA_DIR", str(REPO / "data")))
    if not data_dir.is_absolute():
        data_dir = REPO / data_dir
    issuer = env("MESHGATE_ISSUER", f"http://127.0.0.1:{cp_port}")
    audience = env("MESHGATE_AUDIENCE", "meshgate")
    admin_user = env("MESHGATE_ADMIN_USER", "admin")

    for path, hint in ((envoy, "make envoy-install"), (wasm, "make build")):
        if not Path(path).exists():
            say(f"{path} not found (run `{hint}`)")
            return 2
    meshgate = control_plane_binary()
    if meshgate is None or not meshgate.exists():
        say(f"no control plane binary ({meshgate or 'cargo build -p meshgate failed'})")
        return 2

    data_dir.mkdir(parents=True, exist_ok=True)
    pw_file, key_file = data_dir / "demo-admin-password", data_dir / "demo-sync-key"
    fresh_db = "DATABASE_URL" not in os.environ and not (data_dir / "meshgate.db").exists()
    admin_password = os.environ.get("MESHGATE_ADMIN_PASSWORD") or read_secret(pw_file)
    if not admin_password and fresh_db:
        admin_password = secrets.token_urlsafe(12)
    if admin_password and fresh_db:
        write_secret(pw_file, admin_password)

    cp_env = dict(os.environ, MESHGATE_LISTEN=f"{cp_host}:{cp_port}", MESHGATE_DATA_DIR=str(data_dir),
                  MESHGATE_ISSUER=issuer, MESHGATE_AUDIENCE=audience)
    if admin_password:
        cp_env["MESHGATE_ADMIN_PASSWORD"] = admin_password

    work = Path(tempfile.mkdtemp(prefix="meshgate-demo."))
    config = work / "envoy.yaml"
    cp = echo = envoy_proc = None
    # Ctrl-C reaches the whole foreground process group; children stop on their own
    # and we only have to notice. SIGTERM is turned into the same path. SIGINT is set
    # explicitly: a shell that starts us in the background leaves it ignored.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    try:
        cp = subprocess.Popen([str(meshgate), "serve"], cwd=REPO, env=cp_env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, errors="replace")
        out = ControlPlaneOutput(cp)
        out.start()
        if not wait_ready(f"http://127.0.0.1:{cp_port}/health", cp):
            say("the control plane did not become healthy (see its log above)")
            return 1
        if out.generated and not admin_password:
            admin_user, admin_password = out.generated
            write_secret(pw_file, admin_password)
        sync_key = ensure_sync_key(cp_port, key_file, admin_user, admin_password)

        config.write_text(
            render.render(
                wasm=wasm,
                plugin_json=plugin_config(plugin, issuer, audience, sync_key),
                envoy_port=envoy_port,
                admin_port=admin_port,
                upstream_port=upstream_port,
                control_plane_host=cp_host,
                control_plane_port=cp_port,
            )
        )
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
            say("Envoy did not become ready (see its log above)")
            return 1

        # The filter has the control plane's keys once a fresh token passes.
        base = f"http://127.0.0.1:{envoy_port}"
        synced = False
        status, body = call(envoy_port, "POST", "/api/v1/auth/login",
                            {"username": DEMO_USER, "password": DEMO_USER_PASSWORD})
        if status == 200:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and not synced:
                synced = call(envoy_port, "GET", "/api/orders", token=body["access_token"])[0] == 200
                time.sleep(0.1)
            call(envoy_port, "POST", "/api/v1/auth/logout", token=body["access_token"])
        if not synced:
            say("warning: the filter has not accepted a control-plane token yet (sync feed not reached?)")

        alice = demo_tokens.mint(plugin, "alice", ["user"])
        login = (f"curl -s {base}/api/v1/auth/login -H 'content-type: application/json' "
                 "-d '{\"username\": \"%s\", \"password\": \"%s\"}' "
                 "| python3 -c 'import json,sys; print(json.load(sys.stdin)[\"access_token\"])'")
        print(
            f"""
meshgate demo is up: Envoy {base} (admin http://127.0.0.1:{admin_port}), echo upstream :{upstream_port},
control plane http://127.0.0.1:{cp_port} (data {data_dir}; the filter follows its sync feed)

Control plane admin: user {admin_user!r}, password {admin_password or '(unknown: set MESHGATE_ADMIN_PASSWORD)'}
Demo user: {DEMO_USER!r}, password {DEMO_USER_PASSWORD!r} (no roles)

Log in through the gateway, use the token, log out, see the same token refused:
  TOKEN=$({login % (DEMO_USER, DEMO_USER_PASSWORD)})
  curl -i -H "Authorization: Bearer $TOKEN" {base}/api/orders              # 200; upstream sees x-user-id
  curl -i -H "Authorization: Bearer $TOKEN" {base}/api/v1/users            # 403 at the gateway: not admin
  curl -i -X POST -H "Authorization: Bearer $TOKEN" {base}/api/v1/auth/logout   # 204
  curl -i -H "Authorization: Bearer $TOKEN" {base}/api/orders              # 401 urn:meshgate:problem:revoked

As the admin (the control plane's admin API through the gateway):
  ADMIN=$({login % (admin_user, admin_password or '<admin password>')})
  curl -s -H "Authorization: Bearer $ADMIN" {base}/api/v1/users

Static demo credentials (envoy/demo-plugin.json) still work:
  curl -i {base}/health                                                   # public: 200
  curl -i -H 'Authorization: Bearer {alice}' {base}/api/orders
  curl -i -H 'X-API-Key: {DEMO_API_KEY}' {base}/api/orders
  curl -s http://127.0.0.1:{admin_port}/stats?filter=meshgate.sync          # feed version, errors

Ctrl-C stops everything.
""",
            flush=True,
        )
        while all(p.poll() is None for p in (cp, envoy_proc, echo)):
            time.sleep(0.5)
        time.sleep(0.5)  # a Ctrl-C that stopped a child reaches us too: exit through it
        names = {id(cp): "control plane", id(envoy_proc): "Envoy", id(echo): "echo upstream"}
        gone = [f"{names[id(p)]} (status {p.returncode})" for p in (cp, envoy_proc, echo) if p.poll() is not None]
        say(f"{', '.join(gone)} exited; stopping")
        return 1
    except KeyboardInterrupt:
        print(file=sys.stderr)
        say("stopping")
        return 0
    finally:
        stop(envoy_proc)
        stop(echo)
        stop(cp)
        for f in work.iterdir():
            f.unlink()
        work.rmdir()


if __name__ == "__main__":
    sys.exit(main())
