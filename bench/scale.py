#!/usr/bin/env python3
"""Sync feed at scale (issue 6): 10^4, 10^5, 10^6 API keys and as many live
revocations, through the real control plane and a real Envoy (2 workers).

For each size N: the control plane's SQLite database gets N API keys and N
token revocations (bulk-inserted as one change, the way a large tenant's state
looks), then a fresh Envoy follows the feed. Reported per N:

- snapshot: bytes and pages of the paged snapshot the filter pulls, and the
  control plane's time to serve it;
- full sync: Envoy start -> `meshgate.sync.version` equals the control
  plane's version (both workers enforce it);
- memory: Envoy's resident set after the sync, minus the same Envoy with 100
  keys (the state is in shared data: one copy per process);
- delta: revoke one key through the API -> refused on every worker;
- per request: Envoy CPU microseconds per request (utime+stime of the Envoy
  process over a fixed number of requests) for a warm key, and for keys the
  VM has not seen (one shard read each), against an Envoy holding 100 keys
  that runs beside it the whole time, alternated round by round.

Usage: MESHGATE_BIN=target/debug/meshgate ENVOY=.venv/bin/envoy \
       MESHGATE_WASM=target/wasm32-wasip1/release/meshgate_filter.wasm \
       python3 bench/scale.py [N ...]          (default: 10000 100000 1000000)
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import secrets
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "envoy" / "e2e"))
sys.path.insert(0, str(ROOT / "envoy"))

import run as h  # noqa: E402  (the e2e runner: Envoy stack, admin stats)
from demo_tokens import mint_api_key  # noqa: E402
from sync_e2e import ADMIN_PASSWORD, ControlPlane, sync_plugin  # noqa: E402

REQUESTS = 2000
ROUNDS = 5


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_secs(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    # utime, stime are fields 14 and 15 (1-based); after the ')' split they are 11, 12.
    return (int(fields[11]) + int(fields[12])) / ticks


MASK = (1 << 64) - 1


def revocation_bucket(kind_code: int, value: str) -> int:
    """The `bucket` column: meshgate_wire::sync::revocation_hash with its top
    bit flipped, as a signed 64-bit integer (what the control plane stores)."""
    h = 0xCBF29CE484222325
    for b in bytes([kind_code]) + value.encode():
        h = ((h ^ b) * 0x100000001B3) & MASK
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & MASK
    h ^= h >> 33
    h ^= 1 << 63
    return h - (1 << 64) if h >= 1 << 63 else h


def bulk_insert(db: Path, n: int, owner: str) -> None:
    """n API keys and n live token revocations, stamped as one change."""
    con = sqlite3.connect(db)
    now = int(time.time())
    (version,) = con.execute("SELECT value FROM counters WHERE name = 'change'").fetchone()
    version += 1
    step = 50_000
    for start in range(0, n, step):
        rows = []
        for i in range(start, min(n, start + step)):
            digest = hashlib.sha256(f"scale-key-{i}".encode()).hexdigest()
            rows.append((f"key_scale{i}", "mg", digest, f"scale {i}", owner, "orders:read",
                         now + 30 * 86400, now, version))
        con.executemany(
            "INSERT INTO api_keys (id, prefix, digest, name, owner_id, app_id, scopes, rate_limit, expires_at,"
            " created_at, last_used_at, revoked_at, version) VALUES (?, ?, ?, ?, ?, NULL, ?, NULL, ?, ?, NULL, NULL, ?)",
            rows)
        con.executemany(
            "INSERT INTO revocations (kind, value, not_before, until, reason, created_at, version, bucket)"
            " VALUES ('jti', ?, NULL, ?, NULL, ?, ?, ?)",
            [(f"scale-jti-{i}", now + 3600, now, version, revocation_bucket(0, f"scale-jti-{i}"))
             for i in range(start, min(n, start + step))])
    con.execute("UPDATE counters SET value = ? WHERE name = 'change'", (version,))
    con.commit()
    con.close()


def get(port: int, path: str, headers: dict, conn: http.client.HTTPConnection | None = None):
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request("GET", path, headers=headers)
    r = c.getresponse()
    body = r.read()
    return r.status, body, c


def stat_now(stack, name: str) -> int:
    """One stat as Envoy has it now (gauges and directly incremented counters;
    `Stack.stats` waits a tick for the filter's batched request counters)."""
    _, text = stack.admin(f"/stats?filter=^{name}$")
    for line in text.splitlines():
        key, sep, value = line.partition(": ")
        if sep and key.strip() == name and value.strip().isdigit():
            return int(value)
    return 0


def snapshot_stats(cp: ControlPlane, sync_key: str) -> tuple[int, int, float]:
    """(bytes, pages, seconds) of the paged snapshot, as the filter asks for it. Only the
    cursor is read out of each page (decoding 3 MB of JSON in Python would be timed too)."""
    total, pages, t0 = 0, 0, time.monotonic()
    path = "/api/v1/sync?since=0&wait=0&limit=20000"
    conn = None
    while True:
        status, body, conn = get(cp.port, path, {"Authorization": f"Bearer {sync_key}"}, conn)
        if status != 200:
            raise RuntimeError(f"snapshot page: {status} {body[:200]!r}")
        total += len(body)
        pages += 1
        # `next` is the last member the control plane writes.
        found = re.search(rb'"next":("[^"]*")\}$', body[-512:])
        nxt = json.loads(found.group(1)) if found else None
        if not nxt:
            return total, pages, time.monotonic() - t0
        path = f"/api/v1/sync?snapshot=true&wait=0&limit=20000&after={nxt}"


def cpu_per_request(stack, keys: list[str], requests: int) -> float:
    """Envoy CPU microseconds per request (utime+stime of the process)."""
    pid = stack.envoy.pid
    conns = [http.client.HTTPConnection("127.0.0.1", stack.port, timeout=30) for _ in range(4)]
    before = cpu_secs(pid)
    bad = 0
    for i in range(requests):
        c = conns[i % len(conns)]
        c.request("GET", "/api/x", headers={"X-API-Key": keys[i % len(keys)]})
        r = c.getresponse()
        r.read()
        bad += r.status not in (200, 401)
    spent = cpu_secs(pid) - before
    for c in conns:
        c.close()
    if bad:
        raise RuntimeError(f"{bad} unexpected statuses")
    return spent / requests * 1e6


class Scaled:
    """A control plane holding N keys + N revocations and an Envoy synced to it."""

    def __init__(self, n: int, work: Path):
        self.n = n
        self.row: dict = {"n": n}
        self.cp = ControlPlane(h, work / f"cp-{n}")
        self.stack = None

    def start(self) -> None:
        cp, row = self.cp, self.row
        cp.start()
        self.admin = cp.login("admin", ADMIN_PASSWORD)
        _, body = cp.call("POST", "/api/v1/apikeys", {"name": "sync", "scopes": ["sync"], "expires_in_days": 1},
                          self.admin)
        sync_key = body["key"]
        _, body = cp.call("POST", "/api/v1/apikeys", {"name": "probe", "scopes": ["orders:read"],
                                                      "expires_in_days": 1}, self.admin)
        self.probe, self.probe_id, owner = body["key"], body["id"], body.get("owner_id", "")
        if not owner:
            _, me = cp.call("GET", "/api/v1/auth/me", token=self.admin)
            owner = me.get("id") or me.get("sub")
        cp.stop()
        t0 = time.monotonic()
        bulk_insert(cp.dir / "m.db", self.n, owner)
        row["insert_s"] = time.monotonic() - t0
        cp.start(timeout=120)
        row["snapshot_bytes"], row["pages"], row["snapshot_s"] = snapshot_stats(cp, sync_key)
        _, head = cp.call("GET", "/api/v1/sync?wait=0&since=0&limit=1", token=sync_key)
        version = head.get("version")
        self.stack = h.Stack(f"scale-{self.n}", sync_plugin(cp.issuer, sync_key), self.cp.dir.parent,
                             control_plane_port=cp.port)
        t_start = time.monotonic()
        self.stack.start()
        while time.monotonic() - t_start < 300:
            if stat_now(self.stack, "wasmcustom.meshgate.sync.version") >= version:
                row["sync_s"] = time.monotonic() - t_start
                break
            time.sleep(0.05)
        else:
            raise RuntimeError(f"N={self.n}: not synced to {version} in 300 s")
        time.sleep(0.5)
        # The polling VM's own time on the responses (parse, validate, write
        # shards); the rest of the sync is waiting for the control plane.
        row["apply_s"] = stat_now(self.stack, "wasmcustom.meshgate.sync.apply_us") / 1e6
        row["rss_mib"] = rss_kib(self.stack.envoy.pid) / 1024
        row["workers"] = len(self.stack.worker_cx())

    def delta_ms(self) -> float | None:
        """Revoke the probe key through the API; time until both workers refuse it."""
        t1 = time.monotonic()
        self.cp.call("DELETE", f"/api/v1/apikeys/{self.probe_id}", token=self.admin)
        conns = [http.client.HTTPConnection("127.0.0.1", self.stack.port, timeout=10) for _ in range(8)]
        while time.monotonic() - t1 < 10:
            statuses = []
            for c in conns:
                c.request("GET", "/api/x", headers={"X-API-Key": self.probe})
                r = c.getresponse()
                r.read()
                statuses.append(r.status)
            if all(s == 401 for s in statuses):
                return (time.monotonic() - t1) * 1000
        return None

    def stop(self) -> None:
        if self.stack:
            self.stack.stop()
        self.cp.stop()


def side_by_side(base: Scaled, big: Scaled) -> dict:
    """CPU per request of `big` and `base`, alternated round by round (so the
    machine's drift hits both alike): a warm key, and keys neither VM has
    seen (one shard read each). Ratios big/base: min, median, max."""
    out = {}
    cold_keys = [mint_api_key() for _ in range(REQUESTS)]
    for label, keys_of in (("warm", lambda s: [s.probe]), ("cold", lambda s: cold_keys)):
        ratios, bigs = [], []
        for _ in range(ROUNDS):
            b = cpu_per_request(base.stack, keys_of(base), REQUESTS)
            x = cpu_per_request(big.stack, keys_of(big), REQUESTS)
            ratios.append(x / b)
            bigs.append(x)
        ratios.sort()
        out[f"{label}_us"] = statistics.median(bigs)
        out[f"{label}_ratio"] = (ratios[0], statistics.median(ratios), ratios[-1])
    return out


def main() -> int:
    sizes = [int(a) for a in sys.argv[1:]] or [10_000, 100_000, 1_000_000]
    h.R = h.Results()
    rows = []
    with tempfile.TemporaryDirectory(prefix="meshgate-scale-") as tmp:
        base = Scaled(100, Path(tmp))
        print("--- scale: baseline N=100 (kept running for side-by-side CPU)", flush=True)
        base.start()
        base.row.update({"warm_us": 0.0, "cold_us": 0.0, "warm_ratio": None, "cold_ratio": None})
        rows.append(base.row)
        try:
            for n in sizes:
                print(f"--- scale: N={n} keys + {n} revocations", flush=True)
                big = Scaled(n, Path(tmp))
                try:
                    big.start()
                    big.row.update(side_by_side(base, big))
                    big.row["delta_ms"] = big.delta_ms()
                finally:
                    big.stop()
                rows.append(big.row)
                print("    " + ", ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}"
                                         for k, v in big.row.items()), flush=True)
            base.row["delta_ms"] = base.delta_ms()
        finally:
            base.stop()
    print("\n| keys + revocations | snapshot (pages) | per key+rev | CP serve | full sync in Envoy (filter busy) | Envoy RSS | "
          "Δ RSS vs 100 | delta (revoke→refused) | CPU/req warm key vs 100 (min/med/max) | "
          "CPU/req unseen key vs 100 |")
    print("|---|---|---|---|---|---|---|---|---|---|")

    def ratio(r, label):
        if r[f"{label}_ratio"] is None:
            return "—"
        lo, med, hi = r[f"{label}_ratio"]
        return f"{r[f'{label}_us']:.0f} µs: {lo:.2f}/{med:.2f}/{hi:.2f}×"

    for r in rows:
        per = r["snapshot_bytes"] / max(1, 2 * r["n"])
        dm = "n/a" if r.get("delta_ms") is None else f"{r['delta_ms']:.0f} ms"
        print(f"| {r['n']:,} | {r['snapshot_bytes'] / 1e6:.1f} MB ({r['pages']}) | {per:.0f} B | {r['snapshot_s']:.2f} s | "
              f"{r['sync_s']:.2f} s ({r['apply_s']:.2f} s) | {r['rss_mib']:.0f} MiB | {r['rss_mib'] - base.row['rss_mib']:+.0f} MiB | {dm} | "
              f"{ratio(r, 'warm')} | {ratio(r, 'cold')} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
