#!/usr/bin/env python3
"""End-to-end tests of the meshgate filter inside a real Envoy (2 workers).

For each group of scenarios that needs its own plugin configuration, starts
the echo upstream (envoy/echo_upstream.py) and Envoy (`--concurrency 2 --disable-hot-restart`) on free
loopback ports, waits for the admin `/ready`, runs the checks, and always tears both
down (try/finally; SIGINT/SIGTERM end the run through the same path; the children also
get SIGTERM from the kernel if this process dies). Ports are never guessed: the echo
upstream binds port 0 and prints its address; Envoy's listener and admin bind port 0
and Envoy reports them (`--admin-address-path`, admin `/listeners`).

Groups:
  limits  rate limits: exact admission across workers, 429 fields, headers on allowed
          responses, a shadow rule; then the request pipeline (credentials, identity
          headers, path normalization)
  abuse   abuse lockout on a sensitive route, exempt health route
  badcfg  a bad plugin configuration: Envoy must exit non-zero naming the field
  sync    the control plane (`meshgate serve`, SQLite) + Envoy following its sync feed:
          signing keys arrive, revocation latency to both workers over 100 revocations
          (logout, token, session, user, API key; p50/p90/p99/max printed, p99 < 250 ms),
          feed stats, last good state while the control plane is down, resumed sync after
          its restart (envoy/e2e/sync_e2e.py)
  gateway the control plane + Envoy with the demo configuration, everything through the
          gateway: public/protected routes, login via Envoy -> identity headers, spoofed
          headers stripped, wrong role, a control-plane API key (by the feed) as X-API-Key
          and Bearer, service and admin keys, guest read-only, refresh and logout via Envoy
          -> old token refused, the filter's counters in /stats (envoy/e2e/gateway_e2e.py)
  replicas two control-plane replicas on one PostgreSQL (127.0.0.1:5432, throwaway database;
          skipped when unreachable), Envoy following replica B, 20 revocations made on A
          each refused on both workers within 1 s (envoy/e2e/replicas_e2e.py)
  attacks the attack corpus (SECURITY.md): forged and confused JWTs, header tricks, path
          tricks, API key near-misses and refusal timing (envoy/e2e/attacks.py)
  faults  fault injection: kill -9 of the control plane during key creation and signing-key
          rotation, sync feed responses delayed and cut mid-body (a TCP proxy), Envoy hot
          restart under traffic, SQLite on a full tmpfs, PostgreSQL restart under load
          (envoy/e2e/faults.py)
  credits credits and remaining-uses keys metered by the filter: a max_uses=7 key passes
          exactly 7 times over both workers, 5 granted credits buy exactly 5 metered
          requests, a refill arrives, usage survives a control-plane restart and is
          reported once (envoy/e2e/credits_e2e.py)

Output: one line per check, `ok <name>: <detail>` or `FAIL <name>: <detail>`, then
Envoy's log for any group with a failure, then exactly one line `N passed, M failed`.
Exit status 1 on any failure (2 when the run could not start at all).

Environment:
  ENVOY               Envoy binary   (default <repo>/.venv/bin/envoy; `make envoy-install`)
  MESHGATE_WASM       filter module  (default <repo>/target/wasm32-wasip1/release/meshgate_filter.wasm)
  MESHGATE_E2E_KEEP=1     keep the work directory (rendered bootstraps, logs)
  MESHGATE_E2E_VERBOSE=1  print Envoy's log even when every check passed
  MESHGATE_E2E_ONLY=a,b   run only these groups (limits, abuse, badcfg, sync, gateway, replicas,
                          attacks, faults, credits)
  MESHGATE_BIN        control plane binary for `sync` and `gateway` (default <repo>/target/debug/meshgate;
                      `cargo build -p meshgate`)

Python 3.11 standard library only; loopback only; bounded request counts and time.
"""

from __future__ import annotations

import base64
import ctypes
import hashlib
import hmac
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ENVOY_DIR = HERE.parent
REPO = ENVOY_DIR.parent
sys.path.insert(0, str(ENVOY_DIR))
import render as render_mod  # noqa: E402  (envoy/render.py)

sys.path.insert(0, str(HERE))
import sync_e2e  # noqa: E402  (envoy/e2e/sync_e2e.py: the `sync` group)
import gateway_e2e  # noqa: E402  (envoy/e2e/gateway_e2e.py: the `gateway` group)
import replicas_e2e  # noqa: E402  (envoy/e2e/replicas_e2e.py: the `replicas` group)
import attacks  # noqa: E402  (envoy/e2e/attacks.py: the `attacks` group)
import faults  # noqa: E402  (envoy/e2e/faults.py: the `faults` group)
import credits_e2e  # noqa: E402  (envoy/e2e/credits_e2e.py: the `credits` group)

ENVOY = os.environ.get("ENVOY") or str(REPO / ".venv" / "bin" / "envoy")
WASM = os.environ.get("MESHGATE_WASM") or str(
    REPO / "target" / "wasm32-wasip1" / "release" / "meshgate_filter.wasm"
)
if not os.path.isabs(WASM):
    WASM = str(REPO / WASM)

HTTP_TIMEOUT = 10  # seconds, per request
READY_TIMEOUT = 40  # seconds, Envoy start-up (V8 compiles the module in every VM)
DEADLINE = time.monotonic() + 600  # hard ceiling for the whole run (sync: ~90 s, gateway: ~30 s, faults: ~90 s, credits: ~40 s)

# --- test credentials (public, test-only) ----------------------------------------------
ISSUER, AUDIENCE, KID = "meshgate-e2e", "meshgate-e2e-api", "e2e-hs256"
SECRET = b"meshgate-e2e-hs256-secret-not-for-production!"
# The demo API key (envoy/README.md) and its SHA-256 digest.
API_KEY = "mg_2NPz4fHrjWQ6j6Mxfc1SRUFAiWCQwghHLULYAYgzb6yvH1rxR2"
API_KEY_DIGEST = hashlib.sha256(API_KEY.encode()).hexdigest()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint(sub: str, roles: list[str], ttl: int = 600) -> str:
    """An HS256 JWT for the e2e issuer."""
    now = int(time.time())
    claims = {
        "iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now, "exp": now + ttl,
        "jti": hashlib.sha256(f"{sub}{time.time_ns()}".encode()).hexdigest()[:24],
        "roles": roles, "scope": "e2e:read",
    }
    header = {"alg": "HS256", "typ": "JWT", "kid": KID}
    enc = lambda o: b64url(json.dumps(o, separators=(",", ":")).encode())  # noqa: E731
    signing_input = f"{enc(header)}.{enc(claims)}"
    sig = hmac.new(SECRET, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(sig)}"


ISSUERS = [{
    "issuer": ISSUER,
    "audiences": [AUDIENCE],
    "keys": [{"kty": "oct", "kid": KID, "alg": "HS256", "k": b64url(SECRET)}],
}]
KEYS = {"api_keys": [{
    "id": "e2e-key", "digest": API_KEY_DIGEST, "subject": "svc-e2e", "app_id": "e2e-app",
    "roles": ["reader"], "scopes": ["e2e:read"],
}]}

# --- plugin configurations --------------------------------------------------------------
LIMITS_CONFIG = {
    "realm": "meshgate-e2e",
    "routes": [
        {"name": "health", "path": {"exact": "/health"}, "policy": {"access": "public"}},
        {"name": "public", "path": {"prefix": "/public"}, "policy": {"access": "public"}},
        {"name": "limited", "path": {"prefix": "/limited"}, "policy": {"access": "public"}},
        {"name": "hdrs", "path": {"prefix": "/hdrs"}, "policy": {"access": "public"}},
        {"name": "shadowed", "path": {"prefix": "/shadowed"}, "policy": {"access": "public"}},
        {"name": "admin", "path": {"prefix": "/admin"}, "policy": {"roles_any": ["admin"]}},
        {"name": "api", "path": {"prefix": "/api"}, "policy": {"access": "authenticated"}},
    ],
    "default_policy": {"access": "deny"},
    "issuers": ISSUERS,
    "keys": KEYS,
    "rate_limits": {
        "rules": [
            {"name": "burst", "routes": ["limited"], "key": ["ip"], "limit": 100,
             "window_secs": 3600},
            {"name": "hdrs", "routes": ["hdrs"], "key": ["ip"], "limit": 50, "window_secs": 60},
            {"name": "trial", "routes": ["shadowed"], "key": ["ip"], "limit": 1,
             "window_secs": 3600, "shadow": True},
        ],
        "headers_on_allowed": True,
        "legacy_headers": True,
    },
}

ABUSE_CONFIG = {
    "realm": "meshgate-e2e",
    "routes": [
        {"name": "health", "path": {"exact": "/health"}, "policy": {"access": "public"}},
        {"name": "login", "path": {"exact": "/login"}, "policy": {"access": "public"}},
        {"name": "public", "path": {"prefix": "/public"}, "policy": {"access": "public"}},
        {"name": "api", "path": {"prefix": "/api"}, "policy": {"access": "authenticated"}},
    ],
    "default_policy": {"access": "deny"},
    "issuers": ISSUERS,
    "rate_limits": {
        "abuse": {"routes": ["login"], "exempt_routes": ["health"], "limit": 3,
                  "window_secs": 60, "violations": 2, "lockout_secs": 900},
    },
}

BAD_CONFIG = {
    "routes": [{"name": "health", "path": {"exact": "/health"}, "policy": {"access": "public"}}],
    "rate_limits": {"rules": [{"name": "zero", "limit": 0, "window_secs": 60}]},
}
BAD_CONFIG_FIELD = "rate_limits.rules[0].limit"


# --- results ----------------------------------------------------------------------------
class Results:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def check(self, cond: bool, name: str, detail: str = "") -> bool:
        if cond:
            self.passed += 1
            print(f"ok   {name}" + (f": {detail}" if detail else ""), flush=True)
        else:
            self.failed += 1
            print(f"FAIL {name}" + (f": {detail}" if detail else ""), flush=True)
        return bool(cond)


R = Results()


class Interrupted(Exception):
    pass


def on_signal(signum, _frame):
    # Once: a second Ctrl-C must not interrupt the clean-up this one starts.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    raise Interrupted(signal.Signals(signum).name)


# --- processes --------------------------------------------------------------------------
def _die_with_parent() -> None:
    """preexec_fn: the child gets SIGTERM when this process dies (Linux prctl)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _stop(proc: subprocess.Popen | None, grace: float = 5.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        proc.terminate()
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)
    except ProcessLookupError:
        pass


def noisy(line: str) -> bool:
    # Start-up inventory (extensions, header maps) printed by server.cc: noise here.
    return bool(re.search(r"\]\[main\] \[source/server/server\.cc:\d+\]   ", line))


class Stack:
    """Echo upstream + Envoy with one plugin configuration."""

    def __init__(self, name: str, plugin: dict, work: Path, control_plane_port: int = 1) -> None:
        self.name = name
        self.plugin = plugin
        self.control_plane_port = control_plane_port
        self.dir = work / name
        self.dir.mkdir(parents=True)
        self.echo: subprocess.Popen | None = None
        self.envoy: subprocess.Popen | None = None
        self.port = 0
        self.admin_port = 0
        self.failures_at_start = R.failed

    # start-up
    def start(self) -> None:
        env = dict(os.environ, MESHGATE_UPSTREAM_QUIET="1")
        self.echo = subprocess.Popen(
            [sys.executable, str(HERE.parent / "echo_upstream.py"), "--host", "127.0.0.1", "--port", "0"],
            stdout=subprocess.PIPE, stderr=open(self.dir / "echo.log", "wb"), text=True, env=env,
            preexec_fn=_die_with_parent,
        )
        line = self.echo.stdout.readline() if self.echo.stdout else ""
        m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
        if not m:
            raise RuntimeError(f"echo upstream did not start: {line!r}")
        upstream_port = int(m.group(1))

        bootstrap = render_mod.render(
            wasm=WASM, plugin_json=json.dumps(self.plugin), envoy_port=0, admin_port=0,
            upstream_port=upstream_port, control_plane_port=self.control_plane_port,
        )
        (self.dir / "envoy.yaml").write_text(bootstrap)
        addr_file = self.dir / "admin.addr"
        self.envoy = subprocess.Popen(
            [ENVOY, "-c", str(self.dir / "envoy.yaml"), "--concurrency", "2",
             "--disable-hot-restart", "--log-level", "info",
             # The access log (stdout) is flushed lazily; flush often so a failure's
             # dump shows the requests that led to it.
             "--file-flush-interval-msec", "100",
             "--admin-address-path", str(addr_file)],
            stdout=open(self.dir / "envoy.out", "wb"), stderr=open(self.dir / "envoy.log", "wb"),
            preexec_fn=_die_with_parent,
        )
        t0 = time.monotonic()
        while True:
            if self.envoy.poll() is not None:
                raise RuntimeError(f"Envoy exited during start-up (status {self.envoy.returncode})")
            if time.monotonic() - t0 > READY_TIMEOUT:
                raise RuntimeError(f"Envoy not ready after {READY_TIMEOUT} s")
            if not self.admin_port and addr_file.exists():
                text = addr_file.read_text().strip()
                if ":" in text:
                    self.admin_port = int(text.rsplit(":", 1)[1])
            if self.admin_port:
                try:
                    if self.admin("/ready")[0] == 200:
                        break
                except OSError:
                    pass
            time.sleep(0.1)
        listeners = json.loads(self.admin("/listeners?format=json")[1])
        for lst in listeners.get("listener_statuses", []):
            if lst.get("name") == "ingress":
                self.port = int(lst["local_address"]["socket_address"]["port_value"])
        if not self.port:
            raise RuntimeError(f"no ingress listener port in {listeners}")
        self.ready_secs = time.monotonic() - t0

    def stop(self) -> None:
        _stop(self.envoy)
        _stop(self.echo)
        if self.echo and self.echo.stdout:
            self.echo.stdout.close()

    # admin
    def admin(self, path: str) -> tuple[int, str]:
        c = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=HTTP_TIMEOUT)
        try:
            c.request("GET", path)
            r = c.getresponse()
            return r.status, r.read().decode("utf-8", "replace")
        finally:
            c.close()

    def stats(self, filt: str) -> dict[str, int]:
        # The filter sums its request counters and hands them to Envoy on its tick (1 s, or
        # the sync feed's 200 ms): wait one tick so the last requests are counted.
        time.sleep(1.1)
        status, text = self.admin(f"/stats?filter={filt}")
        out: dict[str, int] = {}
        for line in text.splitlines():
            name, sep, value = line.partition(": ")
            if sep and value.strip().isdigit():
                out[name.strip()] = int(value)
        return out

    def worker_cx(self) -> dict[int, int]:
        """downstream_cx_total of the ingress listener, per worker."""
        out: dict[int, int] = {}
        for name, value in self.stats("worker_").items():
            m = re.fullmatch(r"listener\.127\.0\.0\.1_\d+\.worker_(\d+)\.downstream_cx_total", name)
            if m:
                out[int(m.group(1))] = value
        return out

    def dump_log(self) -> None:
        print(f"=============== [{self.name}] envoy log (tail) ===============")
        try:
            lines = [l for l in (self.dir / "envoy.log").read_text(errors="replace").splitlines()
                     if not noisy(l)]
            print("\n".join(lines[-150:]))
        except OSError as e:
            print(f"(no log: {e})")
        print(f"=============== [{self.name}] envoy stdout / access log (tail) ===============")
        try:
            print("\n".join((self.dir / "envoy.out").read_text(errors="replace").splitlines()[-40:]))
        except OSError as e:
            print(f"(no access log: {e})")


# --- HTTP -------------------------------------------------------------------------------
class Resp:
    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status = status
        self.headers = {k.lower(): v for k, v in headers}
        self.body = body

    def json(self) -> dict:
        try:
            value = json.loads(self.body)
            return value if isinstance(value, dict) else {}
        except ValueError:
            return {}

    @property
    def upstream(self) -> dict:
        """Headers the echo upstream saw (empty when this is not the echo's answer)."""
        j = self.json()
        return j.get("headers", {}) if "method" in j else {}

    def problem(self) -> str:
        return str(self.json().get("type", ""))

    def short(self) -> str:
        body = self.body.decode("utf-8", "replace")
        if len(body) > 300:
            body = body[:300] + "..."
        return f"{self.status} headers={self.headers} body={body!r}"


def fetch(port: int, path: str, headers: dict | None = None, method: str = "GET",
          conn: http.client.HTTPConnection | None = None) -> Resp:
    own = conn is None
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=HTTP_TIMEOUT)
    try:
        c.request(method, path, headers=headers or {})
        r = c.getresponse()
        return Resp(r.status, r.getheaders(), r.read())
    finally:
        if own:
            c.close()


def hdr(resp: Resp, name: str) -> str:
    return resp.headers.get(name, "")


# --- group: limits + pipeline -------------------------------------------------------------
def burst(stack: Stack, total: int = 1000, threads: int = 20) -> dict:
    """`total` requests to /limited from `threads` keep-alive connections at once."""
    per = total // threads
    conns = [http.client.HTTPConnection("127.0.0.1", stack.port, timeout=HTTP_TIMEOUT)
             for _ in range(threads)]
    for c in conns:
        c.connect()  # all connections exist before the first request: both workers get some
    barrier = threading.Barrier(threads)
    lock = threading.Lock()
    out: dict = {"codes": {}, "sample429": None, "sample200": None, "errors": [], "reconnects": 0,
                 "others": []}

    def worker(i: int) -> None:
        c = conns[i]
        try:
            barrier.wait(timeout=HTTP_TIMEOUT)
            for j in range(per):
                sock_before = c.sock
                r = fetch(stack.port, f"/limited/{i}/{j}", conn=c)
                with lock:
                    if sock_before is None:
                        out["reconnects"] += 1
                    out["codes"][r.status] = out["codes"].get(r.status, 0) + 1
                    if r.status == 429 and out["sample429"] is None:
                        out["sample429"] = r
                    if r.status == 200 and out["sample200"] is None:
                        out["sample200"] = r
                    if r.status not in (200, 429) and len(out["others"]) < 3:
                        out["others"].append(f"/limited/{i}/{j} -> {r.short()}")
        except Exception as e:  # noqa: BLE001 - reported as a check failure
            with lock:
                out["errors"].append(f"conn {i}: {type(e).__name__}: {e}")
        finally:
            c.close()

    ts = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    t0 = time.monotonic()
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=60)
    out["secs"] = time.monotonic() - t0
    out["hung"] = sum(t.is_alive() for t in ts)
    return out


def scenario_burst(stack: Stack) -> None:
    name = "ratelimit/burst"
    before = stack.worker_cx()
    res = burst(stack)
    after = stack.worker_cx()
    codes = res["codes"]
    R.check(not res["errors"] and not res["hung"], f"{name}: 1000 requests over 20 keep-alive connections",
            f"{sum(codes.values())} answered in {res['secs']:.2f}s, reconnects={res['reconnects']}"
            + (f", errors={res['errors'][:3]}" if res["errors"] else "")
            + (f", {res['hung']} threads hung" if res["hung"] else ""))
    R.check(codes.get(200) == 100 and codes.get(429) == 900 and len(codes) == 2,
            f"{name}: exactly 100 admitted, 900 refused", f"status counts {dict(sorted(codes.items()))}"
            + (f"; unexpected: {res['others']}" if res["others"] else ""))
    delta = {w: after.get(w, 0) - before.get(w, 0) for w in sorted(set(after) | set(before))}
    R.check(len(delta) == 2 and all(v > 0 for v in delta.values()),
            f"{name}: both workers served connections",
            "downstream_cx_total per worker during the burst: "
            + ", ".join(f"worker_{w}={v}" for w, v in delta.items()))
    r = res["sample429"]
    if r is None:
        R.check(False, f"{name}: 429 fields", "no 429 seen")
    else:
        policy, state, retry = hdr(r, "ratelimit-policy"), hdr(r, "ratelimit"), hdr(r, "retry-after")
        R.check(hdr(r, "content-type") == "application/problem+json"
                and r.problem() == "urn:meshgate:problem:rate-limited",
                f"{name}: 429 is problem+json rate-limited",
                f"content-type={hdr(r, 'content-type')!r} type={r.problem()!r}")
        R.check(policy == '"burst";q=100;w=3600', f"{name}: 429 ratelimit-policy", repr(policy))
        R.check(bool(re.fullmatch(r'"burst";r=0;t=\d+', state)), f"{name}: 429 ratelimit has r=0", repr(state))
        R.check(retry.isdigit() and int(retry) >= 1, f"{name}: 429 retry-after numeric >= 1", repr(retry))
    s = stack.stats("wasmcustom")
    allowed = s.get("wasmcustom.meshgate.ratelimit.burst.allowed")
    limited = s.get("wasmcustom.meshgate.ratelimit.burst.limited")
    denied = s.get("wasmcustom.meshgate.denied.rate-limited")
    R.check(allowed == 100 and limited == 900, f"{name}: filter counters",
            f"meshgate.ratelimit.burst.allowed={allowed} .limited={limited}"
            f" (meshgate.denied.rate-limited={denied})")


def scenario_headers_on_allowed(stack: Stack) -> None:
    name = "ratelimit/headers-on-allowed"
    r = fetch(stack.port, "/hdrs/x")
    h = r.headers
    want = ["ratelimit", "ratelimit-policy", "x-ratelimit-limit", "x-ratelimit-remaining",
            "x-ratelimit-reset"]
    missing = [k for k in want if k not in h]
    R.check(r.status == 200 and "method" in r.json() and not missing,
            f"{name}: allowed response carries RateLimit and X-RateLimit-* fields",
            f"status={r.status} " + ", ".join(f"{k}={h.get(k)!r}" for k in want))
    R.check(h.get("ratelimit-policy") == '"hdrs";q=50;w=60'
            and bool(re.fullmatch(r'"hdrs";r=49;t=\d+', h.get("ratelimit", "")))
            and h.get("x-ratelimit-limit") == "50" and h.get("x-ratelimit-remaining") == "49"
            and h.get("x-ratelimit-reset", "").isdigit(),
            f"{name}: values after the first request (q=50, r=49)",
            f"ratelimit={h.get('ratelimit')!r} x-ratelimit-remaining={h.get('x-ratelimit-remaining')!r}")
    R.check("retry-after" not in h, f"{name}: no retry-after on an allowed response",
            repr(h.get("retry-after")))


def scenario_shadow(stack: Stack) -> None:
    name = "ratelimit/shadow"
    codes = [fetch(stack.port, f"/shadowed/{i}").status for i in range(10)]
    R.check(codes == [200] * 10, f"{name}: limit-1 shadow rule never refuses", f"statuses {codes}")
    s = stack.stats("wasmcustom")
    sl = s.get("wasmcustom.meshgate.ratelimit.trial.shadow_limited")
    al = s.get("wasmcustom.meshgate.ratelimit.trial.allowed")
    lim = s.get("wasmcustom.meshgate.ratelimit.trial.limited")
    R.check(sl == 9 and al == 1 and lim == 0, f"{name}: counters",
            f"meshgate.ratelimit.trial.shadow_limited={sl} .allowed={al} .limited={lim}")


def scenario_pipeline(stack: Stack) -> None:
    p = stack.port
    name = "pipeline"
    alice, root = mint("alice", ["user"]), mint("root", ["admin", "user"])

    r = fetch(p, "/health")
    R.check(r.status == 200 and "x-auth-method" not in r.upstream,
            f"{name}: public route without credentials -> 200, anonymous", r.short() if r.status != 200 else
            f"upstream identity headers: {sorted(k for k in r.upstream if k.startswith('x-user') or k.startswith('x-auth'))}")

    r = fetch(p, "/public/x", {"X-User-ID": "mallory", "X-User-Roles": "admin", "X-Auth-Method": "jwt"})
    u = r.upstream
    R.check(r.status == 200 and not {"x-user-id", "x-user-roles", "x-auth-method"} & set(u),
            f"{name}: client-sent identity headers stripped (public route)",
            f"status={r.status} upstream x-user-id={u.get('x-user-id')!r} x-user-roles={u.get('x-user-roles')!r}")

    r = fetch(p, "/api/orders")
    www = hdr(r, "www-authenticate")
    R.check(r.status == 401 and www.startswith("Bearer realm="),
            f"{name}: protected route without credentials -> 401 Bearer challenge",
            f"status={r.status} www-authenticate={www!r} type={r.problem()!r}")

    r = fetch(p, "/api/orders", {"Authorization": f"Bearer {alice}"})
    u = r.upstream
    R.check(r.status == 200 and u.get("x-user-id") == "alice" and u.get("x-user-roles") == "user"
            and u.get("x-auth-method") == "jwt",
            f"{name}: valid HS256 JWT -> 200 with identity headers",
            f"status={r.status} upstream x-user-id={u.get('x-user-id')!r} x-user-roles={u.get('x-user-roles')!r}"
            f" x-auth-method={u.get('x-auth-method')!r}")

    r = fetch(p, "/api/orders", {"Authorization": f"Bearer {alice}", "X-User-ID": "mallory",
                                 "X-User-Roles": "admin"})
    u = r.upstream
    R.check(r.status == 200 and u.get("x-user-id") == "alice" and u.get("x-user-roles") == "user",
            f"{name}: client-sent x-user-id never reaches upstream (JWT route)",
            f"status={r.status} upstream x-user-id={u.get('x-user-id')!r} x-user-roles={u.get('x-user-roles')!r}")

    r = fetch(p, "/admin/users", {"Authorization": f"Bearer {alice}"})
    www = hdr(r, "www-authenticate")
    R.check(r.status == 403 and 'error="insufficient_scope"' in www,
            f"{name}: wrong role -> 403 insufficient_scope",
            f"status={r.status} www-authenticate={www!r} type={r.problem()!r}")

    r = fetch(p, "/api/orders", {"X-API-Key": API_KEY})
    u = r.upstream
    R.check(r.status == 200 and u.get("x-auth-method") == "api_key" and "x-api-key" not in u
            and u.get("x-key-id") == "e2e-key" and u.get("x-user-id") == "svc-e2e",
            f"{name}: API key in X-API-Key -> 200 api_key, key not forwarded",
            f"status={r.status} upstream x-auth-method={u.get('x-auth-method')!r} x-key-id={u.get('x-key-id')!r}"
            f" x-api-key present={'x-api-key' in u}")

    r = fetch(p, "/api/orders", {"Authorization": f"Bearer {API_KEY}"})
    u = r.upstream
    R.check(r.status == 200 and u.get("x-auth-method") == "api_key" and "authorization" not in u
            and u.get("x-key-id") == "e2e-key",
            f"{name}: API key as Authorization: Bearer mg_... -> 200 api_key, not forwarded",
            f"status={r.status} upstream x-auth-method={u.get('x-auth-method')!r}"
            f" authorization present={'authorization' in u}")

    r = fetch(p, "/%61dmin", {"Authorization": f"Bearer {root}"})
    j = r.json()
    R.check(r.status == 200 and j.get("path") == "/admin" and r.upstream.get("x-user-id") == "root",
            f"{name}: /%61dmin is /admin (admin token -> 200, upstream path /admin)",
            f"status={r.status} upstream path={j.get('path')!r}")
    r = fetch(p, "/%61dmin", {"Authorization": f"Bearer {alice}"})
    R.check(r.status == 403 and r.problem() == "urn:meshgate:problem:insufficient-role",
            f"{name}: /%61dmin matches the admin route (user token -> 403 insufficient-role)",
            f"status={r.status} type={r.problem()!r}")

    r = fetch(p, "/admin%2f", {"Authorization": f"Bearer {root}"})
    R.check(r.status == 400 and r.problem() == "urn:meshgate:problem:invalid-path",
            f"{name}: /admin%2f -> 400 invalid-path", f"status={r.status} type={r.problem()!r}")


def group_limits(stack: Stack) -> None:
    scenario_burst(stack)  # first: the worker counters and filter counters start at 0
    scenario_headers_on_allowed(stack)
    scenario_shadow(stack)
    scenario_pipeline(stack)


# --- group: abuse ------------------------------------------------------------------------
def group_abuse(stack: Stack) -> None:
    p = stack.port
    name = "abuse"
    codes = [fetch(p, "/login", method="POST").status for _ in range(3)]
    R.check(codes == [200] * 3, f"{name}: first 3 logins admitted", f"statuses {codes}")

    r = fetch(p, "/login", method="POST")
    R.check(r.status == 429 and r.problem() == "urn:meshgate:problem:rate-limited",
            f"{name}: 4th login -> 429 rate-limited (violation 1 of 2)",
            f"status={r.status} type={r.problem()!r} retry-after={hdr(r, 'retry-after')!r}"
            f" ratelimit={hdr(r, 'ratelimit')!r}")

    r = fetch(p, "/login", method="POST")
    R.check(r.status == 429 and r.problem() == "urn:meshgate:problem:locked-out"
            and hdr(r, "retry-after") == "900",
            f"{name}: 5th login -> 429 locked-out, retry-after 900 (violation 2 of 2)",
            f"status={r.status} type={r.problem()!r} retry-after={hdr(r, 'retry-after')!r}")

    r = fetch(p, "/public/page")
    ra = hdr(r, "retry-after")
    R.check(r.status == 429 and r.problem() == "urn:meshgate:problem:locked-out"
            and ra.isdigit() and 890 <= int(ra) <= 900,
            f"{name}: other public route locked out too",
            f"status={r.status} type={r.problem()!r} retry-after={ra!r}")

    r = fetch(p, "/api/orders", {"Authorization": f"Bearer {mint('alice', ['user'])}"})
    R.check(r.status == 429 and r.problem() == "urn:meshgate:problem:locked-out",
            f"{name}: authenticated route locked out even with a valid token",
            f"status={r.status} type={r.problem()!r}")

    r = fetch(p, "/login", method="POST")
    R.check(r.status == 429 and r.problem() == "urn:meshgate:problem:locked-out",
            f"{name}: login itself stays locked out", f"status={r.status} type={r.problem()!r}")

    r = fetch(p, "/health")
    R.check(r.status == 200 and "method" in r.json(), f"{name}: exempt /health still 200",
            f"status={r.status}")

    s = stack.stats("wasmcustom")
    a, l = s.get("wasmcustom.meshgate.ratelimit.abuse.allowed"), s.get("wasmcustom.meshgate.ratelimit.abuse.limited")
    lo = s.get("wasmcustom.meshgate.denied.locked-out")
    R.check(a == 3 and l == 2, f"{name}: filter counters",
            f"meshgate.ratelimit.abuse.allowed={a} .limited={l}, meshgate.denied.locked-out={lo}")


# --- group: bad configuration -------------------------------------------------------------
def group_badcfg(work: Path) -> None:
    name = "badcfg"
    d = work / "badcfg"
    d.mkdir(parents=True)
    (d / "envoy.yaml").write_text(render_mod.render(
        wasm=WASM, plugin_json=json.dumps(BAD_CONFIG), envoy_port=0, admin_port=0,
        upstream_port=1, control_plane_port=1,
    ))
    log = d / "envoy.log"
    proc = subprocess.Popen(
        [ENVOY, "-c", str(d / "envoy.yaml"), "--concurrency", "2", "--disable-hot-restart",
         "--log-level", "info"],
        stdout=subprocess.DEVNULL, stderr=open(log, "wb"), preexec_fn=_die_with_parent,
    )
    try:
        rc = proc.wait(timeout=READY_TIMEOUT)
    except subprocess.TimeoutExpired:
        rc = None
    finally:
        _stop(proc)
    text = log.read_text(errors="replace")
    lines = [l for l in text.splitlines() if "invalid plugin configuration at" in l]
    # > 0: an exit status, not death by a signal (a crash is not a refusal).
    R.check(rc is not None and rc > 0, f"{name}: Envoy exits non-zero on a bad plugin config",
            f"exit status {rc}" if rc is not None else f"still running after {READY_TIMEOUT}s")
    want = f"invalid plugin configuration at `{BAD_CONFIG_FIELD}`"
    hit = [l for l in lines if want in l]
    shown = (hit or lines or ["(no such line)"])[0]
    shown = shown[shown.find("meshgate:"):] if "meshgate:" in shown else shown
    R.check(bool(hit), f"{name}: log names the field `{BAD_CONFIG_FIELD}`", shown[:200])
    if not (rc is not None and rc > 0 and hit):
        print(f"=============== [{name}] envoy log (tail) ===============")
        print("\n".join([l for l in text.splitlines() if not noisy(l)][-60:]))


# --- main ---------------------------------------------------------------------------------
def run_group(work: Path, name: str, plugin: dict, body) -> None:
    stack = Stack(name, plugin, work)
    failed_before = R.failed
    try:
        try:
            stack.start()
        except RuntimeError as e:
            R.check(False, f"{name}: start Envoy + echo upstream", str(e))
            return
        print(f"--- {name}: envoy pid {stack.envoy.pid} on 127.0.0.1:{stack.port} "
              f"(admin :{stack.admin_port}), ready in {stack.ready_secs:.1f}s", flush=True)
        try:
            body(stack)
        except (OSError, http.client.HTTPException, ValueError, KeyError) as e:
            R.check(False, f"{name}: scenario aborted", f"{type(e).__name__}: {e}")
    finally:
        if R.failed > failed_before or os.environ.get("MESHGATE_E2E_VERBOSE"):
            stack.dump_log()
        stack.stop()


def main() -> int:
    if not os.access(ENVOY, os.X_OK):
        print(f"e2e: no Envoy at {ENVOY} (run `make envoy-install`)", file=sys.stderr)
        return 2
    if not os.path.isfile(WASM):
        print(f"e2e: no filter module at {WASM} (run `make build`)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, on_signal)
    only = {g for g in os.environ.get("MESHGATE_E2E_ONLY", "").split(",") if g}
    work = Path(tempfile.mkdtemp(prefix="meshgate-e2e."))
    t0 = time.monotonic()
    status = 1
    try:
        print(f"e2e: envoy {ENVOY}", flush=True)
        print(f"e2e: filter {WASM}", flush=True)
        groups = [
            ("limits", lambda: run_group(work, "limits", LIMITS_CONFIG, group_limits)),
            ("abuse", lambda: run_group(work, "abuse", ABUSE_CONFIG, group_abuse)),
            ("badcfg", lambda: group_badcfg(work)),
            ("sync", lambda: sync_e2e.group_sync(sys.modules[__name__], work)),
            ("gateway", lambda: gateway_e2e.group_gateway(sys.modules[__name__], work)),
            ("replicas", lambda: replicas_e2e.group_replicas(sys.modules[__name__], work)),
            ("attacks", lambda: attacks.group_attacks(sys.modules[__name__], work)),
            ("faults", lambda: faults.group_faults(sys.modules[__name__], work)),
            ("credits", lambda: credits_e2e.group_credits(sys.modules[__name__], work)),
        ]
        for gname, fn in groups:
            if only and gname not in only:
                continue
            if time.monotonic() > DEADLINE:
                R.check(False, f"{gname}: skipped", "run deadline passed")
                continue
            fn()
        status = 1 if R.failed else 0
    except Interrupted as e:
        R.check(False, "run interrupted", f"by {e}")
        status = 130
    finally:
        if os.environ.get("MESHGATE_E2E_KEEP"):
            print(f"e2e: work directory kept at {work}", flush=True)
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"e2e: {time.monotonic() - t0:.1f}s", flush=True)
    print(f"{R.passed} passed, {R.failed} failed", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
