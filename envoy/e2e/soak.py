#!/usr/bin/env python3
"""Soak test (`make soak SOAK_SECS=600`): steady mixed traffic through a real Envoy (2 workers)
with the meshgate filter following a real control plane (`meshgate serve`, SQLite), while
tokens and API keys are revoked and signing keys rotated, for SOAK_SECS seconds.

Traffic: RATE requests/s (default 100) from 4 client threads, each on its own keep-alive
connection, on a fixed schedule. Every request's acceptable answer is known when it is sent:

  public      GET /health                                  200
  jwt         GET /api/orders, a live access token         200
  apikey      GET /api/orders, X-API-Key of a live key      200
  anonymous   GET /api/orders, no credential                401 missing-credentials
  garbage     GET /api/orders, Bearer not.a.jwt             401 malformed-token
  revoked     GET /api/orders, a revoked token              401 revoked
  revkey      GET /api/orders, a revoked API key            401 revoked | unknown-api-key
  role        GET /admin/x, a user token                    403 insufficient-role
  limited     GET /tight/x three times with a fresh X-Bucket (rule: 2 per hour per bucket,
              max_keys 1024, so buckets keep being evicted)  200, 200, 429
  guest       GET /catalog/x, X-Guest-ID, random X-Client  200 (a shadow rule keyed by
              X-Client, max_keys 1024: a new rate-limit key on every request)
  guest-post  POST /catalog/x, X-Guest-ID                   403 guest-read-only

A token or key being revoked may answer 200 or 401 until its revocation is confirmed at Envoy
(then 401 only); a key just created may answer 401 unknown-api-key until first accepted.
Everything else that is not the expected answer counts as an error, as does any connection
error. A mutator thread meanwhile: every 2 s revokes a live token (logout, by token id, by
session, in turn) and logs in a replacement; every 10 s creates an API key and revokes the
oldest; every ROTATE seconds (default SOAK_SECS/10, at least 15 s) rotates the signing keys.

Every SAMPLE seconds: Envoy's RSS (/proc/<pid>/status), the admin `/memory` figures
(allocated, heap size), the number of stats Envoy holds, the filter's counters, the control
plane's RSS. Printed as a table and written (with the verdicts) to --out (default
bench/soak.md for runs of 600 s or more, target/soak.md otherwise).

Checks: no unexpected answer; after a warm-up (the first 20%, at least 10 s) Envoy's RSS and
allocated memory grow by no more than 10% of their post-warm-up baseline + 8 MiB; the number
of Envoy stats does not grow after warm-up (rate-limit keys, revocations and tokens come and
go, the filter's metrics are fixed); meshgate.allowed + meshgate.denied equals the requests
sent through the filter (no decision lost or double-counted); meshgate.host_failures and
meshgate.sync.errors stay 0; the rate-limit counters match the traffic exactly.

Environment: as envoy/e2e/run.py (ENVOY, MESHGATE_WASM, MESHGATE_BIN). Loopback only.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import secrets
import statistics
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))
import run as h  # noqa: E402  (envoy/e2e/run.py: Stack, fetch, checks)
import sync_e2e as s  # noqa: E402

R = h.R
P = "urn:meshgate:problem:"
MIB = 1024 * 1024


def plugin(issuer: str, sync_key: str) -> dict:
    return {
        "realm": "meshgate-soak",
        "routes": [
            {"name": "health", "path": {"exact": "/health"}, "policy": {"access": "public"}},
            {"name": "admin", "path": {"prefix": "/admin"}, "policy": {"roles_any": ["admin"]}},
            {"name": "tight", "path": {"prefix": "/tight"}, "policy": {"access": "public"}},
            {"name": "catalog", "path": {"prefix": "/catalog"}, "policy": {"guest": True}},
            {"name": "api", "path": {"prefix": "/api"}, "policy": {"access": "authenticated"}},
        ],
        "default_policy": {"access": "deny"},
        "issuers": [{"issuer": issuer, "audiences": ["meshgate"]}],
        "sync": {"cluster": "control_plane", "api_key": sync_key, "wait_secs": 20},
        "rate_limits": {
            "rules": [
                {"name": "tight", "routes": ["tight"], "key": ["header:x-bucket"], "limit": 2,
                 "window_secs": 3600, "max_keys": 1024},
                {"name": "churn", "routes": ["catalog"], "key": ["header:x-client"], "limit": 1,
                 "window_secs": 60, "shadow": True, "max_keys": 1024},
                {"name": "per-user", "routes": ["api", "admin"], "key": ["user"], "limit": 100000,
                 "window_secs": 60},
            ],
        },
    }


class Creds:
    """Tokens and API keys with their state: live, pending (key just created), revoking
    (revocation sent, not yet seen at Envoy), revoked."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.state: dict[str, str] = {}
        self.live_tokens: list[str] = []
        self.live_keys: list[tuple[str, str]] = []  # (id, key)
        self.pending_keys: list[tuple[str, str]] = []
        self.revoked_tokens: list[str] = []
        self.revoked_keys: list[str] = []
        self.user_token = ""

    def pick(self, kind: str, rnd: random.Random) -> str | None:
        with self.lock:
            pool = {"jwt": self.live_tokens, "revoked": self.revoked_tokens, "revkey": self.revoked_keys}.get(kind)
            if kind == "apikey":
                pool = [k for _, k in self.live_keys] + [k for _, k in self.pending_keys]
            return rnd.choice(pool) if pool else None

    def get(self, cred: str) -> str:
        with self.lock:
            return self.state.get(cred, "live")

    def set(self, cred: str, state: str) -> None:
        with self.lock:
            self.state[cred] = state


def acceptable(kind: str, state: str, r) -> bool:
    st, typ = r.status, r.problem()
    if kind in ("public", "guest"):
        return st == 200
    if kind == "anonymous":
        return st == 401 and typ == P + "missing-credentials"
    if kind == "garbage":
        return st == 401 and typ == P + "malformed-token"
    if kind == "role":
        return st == 403 and typ == P + "insufficient-role"
    if kind == "guest-post":
        return st == 403 and typ == P + "guest-read-only"
    revoked_ok = st == 401 and typ in (P + "revoked", P + "unknown-api-key")
    if kind in ("jwt", "apikey", "revoked", "revkey"):
        if state == "live":
            return st == 200
        if state in ("pending", "revoking"):
            return st == 200 or revoked_ok
        return revoked_ok
    return False


class Soak:
    def __init__(self, secs: float, rate: float, sample: float, rotate: float, work: Path) -> None:
        self.secs = secs
        self.rate = rate
        self.sample_every = sample
        self.rotate_every = rotate
        self.work = work
        self.creds = Creds()
        self.lock = threading.Lock()
        self.sent = 0  # requests through the filter (traffic + mutator probes)
        self.by_kind: dict[str, dict] = {}
        self.errors: list[str] = []
        self.error_count = 0
        self.late = 0
        self.buckets = 0
        self.guests = 0
        self.samples: list[dict] = []
        self.events = {"revocations": 0, "keys created": 0, "keys revoked": 0, "rotations": 0, "logins": 0}
        self.mutator_errors: list[str] = []
        self.stop = threading.Event()

    # --- traffic ---
    def count(self, kind: str, status, ok: bool, detail: str = "") -> None:
        with self.lock:
            d = self.by_kind.setdefault(kind, {})
            d[status] = d.get(status, 0) + 1
            if not ok:
                self.error_count += 1
                if len(self.errors) < 20:
                    self.errors.append(f"{kind}: {detail}")

    def one(self, conn, kind: str, rnd: random.Random) -> None:
        port = self.stack.port
        if kind == "limited":
            with self.lock:
                self.buckets += 1
            bucket = f"b{secrets.token_hex(6)}"
            for i, want in enumerate((200, 200, 429)):
                r = self.send(conn, "GET", "/tight/x", {"X-Bucket": bucket})
                if r is not None:
                    ok = r.status == want and (want != 429 or r.problem() == P + "rate-limited")
                    self.count(kind, r.status, ok, f"request {i + 1} of bucket {bucket}: {r.short()[:160]}")
            return
        headers: dict = {}
        path, method, cred = "/api/orders", "GET", None
        if kind == "public":
            path = "/health"
        elif kind in ("jwt", "revoked"):
            cred = self.creds.pick(kind, rnd)
            if cred is None:
                return
            headers = {"Authorization": f"Bearer {cred}"}
        elif kind in ("apikey", "revkey"):
            cred = self.creds.pick(kind, rnd)
            if cred is None:
                return
            headers = {"X-API-Key": cred}
        elif kind == "garbage":
            headers = {"Authorization": "Bearer not.a.jwt"}
        elif kind == "role":
            path, headers = "/admin/x", {"Authorization": f"Bearer {self.creds.user_token}"}
        elif kind == "guest":
            with self.lock:
                self.guests += 1
            path, headers = "/catalog/x", {"X-Guest-ID": "soak-guest", "X-Client": secrets.token_hex(8)}
        elif kind == "guest-post":
            path, method, headers = "/catalog/x", "POST", {"X-Guest-ID": "soak-guest"}
        r = self.send(conn, method, path, headers)
        if r is None:
            return
        state = self.creds.get(cred) if cred else "live"
        self.count(kind, r.status, acceptable(kind, state, r), f"({state}) {r.short()[:200]}")

    def send(self, conn, method: str, path: str, headers: dict):
        with self.lock:
            self.sent += 1
        try:
            return h.fetch(self.stack.port, path, headers, method=method, conn=conn)
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            self.count("connection", type(e).__name__, False, f"{method} {path}: {type(e).__name__}: {e}")
            return None

    MIX = (["public"] * 2 + ["jwt"] * 4 + ["apikey"] * 2 + ["anonymous", "garbage", "revoked", "revkey",
                                                                  "role", "guest", "guest-post"])

    def traffic(self, i: int, t_end: float) -> None:
        rnd = random.Random(i)
        conn = http.client.HTTPConnection("127.0.0.1", self.stack.port, timeout=h.HTTP_TIMEOUT)
        per = self.rate / 4
        t_next = time.monotonic()
        n = 0
        while not self.stop.is_set() and time.monotonic() < t_end:
            n += 1
            kind = "limited" if n % 40 == 0 else rnd.choice(self.MIX)
            self.one(conn, kind, rnd)
            t_next += (3 if kind == "limited" else 1) / per
            now = time.monotonic()
            if t_next > now:
                time.sleep(t_next - now)
            elif now - t_next > 1.0:
                with self.lock:
                    self.late += 1
                t_next = now
        conn.close()

    # --- mutator: revocations, keys, rotations ---
    def probe(self, headers: dict, ok, bound: float = 5.0) -> float | None:
        t0 = time.monotonic()
        while time.monotonic() - t0 < bound:
            with self.lock:
                self.sent += 1
            r = h.fetch(self.stack.port, "/api/orders", headers)
            if ok(r):
                return time.monotonic() - t0
            time.sleep(0.02)
        return None

    def new_token(self) -> str:
        tok = self.cp.login("alice", s.USER_PASSWORD)
        self.events["logins"] += 1
        return tok

    def mutator(self, t_end: float) -> None:
        cp, creds = self.cp, self.creds
        kinds = ["logout", "token", "session"]
        n = 0
        next_key = time.monotonic() + 10
        next_rotate = time.monotonic() + self.rotate_every
        self.rev_lat: list[float] = []
        while not self.stop.is_set() and time.monotonic() < t_end - 1:
            n += 1
            try:
                # A fresh token joins the pool once Envoy accepts it.
                tok = self.new_token()
                if self.probe({"Authorization": f"Bearer {tok}"}, lambda r: r.status == 200) is None:
                    self.mutator_errors.append("a fresh token was not accepted within 5 s")
                with creds.lock:
                    creds.live_tokens.append(tok)
                    victim = creds.live_tokens.pop(0) if len(creds.live_tokens) > 8 else None
                    if victim:
                        creds.state[victim] = "revoking"
                if victim:
                    kind = kinds[n % 3]
                    c = s.claims(victim)
                    if kind == "logout":
                        st, body = cp.call("POST", "/api/v1/auth/logout", None, victim)
                    else:
                        st, body = cp.call("POST", "/api/v1/revocations",
                                           {"kind": kind, "value": c.get("jti" if kind == "token" else "sid")},
                                           self.admin)
                    if st not in (201, 204):
                        self.mutator_errors.append(f"revoke {kind}: {st} {body}")
                    t = self.probe({"Authorization": f"Bearer {victim}"},
                                   lambda r: r.status == 401 and r.problem() == P + "revoked")
                    if t is None:
                        self.mutator_errors.append(f"revocation ({kind}) not enforced within 5 s")
                    else:
                        self.rev_lat.append(t * 1000)
                    creds.set(victim, "revoked")
                    with creds.lock:
                        creds.revoked_tokens.append(victim)
                        del creds.revoked_tokens[:-50]
                    self.events["revocations"] += 1
                if time.monotonic() >= next_key:
                    next_key += 10
                    self.key_cycle()
                if time.monotonic() >= next_rotate:
                    next_rotate += self.rotate_every
                    st, body = cp.call("POST", "/api/v1/signing-keys/rotate", None, self.admin)
                    if st == 200:
                        self.events["rotations"] += 1
                    else:
                        self.mutator_errors.append(f"rotate: {st} {body}")
            except (OSError, http.client.HTTPException, RuntimeError, KeyError) as e:
                self.mutator_errors.append(f"{type(e).__name__}: {e}")
            self.stop.wait(2.0)

    def key_cycle(self) -> None:
        cp, creds = self.cp, self.creds
        st, body = cp.call("POST", "/api/v1/apikeys", {"name": f"soak-{time.time_ns()}", "owner_id": self.alice,
                                                       "scopes": ["soak"], "expires_in_days": 1}, self.admin)
        if st != 201:
            self.mutator_errors.append(f"create key: {st} {body}")
            return
        rec = (body["id"], body["key"])
        creds.set(rec[1], "pending")
        with creds.lock:
            creds.pending_keys.append(rec)
        self.events["keys created"] += 1
        if self.probe({"X-API-Key": rec[1]}, lambda r: r.status == 200) is None:
            self.mutator_errors.append("a new API key was not accepted within 5 s")
        with creds.lock:
            creds.pending_keys.remove(rec)
            creds.live_keys.append(rec)
            creds.state[rec[1]] = "live"
            victim = creds.live_keys.pop(0) if len(creds.live_keys) > 4 else None
            if victim:
                creds.state[victim[1]] = "revoking"
        if victim:
            st, body = cp.call("POST", "/api/v1/revocations", {"kind": "key", "value": victim[0]}, self.admin)
            if st not in (201, 204):
                self.mutator_errors.append(f"revoke key: {st} {body}")
            if self.probe({"X-API-Key": victim[1]}, lambda r: r.status == 401) is None:
                self.mutator_errors.append("a key revocation was not enforced within 5 s")
            creds.set(victim[1], "revoked")
            with creds.lock:
                creds.revoked_keys.append(victim[1])
                del creds.revoked_keys[:-20]
            self.events["keys revoked"] += 1

    # --- sampling ---
    def sample(self, t0: float) -> dict:
        def rss(pid: int) -> int:
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) * 1024
            except OSError:
                pass
            return 0

        mem = json.loads(self.stack.admin("/memory")[1])
        _, text = self.stack.admin("/stats")
        wc = self.stack.stats("wasmcustom")
        with self.lock:
            sent, errors = self.sent, self.error_count
        return {
            "t": time.monotonic() - t0,
            "rss": rss(self.stack.envoy.pid),
            "allocated": int(mem.get("allocated", 0)),
            "heap": int(mem.get("heap_size", 0)),
            "stats": len(text.splitlines()),
            "cp_rss": rss(self.cp.proc.pid),
            "sent": sent,
            "errors": errors,
            "decisions": wc.get("wasmcustom.meshgate.allowed", 0) + wc.get("wasmcustom.meshgate.denied", 0),
            "version": wc.get("wasmcustom.meshgate.sync.version", 0),
            "wc": wc,
        }

    def sampler(self, t0: float, t_end: float) -> None:
        print(f"{'t s':>6} {'RSS MiB':>8} {'alloc MiB':>9} {'heap MiB':>8} {'stats':>6} {'cp RSS':>7} "
              f"{'sent':>7} {'errors':>6} {'sync v':>6}", flush=True)
        while True:
            try:
                x = self.sample(t0)
                self.samples.append(x)
                print(f"{x['t']:6.0f} {x['rss'] / MIB:8.1f} {x['allocated'] / MIB:9.1f} {x['heap'] / MIB:8.1f} "
                      f"{x['stats']:6d} {x['cp_rss'] / MIB:7.1f} {x['sent']:7d} {x['errors']:6d} "
                      f"{x['version']:6d}", flush=True)
            except (OSError, ValueError, http.client.HTTPException) as e:
                print(f"sample failed: {e}", flush=True)
            if self.stop.wait(max(0.0, min(self.sample_every, t_end - time.monotonic()))) or time.monotonic() >= t_end:
                return

    # --- run ---
    def run(self) -> Path | None:
        os.environ.setdefault("MESHGATE_KEY_PUBLISH", str(max(5, int(self.rotate_every // 2))))
        os.environ.setdefault("MESHGATE_ACCESS_TTL", str(max(900, int(self.secs) + 300)))
        self.cp = s.ControlPlane(h, self.work / "soak-cp")
        self.cp.start()
        self.admin = self.cp.login("admin", s.ADMIN_PASSWORD)
        st, body = self.cp.call("POST", "/api/v1/apikeys", {"name": "soak sync", "scopes": ["sync"],
                                                            "expires_in_days": 2}, self.admin)
        sync_key = body["key"]
        st, user = self.cp.call("POST", "/api/v1/users", {"username": "alice", "password": s.USER_PASSWORD}, self.admin)
        self.alice = user["id"]
        self.stack = h.Stack("soak", plugin(self.cp.issuer, sync_key), self.work, control_plane_port=self.cp.port)
        self.stack.start()
        print(f"soak: envoy pid {self.stack.envoy.pid} on 127.0.0.1:{self.stack.port} (admin :{self.stack.admin_port}),"
              f" control plane pid {self.cp.proc.pid} on :{self.cp.port}; {self.secs:.0f} s at {self.rate:.0f} req/s,"
              f" rotation every {self.rotate_every:.0f} s", flush=True)
        # Initial pools.
        creds = self.creds
        creds.user_token = self.new_token()
        if self.probe({"Authorization": f"Bearer {creds.user_token}"}, lambda r: r.status == 200, 20) is None:
            raise RuntimeError("the control plane's tokens are not accepted (sync)")
        for _ in range(8):
            creds.live_tokens.append(self.new_token())
        for _ in range(4):
            self.key_cycle()
        # One revoked token and key to start with.
        self.mutator_once_revoked()
        t0 = time.monotonic()
        t_end = t0 + self.secs
        threads = [threading.Thread(target=self.traffic, args=(i, t_end), daemon=True) for i in range(4)]
        threads.append(threading.Thread(target=self.mutator, args=(t_end,), daemon=True))
        sampler = threading.Thread(target=self.sampler, args=(t0, t_end), daemon=True)
        for t in threads + [sampler]:
            t.start()
        for t in threads:
            t.join(timeout=self.secs + 60)
        self.stop.set()
        sampler.join(timeout=30)
        time.sleep(1.5)  # the filter hands request counters to Envoy on its tick (≤ 1 s)
        self.final = self.sample(t0)
        self.samples.append(self.final)
        return None

    def mutator_once_revoked(self) -> None:
        tok = self.new_token()
        self.probe({"Authorization": f"Bearer {tok}"}, lambda r: r.status == 200)
        self.cp.call("POST", "/api/v1/auth/logout", None, tok)
        self.probe({"Authorization": f"Bearer {tok}"}, lambda r: r.status == 401)
        self.creds.set(tok, "revoked")
        self.creds.revoked_tokens.append(tok)
        vid, vkey = self.creds.live_keys[0]
        self.cp.call("POST", "/api/v1/revocations", {"kind": "key", "value": vid}, self.admin)
        self.probe({"X-API-Key": vkey}, lambda r: r.status == 401)
        self.creds.set(vkey, "revoked")
        with self.creds.lock:
            self.creds.live_keys.pop(0)
            self.creds.revoked_keys.append(vkey)

    # --- verdicts ---
    def verdicts(self) -> list[tuple[bool, str, str]]:
        out = []
        xs = self.samples
        warm = max(10.0, 0.2 * self.secs)
        after = [x for x in xs if x["t"] >= warm] or xs[-1:]
        q = max(1, len(after) // 4)
        total = sum(sum(d.values()) for d in self.by_kind.values())
        out.append((self.error_count == 0 and not self.late,
                    "no answer other than the expected ones",
                    f"{total} answers, {self.error_count} unexpected, {self.late} times the schedule slipped > 1 s"
                    + (f"; first: {self.errors[:5]}" if self.errors else "")))
        out.append((not self.mutator_errors, "revocations, key changes and rotations all took effect",
                    f"{self.events}" + (f"; errors {self.mutator_errors[:4]}" if self.mutator_errors else "")))
        for key, label in (("rss", "Envoy RSS"), ("allocated", "Envoy allocated (admin /memory)")):
            base = statistics.median(x[key] for x in after[:q])
            top = max(x[key] for x in after[-q:])
            bound = base * 0.10 + 8 * MIB
            slope = 0.0
            if len(after) >= 3:
                ts = [x["t"] for x in after]
                vs = [x[key] for x in after]
                mt, mv = statistics.fmean(ts), statistics.fmean(vs)
                den = sum((t - mt) ** 2 for t in ts) or 1.0
                slope = sum((t - mt) * (v - mv) for t, v in zip(ts, vs)) / den
            out.append((top - base <= bound, f"{label} flat after warm-up",
                        f"baseline {base / MIB:.1f} MiB (median of the first quarter after {warm:.0f} s), "
                        f"max of the last quarter {top / MIB:.1f} MiB: {(top - base) / MIB:+.2f} MiB "
                        f"(bound {bound / MIB:.1f}); trend {slope * 3600 / MIB:+.1f} MiB/h"))
        st0, st1 = after[0]["stats"], max(x["stats"] for x in after)
        out.append((st1 <= st0, "the number of Envoy stats does not grow after warm-up",
                    f"{st0} at {after[0]['t']:.0f} s, at most {st1} later"))
        wc = self.final["wc"]
        decisions = wc.get("wasmcustom.meshgate.allowed", 0) + wc.get("wasmcustom.meshgate.denied", 0)
        out.append((decisions == self.sent, "meshgate.allowed + meshgate.denied = requests sent through Envoy",
                    f"{decisions} decisions counted, {self.sent} requests sent"))
        hf = wc.get("wasmcustom.meshgate.host_failures", 0)
        se = wc.get("wasmcustom.meshgate.sync.errors", 0)
        out.append((hf == 0 and se == 0, "meshgate.host_failures = 0 and meshgate.sync.errors = 0",
                    f"host_failures={hf} sync.errors={se} sync.version={wc.get('wasmcustom.meshgate.sync.version')}"))
        ta = wc.get("wasmcustom.meshgate.ratelimit.tight.allowed", 0)
        tl = wc.get("wasmcustom.meshgate.ratelimit.tight.limited", 0)
        ca = wc.get("wasmcustom.meshgate.ratelimit.churn.allowed", 0)
        cs = wc.get("wasmcustom.meshgate.ratelimit.churn.shadow_limited", 0)
        out.append((ta == 2 * self.buckets and tl == self.buckets and ca + cs == self.guests,
                    "rate-limit counters match the traffic (tables of 1024 keys churned, never stuck)",
                    f"tight: {self.buckets} buckets -> allowed {ta} (want {2 * self.buckets}), limited {tl}; "
                    f"churn: {self.guests} distinct clients -> allowed {ca}, shadow_limited {cs}"))
        return out

    def report(self, out_path: Path) -> bool:
        results = self.verdicts()
        ok = True
        for cond, name, detail in results:
            ok &= R.check(cond, f"soak: {name}", detail)
        rl = sorted(getattr(self, "rev_lat", []))
        lines = [
            "# Soak run",
            "",
            f"`make soak SOAK_SECS={self.secs:.0f}` (envoy/e2e/soak.py), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: "
            f"Envoy 1.40 (2 workers) with the release `.wasm`, the control plane (debug build, SQLite), "
            f"the echo upstream; {self.rate:.0f} requests/s of mixed traffic from 4 keep-alive clients; "
            f"a revocation every ~2 s, an API key created and one revoked every 10 s, signing keys rotated "
            f"every {self.rotate_every:.0f} s. Machine: {os.cpu_count()} cores.",
            "",
            f"Answers by kind: " + "; ".join(f"{k} {dict(sorted(v.items(), key=lambda kv: str(kv[0])))}"
                                              for k, v in sorted(self.by_kind.items())),
            "",
            f"Mutations: {self.events}; revocation to refusal at Envoy (one connection, 20 ms polling): "
            + (f"n={len(rl)} p50={s.pct(rl, 50):.0f} ms max={rl[-1]:.0f} ms" if rl else "none"),
            "",
            "| t (s) | Envoy RSS (MiB) | allocated (MiB) | heap (MiB) | stats | control plane RSS (MiB) | requests | unexpected |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for x in self.samples:
            lines.append(f"| {x['t']:.0f} | {x['rss'] / MIB:.1f} | {x['allocated'] / MIB:.1f} | {x['heap'] / MIB:.1f} "
                         f"| {x['stats']} | {x['cp_rss'] / MIB:.1f} | {x['sent']} | {x['errors']} |")
        lines += ["", "Checks:", ""]
        for cond, name, detail in results:
            lines.append(f"- {'ok' if cond else 'FAIL'} {name}: {detail}")
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text("\n".join(lines) + "\n")
        print(f"soak: report written to {out_path}", flush=True)
        return ok


def main() -> int:
    p = argparse.ArgumentParser(description="meshgate soak test (real Envoy + control plane)")
    p.add_argument("--secs", type=float, default=float(os.environ.get("SOAK_SECS", "600")))
    p.add_argument("--rate", type=float, default=float(os.environ.get("SOAK_RATE", "100")))
    p.add_argument("--sample", type=float, default=0.0, help="seconds between samples (default secs/40, 3..15)")
    p.add_argument("--rotate", type=float, default=0.0, help="seconds between rotations (default secs/10, >= 15)")
    p.add_argument("--out", default="")
    a = p.parse_args()
    sample = a.sample or min(15.0, max(3.0, a.secs / 40))
    rotate = a.rotate or max(15.0, a.secs / 10)
    out = Path(a.out) if a.out else REPO / ("bench/soak.md" if a.secs >= 600 else "target/soak.md")
    for need, what in ((h.ENVOY, "Envoy (make envoy-install)"), (h.WASM, "the .wasm (make build)"),
                       (s.MESHGATE_BIN, "the control plane (cargo build -p meshgate)")):
        if not os.path.exists(need):
            print(f"soak: missing {what}: {need}", file=sys.stderr)
            return 2
    import tempfile
    import shutil
    work = Path(tempfile.mkdtemp(prefix="meshgate-soak."))
    soak = Soak(a.secs, a.rate, sample, rotate, work)
    ok = False
    t0 = time.monotonic()
    try:
        soak.run()
        ok = soak.report(out)
    except (OSError, RuntimeError, KeyError, ValueError, http.client.HTTPException) as e:
        R.check(False, "soak: run aborted", f"{type(e).__name__}: {e}")
    except KeyboardInterrupt:
        R.check(False, "soak: interrupted", "")
    finally:
        soak.stop.set()
        if not ok:
            if getattr(soak, "stack", None):
                soak.stack.dump_log()
            if getattr(soak, "cp", None):
                print(soak.cp.log_tail(40))
        if getattr(soak, "stack", None):
            soak.stack.stop()
        if getattr(soak, "cp", None):
            h._stop(soak.cp.proc)
        if os.environ.get("MESHGATE_E2E_KEEP"):
            print(f"soak: work directory kept at {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"soak: {time.monotonic() - t0:.0f}s; {R.passed} passed, {R.failed} failed", flush=True)
    return 0 if ok and R.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
