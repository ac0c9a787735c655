"""The `replicas` group of envoy/e2e/run.py: two control-plane replicas on one PostgreSQL.

Creates a throwaway database on the PostgreSQL at 127.0.0.1:5432 (user `postgres`, trust
auth; `psql`), starts replica A, then (once A is healthy, so only one replica bootstraps
the empty database) replica B: same `DATABASE_URL`, same `MESHGATE_MASTER_KEY` and
`MESHGATE_ISSUER`, different loopback ports. Envoy (`--concurrency 2`) follows the sync
feed of **B** only; every write (sync key, users, logins, revocations) goes through **A**.
Then:

  keys      A and B publish the same signing keys (shared through the database), and a
            token minted by A is accepted by Envoy, which only knows B's feed
  latency   20 revocations made on A, alternating logout and `POST /api/v1/revocations`
            by session: each is timed until every keep-alive connection (both workers)
            answers 401 revoked; each must be within 1 s (A commits, PostgreSQL NOTIFY
            wakes B's held long-poll, B answers Envoy); p50/p99 printed

Skipped (a `skip` line, counted neither passed nor failed) when `psql` is missing or
PostgreSQL does not answer. Teardown always: Envoy, both replicas, then the database
(`DROP DATABASE ... WITH (FORCE)`).

Imported by run.py, which passes itself as `h`; reuses sync_e2e's ControlPlane, Conns and
helpers.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import sync_e2e as s  # noqa: E402  (envoy/e2e/sync_e2e.py)

PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
ITERATIONS = 20
KINDS = ["logout", "session"]
BOUND = 1.0  # seconds: every revocation must be refused on both workers within this
SETTLE = 0.3  # as sync_e2e's "settled" regime, for every other pair of iterations
GROUP_BUDGET = 45.0


def psql(sql: str, timeout: float = 10.0) -> tuple[int, str]:
    env = dict(os.environ, PGCONNECT_TIMEOUT="3")
    try:
        p = subprocess.run(
            ["psql", "-h", PG_HOST, "-p", str(PG_PORT), "-U", PG_USER, "-d", "postgres",
             "-X", "-q", "-v", "ON_ERROR_STOP=1", "-w", "-c", sql],
            capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return 124, f"psql timed out after {timeout:.0f}s"
    return p.returncode, (p.stderr or p.stdout).strip()


class Replica(s.ControlPlane):
    """sync_e2e's ControlPlane on PostgreSQL, with a shared master key and issuer."""

    def __init__(self, h, dir: Path, label: str, database_url: str, master_key: str,
                 issuer: str | None = None) -> None:
        super().__init__(h, dir)
        self.label = f"replica {label}"
        self.database_url = database_url
        self.master_key = master_key
        if issuer:
            self.issuer = issuer


def kids(snap: dict) -> list[str]:
    """The `kid`s of a feed answer's signing keys ({"issuer": ..., "jwk": {...}})."""
    return sorted(str((k.get("jwk") or {}).get("kid")) for k in snap.get("signing_keys", [])
                  if isinstance(k, dict))


def header_kid(token: str) -> str:
    try:
        head = token.split(".")[0]
        return str(json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4))).get("kid"))
    except (IndexError, ValueError):
        return ""


def group_replicas(h, work: Path) -> None:
    R = h.R
    name = "replicas"
    t_group = time.monotonic()
    if not os.access(s.MESHGATE_BIN, os.X_OK):
        R.check(False, f"{name}: control plane binary", f"no {s.MESHGATE_BIN} (run `cargo build -p meshgate`)")
        return
    if shutil.which("psql") is None:
        print(f"skip {name}: no `psql` on PATH (PostgreSQL client needed)", flush=True)
        return
    rc, out = psql("SELECT 1")
    if rc != 0:
        print(f"skip {name}: PostgreSQL at {PG_HOST}:{PG_PORT} unreachable ({out.splitlines()[0].strip() if out else rc})",
              flush=True)
        return
    db = f"meshgate_e2e_{secrets.token_hex(6)}"
    rc, out = psql(f"CREATE DATABASE {db}")
    if not R.check(rc == 0, f"{name}: create database {db}", out if rc else ""):
        return
    url = f"postgres://{PG_USER}@{PG_HOST}:{PG_PORT}/{db}"
    master_key = secrets.token_hex(32)
    a = Replica(h, work / "replicas-a", "A", url, master_key)
    b = Replica(h, work / "replicas-b", "B", url, master_key, issuer=a.issuer)
    stack = None
    conns = None
    failed_before = R.failed
    try:
        # A first, alone: it bootstraps the empty database (migrations, admin, signing key).
        for rep in (a, b):
            try:
                secs = rep.start()
            except RuntimeError as e:
                R.check(False, f"{name}: start {rep.label}", str(e))
                return
            print(f"--- {name}: {rep.label} pid {rep.proc.pid} on 127.0.0.1:{rep.port}, "
                  f"healthy in {secs:.1f}s", flush=True)

        admin = a.login("admin", s.ADMIN_PASSWORD)
        status, body = a.call("POST", "/api/v1/apikeys",
                              {"name": "e2e replicas sync", "scopes": ["sync"], "expires_in_days": 1}, admin)
        sync_key = body.get("key", "")
        if not R.check(status == 201 and sync_key.startswith("mg_"), f"{name}: sync key created through A",
                       f"POST A/api/v1/apikeys -> {status}" + ("" if status == 201 else f" {body}")):
            return
        status, user = a.call("POST", "/api/v1/users", {"username": "alice", "password": s.USER_PASSWORD}, admin)
        if not R.check(status in (200, 201), f"{name}: user created through A", f"{status}"
                       + ("" if status in (200, 201) else f" {user}")):
            return
        alice_id = user.get("id", "")

        # Both feeds, straight from the replicas: B knows A's key and A's signing keys.
        sa, snap_a = a.call("GET", "/api/v1/sync?wait=0", token=sync_key)
        sb, snap_b = b.call("GET", "/api/v1/sync?wait=0", token=sync_key)
        R.check(sa == 200 and sb == 200 and bool(kids(snap_a)) and "None" not in kids(snap_a)
                and kids(snap_a) == kids(snap_b),
                f"{name}: B's feed answers A's sync key with A's signing keys (shared through the DB)",
                f"A {sa} kids={kids(snap_a)} version={snap_a.get('version')}; "
                f"B {sb} kids={kids(snap_b)} version={snap_b.get('version')}")

        stack = h.Stack(name, s.sync_plugin(a.issuer, sync_key), work, control_plane_port=b.port)
        try:
            stack.start()
        except RuntimeError as e:
            R.check(False, f"{name}: start Envoy + echo upstream", str(e))
            return
        print(f"--- {name}: envoy pid {stack.envoy.pid} on 127.0.0.1:{stack.port} "
              f"(admin :{stack.admin_port}), ready in {stack.ready_secs:.1f}s, feed from B :{b.port}", flush=True)

        # A token minted by A is accepted through B's feed.
        token = a.login("alice", s.USER_PASSWORD)
        t0 = time.perf_counter()
        r = None
        while time.perf_counter() - t0 < 15:
            r = h.fetch(stack.port, "/api/orders", {"Authorization": f"Bearer {token}"})
            if r.status == 200:
                break
            time.sleep(0.05)
        kid = header_kid(token)
        ok = (r is not None and r.status == 200 and r.upstream.get("x-user-id") == alice_id
              and kid in kids(snap_b))
        if not R.check(ok, f"{name}: a token minted by A is accepted by Envoy following B's feed",
                       f"kid {kid} (in B's feed: {kid in kids(snap_b)}), "
                       f"after {time.perf_counter() - t0:.2f}s: status={r.status if r else None}"
                       f" type={r.problem() if r else ''!r}"):
            return

        conns = s.Conns(h, stack)
        per = conns.per_worker()
        if not R.check(len(per) >= 2, f"{name}: keep-alive connections on both workers",
                       f"{len(conns.conns)} connections: "
                       + ", ".join(f"worker_{w}={n}" for w, n in sorted(per.items()))):
            return

        # --- revocations on A, enforced through B ---
        lat: dict[str, list[float]] = {k: [] for k in KINDS}
        slow: list[str] = []
        errors: list[str] = []
        for it in range(ITERATIONS):
            if time.monotonic() - t_group > GROUP_BUDGET - 8:
                errors.append(f"stopped after {it} iterations (group time budget)")
                break
            kind = KINDS[it % len(KINDS)]
            try:
                tok = a.login("alice", s.USER_PASSWORD)
                cred = {"Authorization": f"Bearer {tok}"}
                secs, last = conns.wait_all(cred, s.is_200, s.MEASURE_BOUND)
                if secs is None:
                    errors.append(f"#{it} fresh token not accepted: "
                                  f"{[x.short()[:120] for x in last if x and x.status != 200]}")
                    continue
                if (it // len(KINDS)) % 2 == 0:
                    time.sleep(SETTLE)
                if kind == "logout":
                    status, resp = a.call("POST", "/api/v1/auth/logout", None, tok)
                else:
                    status, resp = a.call("POST", "/api/v1/revocations",
                                          {"kind": "session", "value": s.claims(tok).get("sid")}, admin)
                t_rev = time.perf_counter()
                if status not in (201, 204):
                    errors.append(f"#{it} {kind} on A -> {status} {resp}")
                    continue
                secs, last = conns.wait_all(cred, s.refused_revoked, s.MEASURE_BOUND, t_rev)
                if secs is None:
                    slow.append(f"#{it} {kind}: not refused within {s.MEASURE_BOUND:.0f}s; last "
                                + "; ".join(f"{x.status} {x.problem()}" for x in last if x))
                    continue
                lat[kind].append(secs * 1000)
                if secs > BOUND:
                    slow.append(f"#{it} {kind}: {secs * 1000:.0f} ms")
            except (OSError, http.client.HTTPException, RuntimeError, KeyError) as e:
                errors.append(f"#{it} {kind}: {type(e).__name__}: {e}")

        every = sorted(v for vs in lat.values() for v in vs)
        summary = (f"n={len(every)} p50={s.pct(every, 50):.1f} p99={s.pct(every, 99):.1f} "
                   f"max={every[-1] if every else float('nan'):.1f} ms")
        print(f"     revocation on A -> refused on both workers via B's feed ({len(conns.conns)} connections): "
              f"{summary}", flush=True)
        for k in KINDS:
            vs = sorted(lat[k])
            if vs:
                print(f"       {k:8s} n={len(vs):3d} p50={s.pct(vs, 50):6.1f} p99={s.pct(vs, 99):6.1f} "
                      f"max={vs[-1]:6.1f} ms", flush=True)
        R.check(not errors and len(every) == ITERATIONS, f"{name}: {ITERATIONS} revocations on A measured",
                f"{len(every)} measured" + (f"; errors: {errors[:4]}" if errors else ""))
        R.check(not slow and bool(every) and every[-1] <= BOUND * 1000,
                f"{name}: every revocation on A refused on both workers (feed from B) within "
                f"{BOUND * 1000:.0f} ms", summary + (f"; slow: {slow[:4]}" if slow else ""))
        st = stack.stats("wasmcustom.meshgate.sync")
        errs = st.get("wasmcustom.meshgate.sync.errors")
        R.check(errs is not None and errs <= 2, f"{name}: wasmcustom.meshgate.sync.errors small",
                f"errors={errs} version={st.get('wasmcustom.meshgate.sync.version')}")
        print(f"--- {name}: {time.monotonic() - t_group:.1f}s", flush=True)
    except (OSError, http.client.HTTPException, ValueError, KeyError, RuntimeError) as e:
        R.check(False, f"{name}: scenario aborted", f"{type(e).__name__}: {e}")
    finally:
        if conns:
            conns.close()
        if R.failed > failed_before or os.environ.get("MESHGATE_E2E_VERBOSE"):
            if stack:
                stack.dump_log()
            for rep in (a, b):
                print(f"=============== [{name}] {rep.label} log (tail) ===============")
                print(rep.log_tail())
        if stack:
            stack.stop()
        h._stop(b.proc)
        h._stop(a.proc)
        rc, out = psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        if rc != 0:
            R.check(False, f"{name}: drop database {db}", out)
