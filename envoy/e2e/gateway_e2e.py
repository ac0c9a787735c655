"""The `gateway` group of envoy/e2e/run.py: the whole system, seen from a client.

Starts `meshgate serve` (SQLite in the run's work directory, a free loopback port), then
Envoy (`--concurrency 2`, the demo bootstrap envoy/demo.yaml.in: `/api/v1/*` and
`/.well-known/*` go to the control plane, everything else to the echo upstream) whose
plugin configuration is the demo's (envoy/demo-plugin.json plus, as `make run` adds it,
the control plane as an issuer and a `sync` section) plus four routes this group needs:

  /editor    role `editor` in app `gw-app`
  /internal  service keys only (`credentials: ["service"]`)
  /ops       admin keys only (`credentials: ["admin"]`)
  /catalog   guests allowed (`guest: true`: X-Guest-ID, read-only)

and one static service key and one static admin key (minted here, digests in the config).

Every request below goes to Envoy's listener, never straight to the control plane; the
only direct calls are the bootstrap ones made before Envoy exists (the admin's login and
the filter's `sync` API key, which the plugin configuration must hold). The admin then
sets things up through the gateway (its token passes the `cp-admin` route):

  public     public route without credentials -> 200; protected route -> 401 with
             `WWW-Authenticate: Bearer realm="..."`; control-plane discovery public,
             control-plane admin API closed to the anonymous
  setup      app `gw-app`, role `editor`, user `carol`, role assignment (through Envoy)
  login      POST /api/v1/auth/login through Envoy with app_id -> token -> /editor -> 200,
             the echo saw x-user-id, x-user-roles, x-app-id; spoofed identity headers never
             reach it; wrong role -> 403 (upstream route and the control-plane admin API)
  apikey     a key created through the control plane reaches the filter by the feed:
             X-API-Key and `Authorization: Bearer mg_...` -> 200, x-auth-method api_key
  keys       static service key on /internal, admin key on /ops; each refused on the other
  guest      GET /catalog with X-Guest-ID -> 200 (x-auth-method guest); POST -> 403
             guest-read-only
  refresh    POST /api/v1/auth/refresh through Envoy -> new access token accepted;
             POST /api/v1/auth/logout through Envoy -> the old access token refused with 401
             `revoked` (learnt from the sync feed) while it is still unexpired
  stats      Envoy's /stats?filter=wasmcustom shows meshgate.allowed, meshgate.denied.*,
             meshgate.sync.version

Imported by run.py, which passes itself as `h` (checks, Stack, fetch, process helpers).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import secrets
import time
from pathlib import Path

import sync_e2e  # the ControlPlane helper (same directory)
import demo_tokens  # envoy/demo_tokens.py (run.py puts envoy/ on sys.path)

ENVOY_DIR = Path(__file__).resolve().parent.parent
DEMO_PLUGIN = ENVOY_DIR / "demo-plugin.json"

APP_ID = "gw-app"
ROLE = "editor"
USER, USER_PASSWORD = "carol", "carol-e2e-password"
GUEST_ID = "guest-42"
REVOKED = "urn:meshgate:problem:revoked"
BOUND = 5.0  # seconds: a change through the sync feed later than this is a failure
GROUP_BUDGET = 60.0

def mint_key(prefix: str = "mg") -> str:
    """A fresh API key in the README's format (envoy/demo_tokens.py)."""
    return demo_tokens.mint_api_key(prefix)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


SERVICE_KEY = mint_key("mg")
ADMIN_KEY = mint_key("mg")

EXTRA_ROUTES = [
    {"name": "editor", "path": {"prefix": "/editor"},
     "policy": {"access": "authenticated", "roles_any": [ROLE], "apps": [APP_ID]}},
    {"name": "internal", "path": {"prefix": "/internal"}, "policy": {"credentials": ["service"]}},
    {"name": "ops", "path": {"prefix": "/ops"}, "policy": {"credentials": ["admin"]}},
    {"name": "catalog", "path": {"prefix": "/catalog"}, "policy": {"guest": True}},
]


def gateway_plugin(issuer: str, sync_key: str) -> dict:
    """The demo configuration as `make run` completes it, plus this group's routes and keys."""
    cfg = json.loads(DEMO_PLUGIN.read_text())
    # As envoy/run_demo.py's plugin_config(): the control plane as an issuer (its keys come
    # from the feed) and the sync section.
    cfg.setdefault("issuers", []).append({"issuer": issuer, "audiences": ["meshgate"]})
    cfg["sync"] = {"cluster": "control_plane", "api_key": sync_key, "wait_secs": 30}
    routes = cfg.setdefault("routes", [])
    # Before the demo's catch-all `/api` and default deny; after its public and admin routes.
    names = [r.get("name") for r in routes]
    at = names.index("api") if "api" in names else len(routes)
    routes[at:at] = EXTRA_ROUTES
    keys = cfg.setdefault("keys", {})
    keys["service_keys"] = [{"id": "svc-billing", "digest": digest(SERVICE_KEY), "subject": "billing-worker",
                             "app_id": "billing", "roles": ["service"], "scopes": ["billing:run"]}]
    keys["admin_keys"] = [{"id": "ops-oncall", "digest": digest(ADMIN_KEY), "subject": "oncall",
                           "roles": ["admin"], "scopes": ["ops:all"]}]
    return cfg


def group_gateway(h, work: Path) -> None:
    R = h.R
    name = "gateway"
    t_group = time.monotonic()
    if not os.access(sync_e2e.MESHGATE_BIN, os.X_OK):
        R.check(False, f"{name}: control plane binary",
                f"no {sync_e2e.MESHGATE_BIN} (run `cargo build -p meshgate`)")
        return
    cp = sync_e2e.ControlPlane(h, work / "gateway-cp")
    stack = None
    failed_before = R.failed

    def gw(method: str, path: str, body: dict | None = None, token: str | None = None,
           headers: dict | None = None):
        """One request to Envoy's listener (a new connection: either worker)."""
        hs = dict(headers or {})
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            hs["Content-Type"] = "application/json"
        if token:
            hs["Authorization"] = f"Bearer {token}"
        c = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=h.HTTP_TIMEOUT)
        try:
            c.request(method, path, body=data, headers=hs)
            r = c.getresponse()
            return h.Resp(r.status, r.getheaders(), r.read())
        finally:
            c.close()

    def until(fn, ok, bound: float = BOUND):
        """Calls fn() every 20 ms until ok(result) or `bound` seconds; (result, seconds or None)."""
        t0 = time.perf_counter()
        r = fn()
        while not ok(r):
            if time.perf_counter() - t0 > bound:
                return r, None
            time.sleep(0.02)
            r = fn()
        return r, time.perf_counter() - t0

    def ids(u: dict) -> str:
        keys = ("x-user-id", "x-user-roles", "x-user-scopes", "x-app-id", "x-auth-method", "x-key-id",
                "x-session-id", "x-guest-id")
        return " ".join(f"{k}={u[k]!r}" for k in keys if k in u) or "(no identity headers)"

    def via_envoy(r) -> bool:
        # Set by Envoy's router on responses it proxied (not on the filter's local replies).
        return "x-envoy-upstream-service-time" in r.headers

    try:
        try:
            secs = cp.start()
        except RuntimeError as e:
            R.check(False, f"{name}: start the control plane", str(e))
            return
        print(f"--- {name}: control plane pid {cp.proc.pid} on 127.0.0.1:{cp.port}, healthy in {secs:.1f}s",
              flush=True)
        # Bootstrap, direct: the filter's sync key must be in the plugin configuration.
        admin = cp.login("admin", sync_e2e.ADMIN_PASSWORD)
        status, body = cp.call("POST", "/api/v1/apikeys",
                               {"name": "e2e gateway sync", "scopes": ["sync"], "expires_in_days": 1}, admin)
        sync_key = body.get("key", "")
        if not R.check(status == 201 and sync_key.startswith("mg_"), f"{name}: admin creates the filter's sync key",
                       f"POST /api/v1/apikeys (direct) -> {status}" + ("" if status == 201 else f" {body}")):
            return

        plugin = gateway_plugin(cp.issuer, sync_key)
        stack = h.Stack(name, plugin, work, control_plane_port=cp.port)
        try:
            stack.start()
        except RuntimeError as e:
            R.check(False, f"{name}: start Envoy + echo upstream", str(e))
            return
        print(f"--- {name}: envoy pid {stack.envoy.pid} on 127.0.0.1:{stack.port} "
              f"(admin :{stack.admin_port}), ready in {stack.ready_secs:.1f}s; routes "
              + ", ".join(r["name"] for r in plugin["routes"]), flush=True)

        # --- public / protected ------------------------------------------------------------
        r = gw("GET", "/public/hello")
        R.check(r.status == 200 and "method" in r.json() and "x-user-id" not in r.upstream,
                f"{name}: public route without credentials -> 200 (echo, anonymous)",
                f"status={r.status} upstream {ids(r.upstream)}")
        r = gw("GET", "/api/orders")
        www = h.hdr(r, "www-authenticate")
        R.check(r.status == 401 and www.startswith('Bearer realm="meshgate-demo"')
                and r.problem() == "urn:meshgate:problem:missing-credentials",
                f"{name}: protected route without credentials -> 401 Bearer challenge",
                f"status={r.status} www-authenticate={www!r} type={r.problem()!r}")
        r = gw("GET", "/.well-known/jwks.json")
        R.check(r.status == 200 and via_envoy(r) and r.json().get("keys"),
                f"{name}: control plane's /.well-known/jwks.json public through the gateway",
                f"status={r.status} keys={len(r.json().get('keys', []))}")
        r = gw("GET", "/api/v1/apps")
        R.check(r.status == 401 and not via_envoy(r),
                f"{name}: control plane's admin API closed to the anonymous at the gateway",
                f"GET /api/v1/apps -> {r.status} {r.problem()!r}")

        # The signing keys arrive by the feed: the admin's token (minted before Envoy
        # started) passes the admin-only control-plane route.
        r, secs = until(lambda: gw("GET", "/api/v1/apps", token=admin), lambda x: x.status == 200, 20.0)
        if not R.check(secs is not None and via_envoy(r),
                       f"{name}: admin token through the gateway reaches the admin API (keys from the feed)",
                       f"GET /api/v1/apps -> {r.status} after {secs if secs is None else round(secs, 2)}s"
                       f" {r.short()[:200] if r.status != 200 else ''}"):
            return

        # --- setup through the gateway ----------------------------------------------------
        steps = []
        r = gw("POST", "/api/v1/apps", {"id": APP_ID, "name": "Gateway e2e app"}, admin)
        steps.append(("POST /api/v1/apps", r, 201))
        r = gw("POST", f"/api/v1/apps/{APP_ID}/roles", {"name": ROLE, "scopes": ["orders:write"]}, admin)
        steps.append((f"POST /api/v1/apps/{APP_ID}/roles", r, 201))
        r = gw("POST", "/api/v1/users", {"username": USER, "password": USER_PASSWORD}, admin)
        steps.append(("POST /api/v1/users", r, 201))
        user_id = r.json().get("id", "")
        r = gw("POST", f"/api/v1/apps/{APP_ID}/users/{user_id}/roles", {"role": ROLE}, admin)
        steps.append((f"POST /api/v1/apps/{APP_ID}/users/<carol>/roles", r, (200, 201)))
        bad = [f"{p} -> {x.short()[:200]}" for p, x, want in steps
               if x.status not in (want if isinstance(want, tuple) else (want,))]
        if not R.check(not bad and bool(user_id), f"{name}: admin sets up app, role, user, assignment via the gateway",
                       "; ".join(f"{p} -> {x.status}" for p, x, _ in steps) + (f"; {bad}" if bad else "")):
            return

        # --- login through the gateway --------------------------------------------------------
        r = gw("POST", "/api/v1/auth/login", {"username": USER, "password": USER_PASSWORD, "app_id": APP_ID})
        tok = r.json()
        access, refresh = tok.get("access_token", ""), tok.get("refresh_token", "")
        c1 = sync_e2e.claims(access)
        if not R.check(r.status == 200 and access and refresh and via_envoy(r),
                       f"{name}: login through the gateway (POST /api/v1/auth/login via Envoy)",
                       f"status={r.status} app_id={c1.get('app_id')!r} roles={c1.get('roles')!r}"
                       f" expires_in={tok.get('expires_in')} x-envoy-upstream-service-time="
                       f"{h.hdr(r, 'x-envoy-upstream-service-time')!r}"
                       + ("" if r.status == 200 else f" {r.short()[:200]}")):
            return
        r = gw("GET", "/editor/drafts", token=access)
        u = r.upstream
        R.check(r.status == 200 and u.get("x-user-id") == user_id and u.get("x-user-roles") == ROLE
                and u.get("x-app-id") == APP_ID and u.get("x-auth-method") == "jwt",
                f"{name}: token -> protected echo route 200; upstream saw x-user-id, x-user-roles, x-app-id",
                f"status={r.status} upstream {ids(u)}")
        r = gw("GET", "/editor/drafts", token=access,
               headers={"X-User-ID": "mallory", "X-User-Roles": "admin", "X-App-ID": "other", "X-Auth-Method": "admin"})
        u = r.upstream
        R.check(r.status == 200 and u.get("x-user-id") == user_id and u.get("x-user-roles") == ROLE
                and u.get("x-app-id") == APP_ID and u.get("x-auth-method") == "jwt",
                f"{name}: client-sent x-user-id/x-user-roles/x-app-id never reach the upstream (with a token)",
                f"status={r.status} upstream {ids(u)}")
        r = gw("GET", "/public/hello", headers={"X-User-ID": "mallory", "X-User-Roles": "admin"})
        u = r.upstream
        R.check(r.status == 200 and not {"x-user-id", "x-user-roles"} & set(u),
                f"{name}: client-sent x-user-id never reaches the upstream (anonymous, public route)",
                f"status={r.status} upstream {ids(u)}")
        r = gw("GET", "/admin/panel", token=access)
        www = h.hdr(r, "www-authenticate")
        R.check(r.status == 403 and r.problem() == "urn:meshgate:problem:insufficient-role"
                and 'error="insufficient_scope"' in www,
                f"{name}: wrong role -> 403 insufficient-role (/admin needs `admin`)",
                f"status={r.status} type={r.problem()!r} www-authenticate={www!r}")
        r = gw("GET", "/api/v1/apps", token=access)
        R.check(r.status == 403 and r.problem() == "urn:meshgate:problem:insufficient-role" and not via_envoy(r),
                f"{name}: wrong role -> 403 at the gateway for the control plane's admin API",
                f"GET /api/v1/apps -> {r.status} {r.problem()!r}")
        r = gw("GET", "/api/v1/auth/me", token=access)
        me = r.json()
        R.check(r.status == 200 and me.get("app_id") == APP_ID and me.get("roles") == [ROLE],
                f"{name}: GET /api/v1/auth/me through the gateway",
                f"status={r.status} app_id={me.get('app_id')!r} roles={me.get('roles')!r}")

        # --- API key from the control plane, by the sync feed -----------------------------
        r = gw("POST", "/api/v1/apikeys", {"name": "carol's e2e key", "owner_id": user_id, "app_id": APP_ID,
                                           "scopes": ["orders:read"], "expires_in_days": 1}, admin)
        created = r.json()
        api_key, key_id = created.get("key", ""), created.get("id", "")
        t_created = time.perf_counter()
        if R.check(r.status == 201 and api_key.startswith("mg_"),
                   f"{name}: API key created through the control plane (via the gateway)",
                   f"status={r.status} id={key_id!r}" + ("" if r.status == 201 else f" {r.short()[:200]}")):
            r, secs = until(lambda: gw("GET", "/api/orders", headers={"X-API-Key": api_key}),
                            lambda x: x.status == 200)
            u = r.upstream
            R.check(secs is not None and u.get("x-auth-method") == "api_key" and u.get("x-key-id") == key_id
                    and u.get("x-user-id") == user_id and "x-api-key" not in u,
                    f"{name}: API key in X-API-Key -> 200, x-auth-method api_key (key came by the feed)",
                    f"accepted {(time.perf_counter() - t_created) * 1000:.0f} ms after creation; status={r.status}"
                    f" upstream {ids(u)} x-api-key forwarded={'x-api-key' in u}")
            r = gw("GET", "/api/orders", token=api_key)
            u = r.upstream
            R.check(r.status == 200 and u.get("x-auth-method") == "api_key" and u.get("x-key-id") == key_id
                    and "authorization" not in u,
                    f"{name}: API key as Authorization: Bearer mg_... -> 200, x-auth-method api_key",
                    f"status={r.status} upstream {ids(u)} authorization forwarded={'authorization' in u}")
        r = gw("GET", "/api/orders", headers={"X-API-Key": mint_key("mg")})
        R.check(r.status == 401 and r.problem() == "urn:meshgate:problem:unknown-api-key",
                f"{name}: a well-formed unknown key -> 401 unknown-api-key", f"status={r.status} {r.problem()!r}")

        # --- service and admin keys (static, in the plugin configuration) -----------------
        r = gw("GET", "/internal/jobs", headers={"X-Service-Key": SERVICE_KEY})
        u = r.upstream
        R.check(r.status == 200 and u.get("x-auth-method") == "service" and u.get("x-key-id") == "svc-billing"
                and u.get("x-user-id") == "billing-worker" and "x-service-key" not in u,
                f"{name}: service key route: X-Service-Key -> 200, x-auth-method service",
                f"status={r.status} upstream {ids(u)}")
        r = gw("GET", "/ops/flags", headers={"X-Admin-Key": ADMIN_KEY})
        u = r.upstream
        R.check(r.status == 200 and u.get("x-auth-method") == "admin" and u.get("x-key-id") == "ops-oncall"
                and "x-admin-key" not in u,
                f"{name}: admin key route: X-Admin-Key -> 200, x-auth-method admin",
                f"status={r.status} upstream {ids(u)}")
        got = {
            "service key on /ops": gw("GET", "/ops/flags", headers={"X-Service-Key": SERVICE_KEY}),
            "admin key on /internal": gw("GET", "/internal/jobs", headers={"X-Admin-Key": ADMIN_KEY}),
            "user token on /internal": gw("GET", "/internal/jobs", token=access),
        }
        R.check(all(x.status == 401 and x.problem() == "urn:meshgate:problem:credential-not-accepted"
                    for x in got.values()),
                f"{name}: each key kind refused on the other's route (401 credential-not-accepted)",
                "; ".join(f"{k} -> {x.status} {x.problem().rsplit(':', 1)[-1]}" for k, x in got.items()))

        # --- guest read-only -----------------------------------------------------------------
        r = gw("GET", "/catalog/items", headers={"X-Guest-ID": GUEST_ID})
        u = r.upstream
        R.check(r.status == 200 and u.get("x-auth-method") == "guest" and u.get("x-guest-id") == GUEST_ID,
                f"{name}: guest route: GET with X-Guest-ID -> 200, x-auth-method guest",
                f"status={r.status} upstream {ids(u)}")
        r = gw("POST", "/catalog/items", {"name": "x"}, headers={"X-Guest-ID": GUEST_ID})
        R.check(r.status == 403 and r.problem() == "urn:meshgate:problem:guest-read-only",
                f"{name}: guest route: POST with X-Guest-ID -> 403 guest-read-only",
                f"status={r.status} type={r.problem()!r}")
        r = gw("GET", "/api/orders", headers={"X-Guest-ID": GUEST_ID})
        R.check(r.status == 401, f"{name}: X-Guest-ID is no credential on a non-guest route -> 401",
                f"status={r.status} type={r.problem()!r}")

        # --- refresh, then logout, through the gateway ------------------------------------------
        r = gw("POST", "/api/v1/auth/refresh", {"refresh_token": refresh})
        tok2 = r.json()
        access2, refresh2 = tok2.get("access_token", ""), tok2.get("refresh_token", "")
        c2 = sync_e2e.claims(access2)
        R.check(r.status == 200 and access2 and access2 != access and refresh2 and refresh2 != refresh
                and c2.get("sid") == c1.get("sid") and via_envoy(r),
                f"{name}: refresh through the gateway -> new access and refresh tokens, same session",
                f"status={r.status} new jti={c2.get('jti') != c1.get('jti')} sid kept={c2.get('sid') == c1.get('sid')}"
                + ("" if r.status == 200 else f" {r.short()[:200]}"))
        r = gw("GET", "/editor/drafts", token=access2)
        R.check(r.status == 200 and r.upstream.get("x-user-id") == user_id,
                f"{name}: the refreshed access token is accepted", f"status={r.status} upstream {ids(r.upstream)}")
        r = gw("POST", "/api/v1/auth/logout", token=access2)
        t_logout = time.perf_counter()
        R.check(r.status == 204 and via_envoy(r), f"{name}: logout through the gateway -> 204",
                f"status={r.status}" + ("" if r.status == 204 else f" {r.short()[:200]}"))
        refused = lambda x: x.status == 401 and x.problem() == REVOKED  # noqa: E731
        r, secs = until(lambda: gw("GET", "/editor/drafts", token=access), refused)
        left = c1.get("exp", 0) - int(time.time())
        # Then on new connections until each worker has answered at least twice (attributed
        # one by one with the listener's per-worker connection counters): every one refuses
        # the old and the refreshed token.
        more, seen = [], {}
        for i in range(24):
            before = stack.worker_cx()
            more.append(gw("GET", "/editor/drafts", token=(access, access2)[i % 2]))
            after = stack.worker_cx()
            for w in after:
                if after[w] - before.get(w, 0) == 1:
                    seen[w] = seen.get(w, 0) + 1
            if len(seen) >= 2 and min(seen.values()) >= 2:
                break
        R.check(secs is not None and left > 0 and all(refused(x) for x in more) and len(seen) >= 2,
                f"{name}: after logout the old access token is refused by Envoy (401 revoked), before it expires",
                (f"refused {(time.perf_counter() - t_logout) * 1000:.0f} ms after the logout's response"
                 if secs is not None else f"not refused within {BOUND:.0f}s: {r.short()[:200]}")
                + f"; token still valid for {left}s; {len(more)} more requests (old and refreshed token, new"
                f" connections; per worker {dict(sorted(seen.items()))}):"
                f" {sorted({f'{x.status} {x.problem().rsplit(chr(58), 1)[-1]}' for x in more})}"
                f"; www-authenticate={h.hdr(r, 'www-authenticate')!r}")
        r = gw("POST", "/api/v1/auth/login", {"username": USER, "password": USER_PASSWORD, "app_id": APP_ID})
        other = r.json().get("access_token", "")
        r = gw("GET", "/editor/drafts", token=other) if other else r
        R.check(r.status == 200, f"{name}: a new session's token still passes (logout ended one session)",
                f"status={r.status}")

        # --- Envoy stats -----------------------------------------------------------------------
        s = stack.stats("wasmcustom")
        want = {
            "wasmcustom.meshgate.allowed": 1,
            "wasmcustom.meshgate.allowed.jwt": 1,
            "wasmcustom.meshgate.allowed.api_key": 2,
            "wasmcustom.meshgate.allowed.service": 1,
            "wasmcustom.meshgate.allowed.admin": 1,
            "wasmcustom.meshgate.allowed.guest": 1,
            "wasmcustom.meshgate.denied.missing-credentials": 1,
            "wasmcustom.meshgate.denied.insufficient-role": 2,
            "wasmcustom.meshgate.denied.guest-read-only": 1,
            "wasmcustom.meshgate.denied.revoked": 1,
            "wasmcustom.meshgate.sync.version": 1,
        }
        short = {k: s.get(k) for k in want}
        R.check(all((s.get(k) or 0) >= v for k, v in want.items()),
                f"{name}: Envoy /stats?filter=wasmcustom shows the filter's counters",
                ", ".join(f"{k.removeprefix('wasmcustom.')}={v}" for k, v in short.items())
                + f" (+{len(s) - len(short)} more wasmcustom stats)")
        print(f"--- {name}: {time.monotonic() - t_group:.1f}s", flush=True)
        R.check(time.monotonic() - t_group < GROUP_BUDGET, f"{name}: group within {GROUP_BUDGET:.0f}s",
                f"{time.monotonic() - t_group:.1f}s")
    except (OSError, http.client.HTTPException, ValueError, KeyError, RuntimeError) as e:
        R.check(False, f"{name}: scenario aborted", f"{type(e).__name__}: {e}")
    finally:
        if R.failed > failed_before or os.environ.get("MESHGATE_E2E_VERBOSE"):
            if stack:
                stack.dump_log()
            print(f"=============== [{name}] control plane log (tail) ===============")
            print(cp.log_tail())
        if stack:
            stack.stop()
        h._stop(cp.proc)
