"""The `credits` group of envoy/e2e/run.py: metering in a real Envoy (2 workers).

Starts `meshgate serve` (SQLite) and Envoy following its sync feed with a `credits`
section (route `metered` costs 1 credit, usage flushed every 200 ms), then, over
keep-alive connections on both workers:

  uses      an API key created with `max_uses: 7` passes exactly 7 times (an unmetered
            route: uses count everywhere), then 402 `key-uses-exhausted`; the control
            plane's `uses` balance reaches exactly 0 (every use reported once)
  credits   a user granted 5 credits passes the metered route exactly 5 times, then 402
            `credits-exhausted`; the balance reaches 0
  refill    a grant of 3 reaches the filter; the control plane is stopped (SIGTERM):
            the filter keeps metering on its local budget (exactly 3 more pass); after
            a restart the unsent usage arrives once: balance exactly 0, ledger usage
            exactly 8

Imported by run.py, which passes itself as `h` (checks, Stack, fetch, process helpers).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import sync_e2e  # the ControlPlane and Conns helpers (same directory)

USES = 7
GRANT = 5
REFILL = 3
BOUND = 10.0  # seconds for a change to travel through the feed or a flush
USES_EXHAUSTED = "urn:meshgate:problem:key-uses-exhausted"
CREDITS_EXHAUSTED = "urn:meshgate:problem:credits-exhausted"


def plugin(issuer: str, sync_key: str) -> dict:
    cfg = sync_e2e.sync_plugin(issuer, sync_key)
    cfg["routes"].insert(1, {"name": "metered", "path": {"prefix": "/metered"},
                             "policy": {"access": "authenticated"}})
    cfg["credits"] = {"routes": {"metered": 1}, "flush_interval_ms": 200}
    return cfg


def balance(cp, admin: str, kind: str, ident: str) -> int | None:
    status, body = cp.call("GET", f"/api/v1/credits?kind={kind}&id={ident}", token=admin)
    rows = body.get("_list", []) if status == 200 else []
    return rows[0]["balance"] if rows else None


def wait_balance(cp, admin: str, kind: str, ident: str, want: int) -> int | None:
    deadline = time.monotonic() + BOUND
    got = None
    while time.monotonic() < deadline:
        got = balance(cp, admin, kind, ident)
        if got == want:
            return got
        time.sleep(0.1)
    return got


def used(cp, admin: str, kind: str, ident: str) -> int:
    status, body = cp.call("GET", f"/api/v1/credits/usage?kind={kind}&id={ident}&reason=usage&limit=500",
                           token=admin)
    return -sum(e.get("amount", 0) for e in body.get("items", [])) if status == 200 else -1


def spend(h, stack, conns, path: str, headers: dict, attempts: int) -> tuple[int, list]:
    """`attempts` requests alternating over every connection (both workers)."""
    passed, refusals = 0, []
    for i in range(attempts):
        r = h.fetch(stack.port, path, headers, conn=conns.conns[i % len(conns.conns)])
        if r.status == 200:
            passed += 1
        else:
            refusals.append((r.status, r.problem()))
    return passed, refusals


def group_credits(h, work: Path) -> None:
    R = h.R
    name = "credits"
    if not os.access(sync_e2e.MESHGATE_BIN, os.X_OK):
        R.check(False, f"{name}: control plane binary", f"no {sync_e2e.MESHGATE_BIN} (run `cargo build -p meshgate`)")
        return
    cp = sync_e2e.ControlPlane(h, work / "credits-cp")
    stack = None
    conns = None
    failed_before = R.failed
    try:
        try:
            cp.start()
        except RuntimeError as e:
            R.check(False, f"{name}: start the control plane", str(e))
            return
        admin = cp.login("admin", sync_e2e.ADMIN_PASSWORD)
        keys = {}
        for label, extra in [("sync", {"scopes": ["sync"]}), ("uses", {"max_uses": USES}), ("probe", {})]:
            status, body = cp.call("POST", "/api/v1/apikeys", {"name": f"e2e {label}", "expires_in_days": 1, **extra},
                                   admin)
            if not R.check(status == 201, f"{name}: create the {label} key", f"{status} {body}" if status != 201 else ""):
                return
            keys[label] = body
        uses_id = keys["uses"]["id"]
        R.check(balance(cp, admin, "uses", uses_id) == USES, f"{name}: a max_uses key opens its uses account",
                f"uses:{uses_id} = {balance(cp, admin, 'uses', uses_id)}")
        status, body = cp.call("POST", "/api/v1/users", {"username": "dana", "password": sync_e2e.USER_PASSWORD}, admin)
        dana = body.get("id", "")
        status, body = cp.call("POST", "/api/v1/credits/grant",
                               {"request_id": "e2e-grant-1", "kind": "user", "id": dana, "amount": GRANT}, admin)
        R.check(status == 200 and body.get("entry", {}).get("balance_after") == GRANT,
                f"{name}: grant {GRANT} credits to a user", f"{status} {body}")

        stack = h.Stack(name, plugin(cp.issuer, keys["sync"]["key"]), work, control_plane_port=cp.port)
        try:
            stack.start()
        except RuntimeError as e:
            R.check(False, f"{name}: start Envoy + echo upstream", str(e))
            return
        probe = {"X-API-Key": keys["probe"]["key"]}
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and h.fetch(stack.port, "/api/ready", probe).status != 200:
            time.sleep(0.05)
        conns = sync_e2e.Conns(h, stack)
        per = conns.per_worker()
        if not R.check(len(per) >= 2, f"{name}: keep-alive connections on both workers", f"{per}"):
            return

        # --- remaining uses: exactly N through one Envoy process ---
        passed, refusals = spend(h, stack, conns, "/api/thing", {"X-API-Key": keys["uses"]["key"]}, 2 * USES + 3)
        R.check(passed == USES and all(r == (402, USES_EXHAUSTED) for r in refusals),
                f"{name}: a max_uses={USES} key passes exactly {USES} times over both workers",
                f"passed={passed} refusals={sorted(set(refusals))}")
        got = wait_balance(cp, admin, "uses", uses_id, 0)
        R.check(got == 0 and used(cp, admin, "uses", uses_id) == USES,
                f"{name}: the uses were reported once", f"balance={got} ledger usage={used(cp, admin, 'uses', uses_id)}")

        # --- credits on a metered route ---
        token = cp.login("dana", sync_e2e.USER_PASSWORD)
        auth = {"Authorization": f"Bearer {token}"}
        passed, refusals = spend(h, stack, conns, "/metered/gen", auth, GRANT + 4)
        R.check(passed == GRANT and all(r == (402, CREDITS_EXHAUSTED) for r in refusals),
                f"{name}: {GRANT} credits buy exactly {GRANT} metered requests", f"passed={passed} refusals={refusals}")
        R.check(h.fetch(stack.port, "/api/free", auth).status == 200, f"{name}: unmetered routes still pass")
        got = wait_balance(cp, admin, "user", dana, 0)
        R.check(got == 0, f"{name}: usage flushed to the control plane", f"balance={got}")

        # --- refill, then an outage and a restart ---
        status, body = cp.call("POST", "/api/v1/credits/grant",
                               {"request_id": "e2e-refill", "kind": "user", "id": dana, "amount": REFILL}, admin)
        R.check(status == 200, f"{name}: refill {REFILL}", f"{status} {body}")
        t0 = time.monotonic()
        first = None
        while time.monotonic() - t0 < BOUND:
            r = h.fetch(stack.port, "/metered/gen", auth, conn=conns.conns[0])
            if r.status == 200:
                first = time.monotonic() - t0
                break
            time.sleep(0.02)
        R.check(first is not None, f"{name}: the refill reaches the filter",
                f"after {first:.3f}s" if first is not None else "not within bound")
        cp.stop()
        passed, refusals = spend(h, stack, conns, "/metered/gen", auth, REFILL + 3)
        R.check(passed + 1 == REFILL and all(r[0] == 402 for r in refusals),
                f"{name}: with the control plane down the local budget still holds",
                f"passed={passed}+1 (probe) refusals={refusals}")
        cp.start()
        got = wait_balance(cp, admin, "user", dana, 0)
        total = used(cp, admin, "user", dana)
        R.check(got == 0 and total == GRANT + REFILL,
                f"{name}: after the restart the unsent usage arrives exactly once",
                f"balance={got} ledger usage={total} (want 0 and {GRANT + REFILL})")
        time.sleep(1.1)  # request counters reach Envoy on the filter's tick
        stats = h.fetch(stack.admin_port, "/stats?filter=meshgate.denied.credits").body.decode()
        R.check("credits-exhausted" in stats, f"{name}: refusals counted in Envoy stats",
                " ".join(l.strip() for l in stats.splitlines() if "exhausted" in l))
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
