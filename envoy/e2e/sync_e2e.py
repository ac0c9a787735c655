"""The `sync` group of envoy/e2e/run.py: the control plane and Envoy together.

Starts `meshgate serve` (SQLite in the run's work directory, a free loopback port) and
Envoy (`--concurrency 2`) whose plugin configuration holds no signing keys and no API
keys: everything it accepts comes from the control plane's sync feed
(`GET /api/v1/sync?since=V&wait=W`, polled through the bootstrap's `control_plane`
cluster with a `sync`-scoped API key). Then:

  keys      a freshly logged-in user's access token is accepted (signing keys arrived)
  workers   keep-alive connections are opened until both Envoy workers hold at least
            two (attributed one by one with the admin `/stats?filter=worker` counters)
  latency   100 revocations, alternating logout, `token` (jti), `session` (sid), `user`
            and `key` (an API key presented as X-API-Key): each credential is first
            confirmed on every connection, then revoked through the control plane (half
            of them "settled": 300 ms after the previous feed response; half "burst":
            at once), and
            every connection is polled every ~2 ms until it answers 401
            `urn:meshgate:problem:revoked`; the time from the revocation's response to
            the last connection's refusal is one sample (5 s bound: a failure).
            p50/p90/p99/max are printed; the check is p99 < 50 ms (the target).
  stats     wasmcustom.meshgate.sync.version > 0, .sync.errors small
  outage    SIGTERM to the control plane: Envoy keeps serving a still-valid token
            (last good state); after a restart a new revocation is enforced again

Imported by run.py, which passes itself as `h` (checks, Stack, fetch, process helpers).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import secrets
import signal
import socket
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
MESHGATE_BIN = str(REPO / (os.environ.get("MESHGATE_BIN") or "target/debug/meshgate"))

REVOKED = "urn:meshgate:problem:revoked"
UNKNOWN_KEY = "urn:meshgate:problem:unknown-api-key"
ITERATIONS = 100
KINDS = ["logout", "token", "session", "user", "key"]
POLL_EVERY = 0.002  # seconds between rounds over the connections
# Iterations alternate in blocks of len(KINDS): "settled" ones wait this long after the
# credential was confirmed before revoking (the filter's poller re-arms its long-poll on
# its next 200 ms tick after each feed response), "burst" ones revoke at once, right
# after the previous revocation was seen (as a burst of revocations would).
SETTLE = 0.3
MEASURE_BOUND = 5.0  # seconds: a slower refusal counts as a failure
P99_BOUND_MS = 50.0
CONNS_PER_WORKER = 2
GROUP_BUDGET = 90.0  # seconds; the latency loop stops early rather than overrun
ADMIN_PASSWORD = "e2e-admin-" + secrets.token_hex(8)
USER_PASSWORD = "e2e-user-password"


def free_port() -> int:
    # The control plane needs a port known before it starts (the Envoy bootstrap's
    # control_plane cluster, MESHGATE_ISSUER) and the same one after its restart.
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def claims(token: str) -> dict:
    try:
        payload = token.split(".")[1]
        return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}


def pct(sorted_ms: list[float], p: float) -> float:
    """Nearest-rank percentile of a sorted list."""
    if not sorted_ms:
        return float("nan")
    k = max(0, min(len(sorted_ms) - 1, int(-(-p * len(sorted_ms) // 100)) - 1))
    return sorted_ms[k]


class ControlPlane:
    """`meshgate serve` on a fixed loopback port, data in `dir`."""

    def __init__(self, h, dir: Path) -> None:
        self.h = h
        self.dir = dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.master_key = secrets.token_hex(32)
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        # Subclasses may point it elsewhere (e.g. PostgreSQL) and rename it.
        self.database_url = f"sqlite://{self.dir / 'm.db'}?mode=rwc"
        self.label = "control plane"

    def start(self, timeout: float = 30.0) -> float:
        self.starts += 1
        env = dict(
            os.environ,
            MESHGATE_LISTEN=f"127.0.0.1:{self.port}",
            DATABASE_URL=self.database_url,
            MESHGATE_DATA_DIR=str(self.dir),
            MESHGATE_ADMIN_PASSWORD=ADMIN_PASSWORD,
            MESHGATE_MASTER_KEY=self.master_key,
            MESHGATE_ISSUER=self.issuer,
            # Logins are part of every iteration: keep argon2 cheap (debug build, 2 cores).
            MESHGATE_ARGON2_MEMORY_KIB="1024",
            MESHGATE_ARGON2_ITERATIONS="1",
            RUST_LOG=os.environ.get("RUST_LOG", "info"),
        )
        log = open(self.dir / f"cp.{self.starts}.log", "wb")
        self.proc = subprocess.Popen(
            [MESHGATE_BIN, "serve"], stdout=log, stderr=subprocess.STDOUT, env=env,
            preexec_fn=self.h._die_with_parent,
        )
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.label} exited during start-up (status {self.proc.returncode})")
            try:
                if self.call("GET", "/health", timeout=1)[0] == 200:
                    return time.monotonic() - t0
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{self.label} not healthy after {timeout:.0f} s")

    def stop(self) -> tuple[int | None, float]:
        """SIGTERM; returns (exit status, seconds to exit)."""
        if self.proc is None or self.proc.poll() is not None:
            return (self.proc.returncode if self.proc else None), 0.0
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait(timeout=5)
        return rc, time.monotonic() - t0

    def call(self, method: str, path: str, body: dict | None = None, token: str | None = None,
             timeout: float | None = None) -> tuple[int, dict]:
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout or self.h.HTTP_TIMEOUT)
        try:
            headers = {}
            data = None
            if body is not None:
                data = json.dumps(body).encode()
                headers["Content-Type"] = "application/json"
            if token:
                headers["Authorization"] = f"Bearer {token}"
            c.request(method, path, body=data, headers=headers)
            r = c.getresponse()
            raw = r.read()
            try:
                value = json.loads(raw) if raw else {}
            except ValueError:
                value = {"_raw": raw.decode("utf-8", "replace")[:300]}
            return r.status, value if isinstance(value, dict) else {"_list": value}
        finally:
            c.close()

    def login(self, username: str, password: str) -> str:
        status, body = self.call("POST", "/api/v1/auth/login", {"username": username, "password": password})
        if status != 200 or "access_token" not in body:
            raise RuntimeError(f"login {username}: {status} {body}")
        return body["access_token"]

    def log_tail(self, n: int = 60) -> str:
        out = []
        for f in sorted(self.dir.glob("cp.*.log")):
            lines = f.read_text(errors="replace").splitlines()
            out.append(f"--- {f.name} ---")
            out.extend(lines[-n:])
        return "\n".join(out)


def sync_plugin(issuer: str, sync_key: str) -> dict:
    return {
        "realm": "meshgate-e2e",
        "routes": [
            {"name": "health", "path": {"exact": "/health"}, "policy": {"access": "public"}},
            {"name": "api", "path": {"prefix": "/api"}, "policy": {"access": "authenticated"}},
        ],
        "default_policy": {"access": "deny"},
        # No keys: the signing keys and API keys come from the feed.
        "issuers": [{"issuer": issuer, "audiences": ["meshgate"]}],
        "sync": {"cluster": "control_plane", "api_key": sync_key, "wait_secs": 20},
    }


class Conns:
    """Keep-alive connections to Envoy, at least `per_worker` on each worker."""

    def __init__(self, h, stack, per_worker: int = CONNS_PER_WORKER, tries: int = 24) -> None:
        self.h = h
        self.stack = stack
        self.conns: list[http.client.HTTPConnection] = []
        self.worker_of: list[int] = []
        self.socks: list = []
        spare: list[http.client.HTTPConnection] = []
        for _ in range(tries):
            before = stack.worker_cx()
            c = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=h.HTTP_TIMEOUT)
            h.fetch(stack.port, "/health", conn=c)  # the connection is accepted by now
            after = stack.worker_cx()
            grew = [w for w in after if after[w] - before.get(w, 0) == 1]
            if len(grew) != 1 or sum(after.values()) - sum(before.values()) != 1:
                spare.append(c)  # not attributable (another connection raced): set aside
                continue
            w = grew[0]
            if self.worker_of.count(w) >= per_worker:
                spare.append(c)
            else:
                self.conns.append(c)
                self.worker_of.append(w)
                self.socks.append(c.sock)
            if len(set(self.worker_of)) >= 2 and all(self.worker_of.count(x) >= per_worker
                                                     for x in set(self.worker_of)):
                break
        for c in spare:
            c.close()
        self.cx_after_setup = stack.worker_cx()

    def per_worker(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for w in self.worker_of:
            out[w] = out.get(w, 0) + 1
        return out

    def reconnected(self) -> int:
        return sum(1 for c, s in zip(self.conns, self.socks) if c.sock is not s)

    def get(self, i: int, headers: dict):
        return self.h.fetch(self.stack.port, "/api/orders", headers, conn=self.conns[i])

    def all_status(self, headers: dict) -> list:
        return [self.get(i, headers) for i in range(len(self.conns))]

    def wait_all(self, headers: dict, ok, bound: float, t0: float | None = None) -> tuple[float | None, list]:
        """Polls every connection every ~2 ms until `ok(resp)` holds on each.
        Returns (seconds from t0 to the last connection's first `ok`, or None on
        timeout; the last response per connection)."""
        t0 = time.perf_counter() if t0 is None else t0
        pending = set(range(len(self.conns)))
        last: list = [None] * len(self.conns)
        done_at = 0.0
        while pending:
            round_start = time.perf_counter()
            for i in sorted(pending):
                r = self.get(i, headers)
                last[i] = r
                if ok(r):
                    pending.discard(i)
                    done_at = max(done_at, time.perf_counter() - t0)
            if not pending:
                break
            now = time.perf_counter()
            if now - t0 > bound:
                return None, last
            time.sleep(max(0.0, POLL_EVERY - (now - round_start)))
        return done_at, last

    def close(self) -> None:
        for c in self.conns:
            c.close()


def is_200(r) -> bool:
    return r.status == 200


def refused_revoked(r) -> bool:
    return r.status == 401 and r.problem() == REVOKED


def refused_key(r) -> bool:
    # A revoked API key comes in the feed both as a removed digest and as a `key`
    # revocation: the filter may answer `revoked` or (record gone) `unknown-api-key`.
    return r.status == 401 and r.problem() in (REVOKED, UNKNOWN_KEY)


def group_sync(h, work: Path) -> None:
    R = h.R
    name = "sync"
    t_group = time.monotonic()
    if not os.access(MESHGATE_BIN, os.X_OK):
        R.check(False, f"{name}: control plane binary", f"no {MESHGATE_BIN} (run `cargo build -p meshgate`)")
        return
    cp = ControlPlane(h, work / "sync-cp")
    stack = None
    conns = None
    failed_before = R.failed
    try:
        try:
            secs = cp.start()
        except RuntimeError as e:
            R.check(False, f"{name}: start the control plane", str(e))
            return
        print(f"--- {name}: control plane pid {cp.proc.pid} on 127.0.0.1:{cp.port}, healthy in {secs:.1f}s",
              flush=True)
        admin = cp.login("admin", ADMIN_PASSWORD)
        status, body = cp.call("POST", "/api/v1/apikeys",
                               {"name": "e2e sync", "scopes": ["sync"], "expires_in_days": 1}, admin)
        sync_key = body.get("key", "")
        if not R.check(status == 201 and sync_key.startswith("mg_"), f"{name}: admin creates a sync key",
                       f"POST /api/v1/apikeys -> {status}" + ("" if status == 201 else f" {body}")):
            return
        # Feed sanity, straight from the control plane (what the filter will get).
        status, snap = cp.call("GET", "/api/v1/sync?wait=0", token=sync_key)
        R.check(status == 200 and snap.get("kind") == "snapshot" and snap.get("signing_keys"),
                f"{name}: feed answers the sync key with a snapshot",
                f"status={status} version={snap.get('version')} signing_keys={len(snap.get('signing_keys', []))}"
                f" api_keys={len(snap.get('api_keys', []))}" + ("" if status == 200 else f" {snap}"))

        # Users: alice for logout/token/session; one per `user` revocation (a user
        # revocation also refuses tokens issued within the same second).
        users = ["alice"] + [f"u{i}" for i in range(ITERATIONS // len(KINDS) + 2)]
        ids: dict[str, str] = {}
        for u in users:
            status, body = cp.call("POST", "/api/v1/users", {"username": u, "password": USER_PASSWORD}, admin)
            if status not in (200, 201):
                R.check(False, f"{name}: create user {u}", f"{status} {body}")
                return
            ids[u] = body.get("id", "")

        stack = h.Stack(name, sync_plugin(cp.issuer, sync_key), work, control_plane_port=cp.port)
        try:
            stack.start()
        except RuntimeError as e:
            R.check(False, f"{name}: start Envoy + echo upstream", str(e))
            return
        print(f"--- {name}: envoy pid {stack.envoy.pid} on 127.0.0.1:{stack.port} "
              f"(admin :{stack.admin_port}), ready in {stack.ready_secs:.1f}s", flush=True)

        # Signing keys arrive: a fresh login's token is accepted.
        token = cp.login("alice", USER_PASSWORD)
        t0 = time.perf_counter()
        deadline = t0 + 20
        r = None
        while time.perf_counter() < deadline:
            r = h.fetch(stack.port, "/api/orders", {"Authorization": f"Bearer {token}"})
            if r.status == 200:
                break
            time.sleep(0.05)
        ok = r is not None and r.status == 200 and r.upstream.get("x-user-id") == ids["alice"]
        R.check(ok, f"{name}: a control-plane token is accepted (signing keys came from the feed)",
                f"after {time.perf_counter() - t0:.2f}s since Envoy ready: status={r.status if r else None}"
                f" type={r.problem() if r else ''!r} x-user-id={r.upstream.get('x-user-id') if r else None!r}")
        if not ok:
            return

        conns = Conns(h, stack)
        per = conns.per_worker()
        R.check(len(per) >= 2 and all(v >= 1 for v in per.values()),
                f"{name}: keep-alive connections on both workers",
                f"{len(conns.conns)} connections: " + ", ".join(f"worker_{w}={n}" for w, n in sorted(per.items())))
        if len(per) < 2:
            return
        auth = {"Authorization": f"Bearer {token}"}
        rs = conns.all_status(auth)
        R.check(all(x.status == 200 for x in rs), f"{name}: the token passes on every connection",
                f"statuses {[x.status for x in rs]}")

        # --- revocation latency ---
        lat: dict[str, list[float]] = {k: [] for k in KINDS}
        by_regime: dict[str, list[float]] = {"settled": [], "burst": []}
        slow: list[str] = []
        add_lat: list[float] = []
        slugs: dict[str, int] = {}
        errors: list[str] = []
        user_i = 0
        done = 0
        for it in range(ITERATIONS):
            if time.monotonic() - t_group > GROUP_BUDGET - 25:
                errors.append(f"stopped after {it} iterations (group time budget)")
                break
            kind = KINDS[it % len(KINDS)]
            regime = "settled" if (it // len(KINDS)) % 2 == 0 else "burst"
            try:
                if kind == "key":
                    status, body = cp.call("POST", "/api/v1/apikeys",
                                           {"name": f"e2e-{it}", "owner_id": ids["alice"], "scopes": ["e2e"],
                                            "expires_in_days": 1}, admin)
                    if status != 201:
                        errors.append(f"#{it} create key: {status} {body}")
                        continue
                    key_id, cred = body["id"], {"X-API-Key": body["key"]}
                    t_add = time.perf_counter()
                    secs, last = conns.wait_all(cred, is_200, MEASURE_BOUND, t_add)
                    if secs is None:
                        errors.append(f"#{it} new API key not accepted within {MEASURE_BOUND}s: "
                                      f"{[x.short()[:120] for x in last if x and x.status != 200]}")
                        continue
                    add_lat.append(secs * 1000)
                    revoke = ("POST", "/api/v1/revocations", {"kind": "key", "value": key_id}, admin)
                else:
                    user = "alice"
                    if kind == "user":
                        user = f"u{user_i}"
                        user_i += 1
                    tok = cp.login(user, USER_PASSWORD)
                    c = claims(tok)
                    cred = {"Authorization": f"Bearer {tok}"}
                    secs, last = conns.wait_all(cred, is_200, MEASURE_BOUND)
                    if secs is None:
                        errors.append(f"#{it} fresh token not accepted: "
                                      f"{[x.short()[:120] for x in last if x and x.status != 200]}")
                        continue
                    revoke = {
                        "logout": ("POST", "/api/v1/auth/logout", None, tok),
                        "token": ("POST", "/api/v1/revocations", {"kind": "token", "value": c.get("jti")}, admin),
                        "session": ("POST", "/api/v1/revocations", {"kind": "session", "value": c.get("sid")}, admin),
                        "user": ("POST", "/api/v1/revocations", {"kind": "user", "value": c.get("sub")}, admin),
                    }[kind]
                method, path, body, bearer = revoke
                if regime == "settled":
                    time.sleep(SETTLE)
                status, resp = cp.call(method, path, body, bearer)
                t_rev = time.perf_counter()
                if status not in (201, 204):
                    errors.append(f"#{it} {kind}: {method} {path} -> {status} {resp}")
                    continue
                secs, last = conns.wait_all(cred, refused_key if kind == "key" else refused_revoked,
                                            MEASURE_BOUND, t_rev)
                for x in last:
                    if x is not None and x.status == 401:
                        slug = x.problem().rsplit(":", 1)[-1]
                        slugs[f"{kind}:{slug}"] = slugs.get(f"{kind}:{slug}", 0) + 1
                if secs is None:
                    slow.append(f"#{it} {kind}: not refused on every connection within {MEASURE_BOUND}s; last "
                                + "; ".join(f"{x.status} {x.problem()}" for x in last if x))
                    continue
                lat[kind].append(secs * 1000)
                by_regime[regime].append(secs * 1000)
                done += 1
            except (OSError, http.client.HTTPException, RuntimeError, KeyError) as e:
                errors.append(f"#{it} {kind}: {type(e).__name__}: {e}")

        every = sorted(v for vs in lat.values() for v in vs)
        summary = (f"n={len(every)} p50={pct(every, 50):.1f} p90={pct(every, 90):.1f} "
                   f"p99={pct(every, 99):.1f} max={every[-1] if every else float('nan'):.1f} ms")
        print(f"     revocation latency to both workers ({len(conns.conns)} connections), all kinds: {summary}",
              flush=True)
        for k in KINDS:
            vs = sorted(lat[k])
            if vs:
                print(f"       {k:8s} n={len(vs):3d} p50={pct(vs, 50):6.1f} p90={pct(vs, 90):6.1f} "
                      f"max={vs[-1]:6.1f} ms", flush=True)
        for k, vs in by_regime.items():
            vs = sorted(vs)
            if vs:
                print(f"       {k:8s} n={len(vs):3d} p50={pct(vs, 50):6.1f} p90={pct(vs, 90):6.1f} "
                      f"p99={pct(vs, 99):6.1f} max={vs[-1]:6.1f} ms"
                      + ("  (revoked 300 ms after the previous feed response)" if k == "settled" else
                         "  (revoked right after the previous revocation was enforced)"), flush=True)
        if add_lat:
            a = sorted(add_lat)
            print(f"     new API key accepted on both workers after creation: n={len(a)} p50={pct(a, 50):.1f} "
                  f"p90={pct(a, 90):.1f} max={a[-1]:.1f} ms", flush=True)
        print(f"     refusal types seen: {dict(sorted(slugs.items()))}", flush=True)
        R.check(not errors and done == ITERATIONS, f"{name}: {ITERATIONS} revocations measured",
                f"{done} measured, {len(slow)} over {MEASURE_BOUND:.0f}s"
                + (f"; errors: {errors[:4]}" if errors else "")
                + (f"; slow: {slow[:3]}" if slow else ""))
        R.check(not slow and bool(every) and pct(every, 99) < P99_BOUND_MS,
                f"{name}: revocation reaches both workers, p99 < {P99_BOUND_MS:.0f} ms", summary)
        cx_now = stack.worker_cx()
        R.check(conns.reconnected() == 0 and cx_now == conns.cx_after_setup,
                f"{name}: every poll stayed on the same keep-alive connections",
                f"reconnects={conns.reconnected()} worker cx after setup {conns.cx_after_setup}, now {cx_now}")

        # --- feed stats ---
        s = stack.stats("wasmcustom.meshgate.sync")
        version = s.get("wasmcustom.meshgate.sync.version")
        errs = s.get("wasmcustom.meshgate.sync.errors")
        R.check(bool(version) and version > 0, f"{name}: wasmcustom.meshgate.sync.version > 0",
                f"{s}")
        R.check(errs is not None and errs <= 2, f"{name}: wasmcustom.meshgate.sync.errors small while up",
                f"errors={errs} bytes={s.get('wasmcustom.meshgate.sync.bytes')}")

        # --- outage: last good state ---
        valid = cp.login("alice", USER_PASSWORD)
        vauth = {"Authorization": f"Bearer {valid}"}
        secs, _ = conns.wait_all(vauth, is_200, MEASURE_BOUND)
        rc, stop_secs = cp.stop()
        codes: dict[int, int] = {}
        t_down = time.monotonic()
        while time.monotonic() - t_down < 3.0:
            for x in conns.all_status(vauth):
                codes[x.status] = codes.get(x.status, 0) + 1
            time.sleep(0.05)
        s2 = stack.stats("wasmcustom.meshgate.sync")
        R.check(codes.keys() == {200} and secs is not None,
                f"{name}: control plane stopped (SIGTERM): Envoy keeps serving a valid token",
                f"cp exit status {rc} after {stop_secs:.2f}s; 3 s of requests on every connection: {codes}; "
                f"sync.errors {errs} -> {s2.get('wasmcustom.meshgate.sync.errors')}, "
                f"staleness_ms={s2.get('wasmcustom.meshgate.sync.staleness_ms')}")

        # --- restart: sync resumes ---
        try:
            secs = cp.start()
        except RuntimeError as e:
            R.check(False, f"{name}: restart the control plane", str(e))
            return
        t_up = time.perf_counter()
        tok = cp.login("alice", USER_PASSWORD)
        cred = {"Authorization": f"Bearer {tok}"}
        ok_secs, _ = conns.wait_all(cred, is_200, MEASURE_BOUND)
        status, _ = cp.call("POST", "/api/v1/auth/logout", None, tok)
        t_rev = time.perf_counter()
        secs2, last = conns.wait_all(cred, refused_revoked, 40.0, t_rev)
        s3 = stack.stats("wasmcustom.meshgate.sync")
        R.check(status == 204 and ok_secs is not None and secs2 is not None,
                f"{name}: after a restart, a new revocation is enforced again",
                (f"logout {status}; refused on every connection {secs2 * 1000:.0f} ms after the logout "
                 f"({(t_rev - t_up) + secs2:.2f}s after the control plane was healthy again)"
                 if secs2 is not None else
                 f"logout {status}; still not refused after 40 s: {[x.short()[:100] for x in last if x]}")
                + f"; sync.version {version} -> {s3.get('wasmcustom.meshgate.sync.version')}"
                f", sync.errors -> {s3.get('wasmcustom.meshgate.sync.errors')}")
        r = h.fetch(stack.port, "/api/orders", vauth)
        R.check(r.status == 200, f"{name}: the other session's token still passes", f"status={r.status}")
        print(f"--- {name}: {time.monotonic() - t_group:.1f}s", flush=True)
    except (OSError, http.client.HTTPException, ValueError, KeyError, RuntimeError) as e:
        R.check(False, f"{name}: scenario aborted", f"{type(e).__name__}: {e}")
    finally:
        if conns:
            conns.close()
        if R.failed > failed_before or os.environ.get("MESHGATE_E2E_VERBOSE"):
            if stack:
                stack.dump_log()
            print(f"=============== [{name}] control plane log (tail) ===============")
            print(cp.log_tail())
        if stack:
            stack.stop()
        h._stop(cp.proc)
