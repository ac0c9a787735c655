#!/usr/bin/env python3
"""Side-by-side Envoy benchmark: meshgate vs no filter, a no-op Wasm filter and Envoy's
native jwt_authn + local_ratelimit (issue 9). Standard library only; ES256/EdDSA tokens
need the `cryptography` wheel (the `bench-envoy` Makefile target installs it into .venv
and runs this script with .venv/bin/python); without it those variants are skipped.

One Envoy (`--concurrency 1`, pinned to CPU 0 with taskset) with a listener per variant,
each with its own Wasm VM and the same `direct_response` route (200, 3 bytes), so only the
HTTP filters differ (`--envoy-per-variant`: an Envoy each, the old way; two Envoys with the
same configuration differ by several µs per request, which one process does not). wrk
(Debian package) runs pinned to CPU 1, one variant at a time, and the variants alternate
A B C D, B C D A, … over the rounds so that drift (thermal, other load) spreads evenly and
no variant always follows the same one; each variant is also paired round by round with
`--reference` (the no-op filter). Then a fixed-rate phase (`bench/pace`, `--rate`, default
4000 req/s) measures latency at the same offered load for every variant, which wrk's
closed loop at saturation cannot. Every request carries a valid credential; before
measuring, each variant must answer 200 to it and 401 to a forged one (`--allow-open` lets
an ablation build skip the second), and a run with any non-2xx response or socket error is
flagged, so error paths are never what is measured.

    bench/run.py                         # 5 s per run, 3 rounds, every variant
    bench/run.py --duration 10 --rounds 5 --connections 64
    bench/run.py --variants baseline,noop-wasm,meshgate-hs256

Variants (see bench/README.md): baseline, noop-wasm, native-{hs256,es256,eddsa},
meshgate-{hs256,es256,eddsa,apikey}; {native,meshgate}-{es256,eddsa}-cold, where every
request brings a token never seen before (bench/tokens.lua; the report derives the
first-seen token cost from them; --cold-tokens 0 leaves them out); and ext-authz-apikey
(central verification: the script starts `meshgate serve` — target/release/meshgate, else
target/debug — on a temporary SQLite directory pinned to Envoy's core, creates an API key
through its API and points Envoy's ext_authz at its forward-auth endpoint).

Writes the table to bench/results.md (machine, Envoy version, date, per-round numbers).
Everything started is stopped on exit, Ctrl-C included.

Environment: ENVOY (default .venv/bin/envoy), MESHGATE_WASM (the release .wasm),
MESHGATE_BENCH_NOOP_WASM (the no-op module), WRK (default `wrk`), MESHGATE_BENCH_PACE (default
target/release/meshgate-pace),
MESHGATE_BENCH_FORWARD_AUTH_URL, MESHGATE_BENCH_FORWARD_AUTH_KEY (variant 5 against a control
plane you run instead of the one the script starts).
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import hmac
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import string
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "envoy"))
import demo_tokens  # noqa: E402  (envoy/demo_tokens.py: the API key format)
ENVOY_DIR = HERE / "envoy"
DEFAULT_ENVOY = REPO / ".venv" / "bin" / "envoy"
DEFAULT_WASM = REPO / "target" / "wasm32-wasip1" / "release" / "meshgate_filter.wasm"
DEFAULT_NOOP_WASM = HERE / "noop-filter" / "target" / "wasm32-wasip1" / "release" / "meshgate_bench_noop.wasm"
DEFAULT_PACE = REPO / "target" / "release" / "meshgate-pace"
CONTROL_PLANE_BINARIES = [REPO / "target" / "release" / "meshgate", REPO / "target" / "debug" / "meshgate"]

ISSUER = "meshgate-bench"
AUDIENCE = "meshgate-bench"
SUBJECT = "bench-user"
REQUEST_PATH = "/api/bench"

# `--browser-headers`: what a browser's API call carries besides the credential (wrk and
# pace send only Host and the credential). Header work in Envoy and in a filter that
# rewrites the whole map grows with the count; a verifier's does not.
BROWSER_HEADERS = {
    "user-agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
    "accept": "application/json, text/plain, */*",
    "accept-language": "en-GB,en;q=0.9",
    "accept-encoding": "gzip, deflate, br, zstd",
    "referer": "https://app.example.com/dashboard",
    "origin": "https://app.example.com",
    "sec-fetch-site": "same-site",
    "sec-fetch-mode": "cors",
    "sec-fetch-dest": "empty",
    "sec-ch-ua": '"Chromium";v="131", "Not_A Brand";v="24"',
    "sec-ch-ua-platform": '"Linux"',
    "cookie": "session=0123456789abcdef0123456789abcdef; theme=dark",
}

try:  # ES256 / EdDSA signing; optional so the HS256 half runs on a bare Python.
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    HAVE_CRYPTOGRAPHY = True
except ImportError:  # pragma: no cover - depends on the interpreter
    HAVE_CRYPTOGRAPHY = False


# --------------------------------------------------------------------------- credentials


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _compact(obj: dict) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


class Signer:
    """One JWT signing key: its JWK (public part) and a sign() for compact JWTs."""

    def __init__(self, alg: str, kid: str):
        self.alg, self.kid = alg, kid
        if alg == "HS256":
            self._secret = os.urandom(32)
            self.jwk = {"kty": "oct", "kid": kid, "alg": "HS256", "k": b64url(self._secret)}
        elif alg == "EdDSA":
            self._key = ed25519.Ed25519PrivateKey.generate()
            raw = self._key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            self.jwk = {"kty": "OKP", "crv": "Ed25519", "kid": kid, "alg": "EdDSA", "x": b64url(raw)}
        elif alg == "ES256":
            self._key = ec.generate_private_key(ec.SECP256R1())
            nums = self._key.public_key().public_numbers()
            self.jwk = {
                "kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256",
                "x": b64url(nums.x.to_bytes(32, "big")), "y": b64url(nums.y.to_bytes(32, "big")),
            }
        else:
            raise ValueError(alg)

    def _signature(self, data: bytes) -> bytes:
        if self.alg == "HS256":
            return hmac.new(self._secret, data, hashlib.sha256).digest()
        if self.alg == "EdDSA":
            return self._key.sign(data)
        r, s = decode_dss_signature(self._key.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def token(self, ttl: int = 7200) -> str:
        now = int(time.time())
        header = {"alg": self.alg, "typ": "JWT", "kid": self.kid}
        claims = {
            "iss": ISSUER, "aud": AUDIENCE, "sub": SUBJECT, "iat": now, "exp": now + ttl,
            "jti": b64url(os.urandom(12)), "roles": ["reader"], "scope": "bench:read",
        }
        signing_input = f"{b64url(_compact(header))}.{b64url(_compact(claims))}"
        return f"{signing_input}.{b64url(self._signature(signing_input.encode()))}"


def api_key(prefix: str = "mg") -> str:
    """A fresh meshgate API key (the format lives in envoy/demo_tokens.py)."""
    return demo_tokens.mint_api_key(prefix)


# --------------------------------------------------------------------------- rendering


def yaml_string(text: str) -> str:
    """A YAML double-quoted scalar holding `text` exactly (a JSON string literal is one)."""
    return json.dumps(text, ensure_ascii=True)


def fill(template: str, **values: str) -> str:
    return string.Template(template).substitute(values)


def template(path: Path) -> str:
    """A template to splice into the bootstrap, its `#` comment lines dropped."""
    return "\n".join(line for line in path.read_text().splitlines() if not line.startswith("#"))


def snippet(name: str, indent: int, **values: str) -> str:
    text = template(ENVOY_DIR / "filters" / f"{name}.yaml.in")
    return textwrap.indent(fill(text, **values), " " * indent)


def render_listener(variant: str, port: int, filters: str) -> str:
    return fill(template(ENVOY_DIR / "listener.yaml.in"), VARIANT=variant, PORT=str(port),
                HTTP_FILTERS=filters.rstrip("\n") if filters else "")


def render_bootstrap(node: str, admin_port: int, listeners: list[tuple[str, int, str]], clusters: str) -> str:
    """An Envoy with one listener per (variant, port, HTTP filters)."""
    return fill(
        (ENVOY_DIR / "bootstrap.yaml.in").read_text(),
        NODE=node, ADMIN_PORT=str(admin_port), CLUSTERS=clusters or "    []",
        LISTENERS="\n".join(render_listener(*spec) for spec in listeners),
    )


def own_vm(filters: str, variant: str) -> str:
    """`filters` with every Wasm `vm_id` made the variant's own (one Envoy for all): variants with
    the same module and configuration would otherwise share a VM, and so its caches (a
    `-cold` variant would churn its hot twin's token cache)."""
    return re.sub(r"^(\s*vm_id: )(\S+)$", lambda m: f"{m.group(1)}{m.group(2)}-{variant}", filters, flags=re.M)


def plugin_config(path: Path, signers: list[Signer], key_digest: str) -> str:
    """The plugin JSON at `path` with the run's JWKs and API key put in (the file holds
    the policy; `issuers[0].keys`, its `algorithms` and `keys.api_keys` are overwritten)."""
    cfg = json.loads(path.read_text())
    cfg["issuers"][0]["keys"] = [s.jwk for s in signers]
    cfg["issuers"][0]["algorithms"] = [s.alg for s in signers]
    cfg["keys"]["api_keys"] = [{
        "id": "bench-key", "digest": key_digest, "subject": SUBJECT, "app_id": "bench",
        "roles": ["reader"], "scopes": ["bench:read"],
    }]
    return json.dumps(cfg, separators=(",", ":"))


# --------------------------------------------------------------------------- variants


@dataclass
class Variant:
    name: str
    group: str  # baseline | noop | native | meshgate | central
    describe: str
    headers: dict[str, str] = field(default_factory=dict)  # the valid credential
    bad_headers: dict[str, str] | None = None  # a forged credential: must get 401
    filters: str = ""
    clusters: str = ""
    alg: str | None = None  # pairs meshgate-X with native-X
    skip: str | None = None  # why it is not run
    tokens: list[str] | None = None  # "-cold": a distinct token per request (bench/tokens.lua)
    hot: str | None = None  # "-cold": the variant with the same filter and a repeated token
    tokens_file: Path | None = None  # where `tokens` are written for wrk
    counter: str | None = None  # admin stat proving the filter admitted the requests
    central: Path | None = None  # variant 5: the control plane binary main() starts
    central_log: Path | None = None
    side_pids: list[int] = field(default_factory=list)  # CPU counted with Envoy's (the verifier)
    # runtime
    port: int = 0
    admin_port: int = 0
    proc: subprocess.Popen | None = None
    log: Path | None = None
    runs: list[dict] = field(default_factory=list)
    paced: list[dict] = field(default_factory=list)  # the fixed-rate latency phase
    profile: dict | None = None  # `--profile`: where Envoy's CPU went (perf samples)
    extra_headers: dict[str, str] = field(default_factory=dict)  # `--browser-headers`, for -cold variants


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def forward_auth_variant() -> Variant:
    """Variant 5: Envoy ext_authz (HTTP) → the control plane's forward-auth endpoint.

    By default `main` starts `meshgate serve` itself (target/release/meshgate, else the debug
    build, noted in the report) on a temporary SQLite data directory, pinned to Envoy's CPU
    with one Tokio worker, and creates the API key through the API (`start_central`). With
    MESHGATE_BENCH_FORWARD_AUTH_URL (e.g. http://127.0.0.1:8081/api/v1/forward-auth; Envoy
    appends the original path) and MESHGATE_BENCH_FORWARD_AUTH_KEY (an API key that control
    plane accepts, sent as X-API-Key) it measures that one instead.
    """
    v = Variant("ext-authz-apikey", "central", "Envoy ext_authz (HTTP) → control plane forward-auth, X-API-Key")
    url = os.environ.get("MESHGATE_BENCH_FORWARD_AUTH_URL", "").strip()
    key = os.environ.get("MESHGATE_BENCH_FORWARD_AUTH_KEY", "").strip()
    if not url:
        binary = next((b for b in CONTROL_PLANE_BINARIES if b.is_file()), None)
        if binary is None:
            v.skip = ("no control plane binary (`cargo build --release -p meshgate`; `make bench-envoy` builds it), "
                      "and MESHGATE_BENCH_FORWARD_AUTH_URL is not set")
        else:
            v.central = binary
            if binary.parent.name == "debug":
                v.describe += " (debug build of the control plane: its CPU is pessimistic)"
        return v
    if not key:
        v.skip = "MESHGATE_BENCH_FORWARD_AUTH_URL is set but MESHGATE_BENCH_FORWARD_AUTH_KEY is not"
        return v
    u = urllib.parse.urlsplit(url)
    if u.scheme != "http" or not u.hostname:
        v.skip = f"MESHGATE_BENCH_FORWARD_AUTH_URL must be http://host:port/path, got {url!r}"
        return v
    v.skip = point_at_forward_auth(v, u.hostname, u.port or 80, u.path.rstrip("/"), key)
    return v


def point_at_forward_auth(v: Variant, host: str, port: int, path: str, key: str) -> str | None:
    """Fills in the ext_authz filter and cluster for the endpoint at host:port/path after
    checking it answers 200 to `key` and 401 to a forged key; returns why not, if not."""
    probe = f"http://{host}:{port}{path}{REQUEST_PATH}"
    good, _ = http_get(probe, {"x-api-key": key})
    bad, _ = http_get(probe, {"x-api-key": api_key()})
    if (good, bad) != (200, 401):
        return f"forward-auth endpoint {probe} answered {good} to the key and {bad} to a forged one (want 200, 401)"
    v.headers = {"x-api-key": key}
    v.bad_headers = {"x-api-key": api_key()}
    v.filters = snippet("ext-authz", 10, FORWARD_AUTH_URI=yaml_string(f"http://{host}:{port}"),
                        FORWARD_AUTH_PATH=yaml_string(path))
    v.clusters = textwrap.indent(textwrap.dedent(f"""\
        - name: control_plane
          type: STATIC
          connect_timeout: 1s
          load_assignment:
            cluster_name: control_plane
            endpoints:
            - lb_endpoints:
              - endpoint:
                  address:
                    socket_address: {{ address: {host}, port_value: {port} }}
        """), "  ")
    v.counter = "http.bench.ext_authz.ok"
    return None


def api_call(port: int, method: str, path: str, body: dict | None = None, token: str | None = None) -> tuple[int, dict]:
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method, headers=headers,
                                 data=json.dumps(body).encode() if body is not None else None)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, {"error": e.read().decode(errors="replace")[:300]}


def start_central(v: Variant, workdir: Path, cpu: str | None) -> subprocess.Popen:
    """Starts `meshgate serve` for variant 5 on its own temporary SQLite data directory,
    pinned like the Envoys (central verification shares the proxy's core, as the Wasm filter
    does), creates an API key with the bench scope and points `v` at it."""
    port, password = free_port(), b64url(os.urandom(18))
    data = workdir / "control-plane"
    data.mkdir()
    env = dict(os.environ, MESHGATE_LISTEN=f"127.0.0.1:{port}", MESHGATE_DATA_DIR=str(data),
               DATABASE_URL=f"sqlite://{data / 'meshgate.db'}?mode=rwc", MESHGATE_ADMIN_PASSWORD=password,
               MESHGATE_ISSUER=f"http://127.0.0.1:{port}", TOKIO_WORKER_THREADS="1", RUST_LOG="warn")
    v.central_log = workdir / "control-plane.log"
    with open(v.central_log, "wb") as log:
        proc = subprocess.Popen(pinned(cpu, [str(v.central), "serve"]), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 60
    while http_get(f"http://127.0.0.1:{port}/health", {}, timeout=1)[0] != 200:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{v.name}: control plane did not start\n{tail(v.central_log)}")
        time.sleep(0.1)
    status, body = api_call(port, "POST", "/api/v1/auth/login", {"username": "admin", "password": password})
    if status != 200:
        raise RuntimeError(f"{v.name}: admin login answered {status}: {body}")
    status, key = api_call(port, "POST", "/api/v1/apikeys",
                           {"name": "bench", "scopes": ["bench:read"], "expires_in_days": 1}, body["access_token"])
    if status not in (200, 201):
        raise RuntimeError(f"{v.name}: creating the API key answered {status}: {key}")
    if why := point_at_forward_auth(v, "127.0.0.1", port, "/api/v1/forward-auth", key["key"]):
        raise RuntimeError(f"{v.name}: {why}")
    v.side_pids = [proc.pid]
    return proc


def build_variants(wasm: Path, noop_wasm: Path, cold_tokens: int, plugin_path: Path,
                   extra: list[tuple[str, Path, Path]] = (),
                   noop_extra: list[tuple[str, str]] = ()) -> list[Variant]:
    algs = ["HS256", "ES256", "EdDSA"] if HAVE_CRYPTOGRAPHY else ["HS256"]
    signers = {alg: Signer(alg, f"bench-{alg.lower()}") for alg in algs}
    forged = {alg: Signer(alg, f"bench-{alg.lower()}") for alg in algs}  # same kid, other key
    key = api_key()
    digest = hashlib.sha256(key.encode()).hexdigest()
    plugin = yaml_string(plugin_config(plugin_path, list(signers.values()), digest))
    token = {alg: signers[alg].token() for alg in algs}
    bad_token = {alg: forged[alg].token() for alg in algs}
    no_crypto = "the `cryptography` module is missing (run with .venv/bin/python after `pip install cryptography`)"

    out = [
        Variant("baseline", "baseline", "no HTTP filter but the router",
                headers={"authorization": f"Bearer {token['HS256']}"}),
        Variant("noop-wasm", "noop", "no-op proxy-wasm filter (reads 1 header, sets 1), V8",
                headers={"authorization": f"Bearer {token['HS256']}"},
                filters=snippet("noop-wasm", 10, WASM=yaml_string(str(noop_wasm)), MODES=yaml_string(""))),
    ]
    # --noop-variant: the no-op filter plus some of the host calls meshgate makes, to
    # price them on the host's side.
    for tag, modes in noop_extra:
        out.append(Variant(f"noop-wasm+{tag}", "extra", f"no-op proxy-wasm filter with host calls: {modes}",
                           headers={"authorization": f"Bearer {token['HS256']}"},
                           filters=snippet("noop-wasm", 10, WASM=yaml_string(str(noop_wasm)),
                                           MODES=yaml_string(modes))))
    for alg, label in (("HS256", "hs256"), ("ES256", "es256"), ("EdDSA", "eddsa")):
        v = Variant(f"native-{label}", "native",
                    f"Envoy jwt_authn ({alg}, inline JWKS, JWT cache) + local_ratelimit", alg=alg)
        if alg not in signers:
            v.skip = no_crypto
        else:
            v.headers = {"authorization": f"Bearer {token[alg]}"}
            v.bad_headers = {"authorization": f"Bearer {bad_token[alg]}"}
            jwks = json.dumps({"keys": [signers[alg].jwk]}, separators=(",", ":"))
            v.filters = snippet("native", 10, ISSUER=yaml_string(ISSUER), AUDIENCE=yaml_string(AUDIENCE),
                                JWKS=yaml_string(jwks))
            v.counter = "http.bench.jwt_authn.allowed"
        out.append(v)
    meshgate_filters = snippet("meshgate", 10, WASM=yaml_string(str(wasm)), PLUGIN_CONFIG=plugin)
    for alg, label in (("HS256", "hs256"), ("ES256", "es256"), ("EdDSA", "eddsa"), (None, "apikey")):
        what = f"JWT {alg}" if alg else "X-API-Key"
        v = Variant(f"meshgate-{label}", "meshgate",
                    f"meshgate: {what} + route policy (role, scope) + per-user rate limit + identity headers",
                    alg=alg, filters=meshgate_filters)
        if alg is None:
            v.headers, v.bad_headers = {"x-api-key": key}, {"x-api-key": api_key()}
            v.counter = "wasmcustom.meshgate.allowed.api_key"
        elif alg not in signers:
            v.skip = no_crypto
        else:
            v.headers = {"authorization": f"Bearer {token[alg]}"}
            v.bad_headers = {"authorization": f"Bearer {bad_token[alg]}"}
            v.counter = "wasmcustom.meshgate.allowed.jwt"
        out.append(v)
    # First-seen tokens: the same Envoys' filters, but every request brings a token
    # neither cache has seen, so each one pays a full signature check.
    for alg, label in (("ES256", "es256"), ("EdDSA", "eddsa")):
        if cold_tokens <= 0:
            break
        tokens = [signers[alg].token() for _ in range(cold_tokens)] if alg in signers else None
        for hot in (f"native-{label}", f"meshgate-{label}"):
            src = next(v for v in out if v.name == hot)
            v = Variant(f"{hot}-cold", src.group, f"{src.describe}; {cold_tokens} distinct tokens, "
                        "a new one per request (cache misses)", alg=alg, filters=src.filters,
                        headers={"authorization": f"Bearer {tokens[0]}"} if tokens else {},
                        bad_headers=src.bad_headers, skip=src.skip, counter=src.counter,
                        tokens=tokens, hot=hot)
            out.append(v)
    # --variant-plugin / --variant-wasm: meshgate-hs256 again with another policy or build,
    # in the same run, so the comparison is not spoiled by drift between runs.
    for tag, extra_plugin, extra_wasm in extra:
        src = next(v for v in out if v.name == "meshgate-hs256")
        filters = snippet("meshgate", 10, WASM=yaml_string(str(extra_wasm)), PLUGIN_CONFIG=yaml_string(
            plugin_config(extra_plugin, list(signers.values()), digest)))
        out.append(Variant(f"meshgate-hs256+{tag}", "extra",
                           f"meshgate-hs256 with policy {extra_plugin.name}, module {extra_wasm.name}",
                           headers=src.headers, bad_headers=src.bad_headers, filters=filters,
                           counter=src.counter, alg="HS256"))
    out.append(forward_auth_variant())
    return out


# --------------------------------------------------------------------------- processes


def http_get(url: str, headers: dict[str, str], timeout: float = 5.0) -> tuple[int, str]:
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except (urllib.error.URLError, OSError) as e:
        return 0, str(e)


def pinned(cpu: str | None, argv: list[str]) -> list[str]:
    return ["taskset", "-c", cpu, *argv] if cpu is not None else argv


def start_envoy(group: list[Variant], envoy: Path, workdir: Path, cpu: str | None) -> subprocess.Popen:
    """One Envoy serving every variant in `group`, each on its own listener (all of them by
    default; one with --envoy-per-variant)."""
    node = group[0].name if len(group) == 1 else "all"
    admin_port = free_port()
    for v in group:
        v.port, v.admin_port = free_port(), admin_port
        if v.tokens:
            v.tokens_file = workdir / f"{v.name}.tokens"
            v.tokens_file.write_text("\n".join(v.tokens) + "\n")
    filters = [(v.name, v.port, own_vm(v.filters, v.name) if len(group) > 1 else v.filters) for v in group]
    clusters = "\n".join(dict.fromkeys(v.clusters for v in group if v.clusters))
    cfg = workdir / f"{node}.yaml"
    cfg.write_text(render_bootstrap(node, admin_port, filters, clusters))
    log_path = workdir / f"{node}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            pinned(cpu, [str(envoy), "-c", str(cfg), "--concurrency", "1", "--disable-hot-restart",
                         "--log-level", "warning"]),
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    for v in group:
        v.proc, v.log = proc, log_path
    return proc


def wait_ready(v: Variant, deadline: float) -> None:
    while time.monotonic() < deadline:
        if v.proc and v.proc.poll() is not None:
            raise RuntimeError(f"{v.name}: Envoy exited with {v.proc.returncode}\n{tail(v.log)}")
        status, body = http_get(f"http://127.0.0.1:{v.admin_port}/ready", {}, timeout=1)
        if status == 200 and "LIVE" in body:
            return
        time.sleep(0.2)
    raise RuntimeError(f"{v.name}: Envoy not ready in time\n{tail(v.log)}")


def tail(path: Path | None, lines: int = 25) -> str:
    if not path or not path.exists():
        return ""
    return "\n".join("    " + line for line in path.read_text(errors="replace").splitlines()[-lines:])


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    end = time.monotonic() + 10
    for p in procs:
        try:
            p.wait(timeout=max(0.1, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def admin_counter(v: Variant, name: str) -> int | None:
    status, body = http_get(f"http://127.0.0.1:{v.admin_port}/stats?filter=^{re.escape(name)}$", {})
    if status != 200:
        return None
    for line in body.splitlines():
        k, _, val = line.partition(": ")
        if k == name:
            return int(val)
    return None


# --------------------------------------------------------------------------- wrk

def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (the launcher and taskset exec Envoy,
    so the Popen pid is Envoy's own)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def parse_ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text.strip())
    if not m:
        raise ValueError(f"latency {text!r}")
    return float(m.group(1)) * UNITS[m.group(2)]


def parse_wrk(out: str) -> dict:
    res: dict = {"rps": None, "p50": None, "p99": None, "requests": None, "non2xx": 0, "socket_errors": 0}
    if m := re.search(r"Requests/sec:\s+([\d.]+)", out):
        res["rps"] = float(m.group(1))
    if m := re.search(r"^\s*(\d+) requests in", out, re.M):
        res["requests"] = int(m.group(1))
    for pct, key in (("50", "p50"), ("99", "p99")):
        if m := re.search(rf"^\s*{pct}(?:\.0+)?%\s+(\S+)", out, re.M):
            res[key] = parse_ms(m.group(1))
    if m := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out):
        res["non2xx"] = int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        res["socket_errors"] = sum(int(x) for x in m.groups())
    return res


def run_wrk(wrk: str, v: Variant, a: argparse.Namespace, seconds: int) -> dict:
    argv = [wrk, f"-t{a.threads}", f"-c{a.connections}", f"-d{seconds:g}s", "--latency", "--timeout", "2s"]
    if v.tokens:
        for k, val in v.extra_headers.items():
            argv += ["-H", f"{k}: {val}"]
        argv += ["-s", str(HERE / "tokens.lua"), f"http://127.0.0.1:{v.port}{REQUEST_PATH}",
                 "--", str(v.tokens_file)]
    else:
        for k, val in v.headers.items():
            argv += ["-H", f"{k}: {val}"]
        argv.append(f"http://127.0.0.1:{v.port}{REQUEST_PATH}")
    pids = [v.proc.pid, *v.side_pids]
    cpu0 = sum(map(cpu_seconds, pids))
    done = subprocess.run(pinned(a.wrk_cpu, argv), capture_output=True, text=True, timeout=seconds + 30)
    cpu = sum(map(cpu_seconds, pids)) - cpu0
    if done.returncode != 0:
        raise RuntimeError(f"{v.name}: wrk exited {done.returncode}: {(done.stderr or done.stdout).strip()[:500]}")
    res = parse_wrk(done.stdout)
    if res["rps"] is None or res["p99"] is None:
        raise RuntimeError(f"{v.name}: cannot parse wrk output:\n{done.stdout}")
    res["ok"] = res["non2xx"] == 0 and res["socket_errors"] == 0
    # Envoy's CPU time per request: unlike req/s, barely moved by other processes
    # sharing the core (time spent waiting for the core is not counted).
    res["cpu_us"] = cpu * 1e6 / res["requests"] if res["requests"] else float("nan")
    return res


def rotated(variants: list[Variant], rnd: int) -> list[Variant]:
    """Round `rnd`'s order: each round starts one variant later (A B C, B C A, C A B, …),
    so no variant always follows the same one (an order effect would otherwise be read as
    a difference between variants)."""
    k = rnd % len(variants) if variants else 0
    return variants[k:] + variants[:k]


def run_pace(pace: Path, v: Variant, a: argparse.Namespace) -> dict:
    """Latency at a fixed rate (bench/pace): requests go out on a schedule, each timed from
    when it was due, so every variant sees the same offered load."""
    argv = [str(pace), "--rate", f"{a.rate:g}", "--duration", f"{a.duration:g}",
            "--connections", str(a.pace_connections)]
    for k, val in v.headers.items():
        argv += ["-H", f"{k}: {val}"]
    argv.append(f"http://127.0.0.1:{v.port}{REQUEST_PATH}")
    done = subprocess.run(pinned(a.wrk_cpu, argv), capture_output=True, text=True, timeout=a.duration + 30)
    if done.returncode != 0:
        raise RuntimeError(f"{v.name}: meshgate-pace exited {done.returncode}: {done.stderr.strip()[:500]}")
    res = json.loads(done.stdout)
    res["ok_run"] = res["non_2xx"] == 0 and res["errors"] == 0 and res["achieved"] >= 0.97 * a.rate
    return res


def latency_report(variants: list[Variant], a) -> str:
    """The fixed-rate phase: percentiles per variant (medians over rounds) and what each
    filter adds to the baseline's, at the same offered load."""
    ran = [v for v in variants if v.paced]
    if not ran:
        return ""
    med = {v.name: {k: statistics.median(r[k] for r in v.paced) for k in ("p50_us", "p99_us", "p999_us")}
           for v in ran}
    base = med.get("baseline")
    lines = [f"At a fixed {a.rate:,.0f} req/s (open loop: `bench/pace`, {a.pace_connections} connections, each "
             "request timed from when it was due; medians over rounds, µs):", "",
             "| variant | p50 | p99 | p99.9 | p99 over baseline | send lag p99 |", "|---|---:|---:|---:|---:|---:|"]
    for v in ran:
        m = med[v.name]
        added = f"{m['p99_us'] - base['p99_us']:+.0f}" if base else ""
        lag = statistics.median(r["lag_p99_us"] for r in v.paced)
        flag = "" if all(r["ok_run"] for r in v.paced) else " ⚠"
        lines.append(f"| {v.name}{flag} | {m['p50_us']:.0f} | {m['p99_us']:.0f} | {m['p999_us']:.0f} | {added} | {lag:.0f} |")
    pairs = []
    by_alg = {v.alg: v.name for v in ran if v.group == "native"}
    for v in ran:
        if v.group == "meshgate":
            for den in (by_alg.get(v.alg), "noop-wasm", "ext-authz-apikey" if v.alg is None else None):
                if den in med:
                    pairs.append(f"| {v.name} / {den} | {med[v.name]['p50_us'] / med[den]['p50_us']:.3f} "
                                 f"| {med[v.name]['p99_us'] / med[den]['p99_us']:.3f} |")
    if pairs:
        lines += ["", "| ratio of medians | p50 | p99 |", "|---|---:|---:|", *pairs]
    lines += ["", "⚠: a round with a non-2xx answer, an error, or under 97 % of the rate achieved."]
    return "\n".join(lines)


# --------------------------------------------------------------------------- where the CPU goes (perf)

PERF_FREQ = 999  # samples per CPU-second: a 1 ms grain, little disturbance
PROFILE_PARTS = ("wasm", "host", "envoy", "kernel")
JIT_DSO = re.compile(r"perf-\d+\.map|\[JIT\]")


def perf_problem(perf: str, workdir: Path) -> str | None:
    """None when `perf record` with DWARF call stacks works here, else why not."""
    if not shutil.which(perf):
        return f"{perf} not found (Debian: apt-get install linux-perf)"
    out = workdir / "probe.perf"
    try:
        done = subprocess.run([perf, "record", "-q", "-e", "cpu-clock", "--call-graph", "dwarf,1024", "-o", str(out),
                               "--", "true"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"perf record failed: {e}"
    finally:
        out.unlink(missing_ok=True)
    return None if done.returncode == 0 else f"perf record failed: {(done.stderr or done.stdout).strip()[:300]}"


def classify_samples(script: str) -> dict[str, int]:
    """Counts `perf script -F ip,dso` call stacks (leaf first, a blank line between
    samples) by where the CPU was: `wasm` (the leaf is in code V8 compiled from the
    module: no file behind it), `host` (called from Wasm code: host functions and V8's
    runtime helpers, e.g. a header map call; DWARF unwinding stops at the Wasm frame),
    `kernel`, or `envoy` (everything else: Envoy's own request work, the calls into the
    VM, libraries)."""
    counts = dict.fromkeys(PROFILE_PARTS, 0)
    frames: list[str] = []

    def flush() -> None:
        if not frames:
            return
        if JIT_DSO.search(frames[0]):
            part = "wasm"
        elif any(JIT_DSO.search(f) for f in frames):
            part = "host"
        elif "[kernel" in frames[0]:
            part = "kernel"
        else:
            part = "envoy"
        counts[part] += 1
        frames.clear()

    for line in script.splitlines():
        fields = line.split(None, 1)
        if not fields:
            flush()
        elif fields[0] != "ffffffffffffffff":  # the end-of-stack marker
            frames.append(fields[1] if len(fields) > 1 else "")
    flush()
    return counts


def run_profiled(perf: str, v: Variant, a: argparse.Namespace, workdir: Path) -> dict | None:
    """One wrk run of `--duration` with `perf record` sampling the Envoy process: Envoy CPU
    µs per request by part (classify_samples), while perf adds its own overhead. None when
    perf recorded nothing (it could not attach, or its data did not read back)."""
    data = workdir / f"{v.name}.perf"
    rec = subprocess.Popen([perf, "record", "-q", "-e", "cpu-clock", "-F", str(PERF_FREQ), "--call-graph",
                            "dwarf,8192", "-p", str(v.proc.pid), "-o", str(data)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)  # attached before the first request
        res = run_wrk(a.wrk, v, a, a.duration)
    finally:
        rec.send_signal(signal.SIGINT)
        try:
            rec.wait(timeout=120)
        except subprocess.TimeoutExpired:
            rec.kill()
            rec.wait()
    try:
        script = subprocess.run([perf, "script", "-i", str(data), "-F", "ip,dso"], capture_output=True, text=True,
                                timeout=900).stdout
    finally:
        data.unlink(missing_ok=True)
    counts = classify_samples(script)
    if not any(counts.values()):
        return None
    per_sample_us = 1e6 / PERF_FREQ / max(res["requests"], 1)
    return {"ok": res["ok"], "cpu_us": res["cpu_us"], "samples": sum(counts.values()),
            **{k: n * per_sample_us for k, n in counts.items()}}


def profile_report(variants: list[Variant]) -> str:
    ran = [v for v in variants if v.profile]
    if not ran:
        return ""
    lines = ["Envoy CPU µs per request by where it was spent, from `perf record -e cpu-clock` "
             f"({PERF_FREQ} Hz, DWARF call stacks) during one wrk run per variant. perf slows Envoy down "
             "(~10–20 %): compare the columns between variants, not with the tables above.", "",
             "| variant | Wasm code | host calls from Wasm | Envoy, outside Wasm | kernel | sampled total | samples |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for v in ran:
        p = v.profile
        flag = "" if p["ok"] else " ⚠"
        lines.append(f"| {v.name}{flag} | {p['wasm']:.1f} | {p['host']:.1f} | {p['envoy']:.1f} | {p['kernel']:.1f} "
                     f"| {sum(p[k] for k in PROFILE_PARTS):.1f} | {p['samples']:,} |")
    lines += ["", "Wasm code: the module's own instructions as V8 compiled them. Host calls: from the "
              "module into Envoy (header maps, clock, shared data, metrics) and V8's runtime helpers "
              "(e.g. `memory.copy`). Envoy: its own request work, the calls into the VM, libraries."]
    return "\n".join(lines)


# --------------------------------------------------------------------------- report


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
        mem = f"{kb / 1024 / 1024:.0f} GiB"
    except (OSError, AttributeError):
        pass
    return {"nproc": str(os.cpu_count()), "cpu": cpu, "memory": mem,
            "kernel": platform.release(), "load": " ".join(f"{x:.2f}" for x in os.getloadavg())}


def spread(values: list[float]) -> tuple[float, float, float]:
    return min(values), statistics.median(values), max(values)


def summarize(v: Variant) -> dict | None:
    if not v.runs:
        return None
    rps = [r["rps"] for r in v.runs]
    return {"rps": spread(rps), "p50": spread([r["p50"] for r in v.runs]),
            "cpu": spread([r["cpu_us"] for r in v.runs]),
            "p99": spread([r["p99"] for r in v.runs]), "bad": sum(not r["ok"] for r in v.runs)}


def shown(path: Path) -> str:
    full = path.resolve()
    return str(full.relative_to(REPO)) if full.is_relative_to(REPO) else str(path)


def paired(variants: list[Variant], reference: str | None) -> str:
    """Each variant's Envoy CPU per request minus the reference's, round by round (the two
    ran one after the other, so drift between rounds cancels): median and range of the
    differences, and the reference's CPU over the variant's as a throughput ratio. With one
    Envoy per variant each difference still carries the two instances' fixed offsets."""
    ran = [v for v in variants if v.runs]
    ref = next((v for v in ran if v.name == reference), ran[0] if ran else None)
    if ref is None or len(ran) < 2:
        return ""
    lines = ["", "", f"Paired by round against `{ref.name}` (Envoy CPU µs per request; "
             "Δ = variant − reference in the same round):", "",
             "| variant | Δ µs/req median (min–max) | rounds with Δ > 0 | CPU-bound throughput vs reference, median |",
             "|---|---:|---:|---:|"]
    for v in ran:
        if v is ref:
            continue
        pairs = list(zip(v.runs, ref.runs))
        deltas = [r["cpu_us"] - b["cpu_us"] for r, b in pairs]
        ratios = [b["cpu_us"] / r["cpu_us"] for r, b in pairs]
        lo, mid, hi = spread(deltas)
        lines.append(f"| {v.name} | {mid:+.1f} ({lo:+.1f} to {hi:+.1f}) | {sum(d > 0 for d in deltas)}/{len(deltas)} "
                     f"| {statistics.median(ratios):.3f} |")
    return "\n".join(lines)


def report(variants: list[Variant], a, info: dict, envoy_version: str, started: str, load_end: str) -> str:
    sums = {v.name: summarize(v) for v in variants}
    lines = [
        "| variant | req/s median | req/s min–max | p50 ms (median) | p99 ms median (min–max) "
        "| Envoy CPU µs/req median (min–max) | vs baseline (req/s; CPU/req) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    base = sums.get("baseline")
    for v in variants:
        s = sums[v.name]
        if s is None:
            lines.append(f"| {v.name} | skipped | | | | | |")
            continue
        rel = f"{s['rps'][1] / base['rps'][1]:.3f}×; {s['cpu'][1] / base['cpu'][1]:.2f}×" if base else ""
        flag = f" ⚠ {s['bad']} run(s) with errors" if s["bad"] else ""
        lines.append(
            f"| {v.name}{flag} | {s['rps'][1]:,.0f} | {s['rps'][0]:,.0f}–{s['rps'][2]:,.0f} | "
            f"{s['p50'][1]:.3f} | {s['p99'][1]:.3f} ({s['p99'][0]:.3f}–{s['p99'][2]:.3f}) | "
            f"{s['cpu'][1]:.1f} ({s['cpu'][0]:.1f}–{s['cpu'][2]:.1f}) | {rel} |"
        )
    table = "\n".join(lines)

    def ratio(num: str, den: str) -> str | None:
        n, d = sums.get(num), sums.get(den)
        if not n or not d:
            return None
        return (f"| {num} / {den} | {n['rps'][1] / d['rps'][1]:.3f} | "
                f"{n['p99'][1] / d['p99'][1]:.3f} | {d['cpu'][1] / n['cpu'][1]:.3f} |")

    rlines = ["| ratio of medians | throughput (req/s) | p99 latency | CPU-bound throughput (inverse CPU µs/req) |",
              "|---|---:|---:|---:|"]
    by_alg = {v.alg: v.name for v in variants if v.group == "native" and not v.hot}
    for v in variants:
        if v.group != "meshgate":
            continue
        if v.hot:
            if r := ratio(v.name, v.name.replace("meshgate-", "native-", 1)):
                rlines.append(r)
            continue
        for den in (by_alg.get(v.alg), "noop-wasm", "baseline"):
            if den and (r := ratio(v.name, den)):
                rlines.append(r)
        if v.alg is None and (r := ratio(v.name, "ext-authz-apikey")):
            rlines.append(r)
    for v in variants:
        if v.group == "extra":
            for den in ("meshgate-hs256", "noop-wasm"):
                if r := ratio(v.name, den):
                    rlines.append(r)
    for num in ("noop-wasm", *by_alg.values()):
        if r := ratio(num, "baseline"):
            rlines.append(r)
    ratios = "\n".join(rlines)

    # A cold variant's extra Envoy CPU per request over its hot twin is the cost of a
    # token seen for the first time (signature check + cache insert).
    cold = []
    for v in variants:
        if v.hot and sums.get(v.name) and sums.get(v.hot):
            c, h = sums[v.name]["cpu"][1], sums[v.hot]["cpu"][1]
            cold.append(f"| {v.hot} | {h:.1f} | {c:.1f} | {c - h:.1f} |")
    if cold:
        ratios += ("\n\nFirst-seen tokens (Envoy CPU µs per request, medians):\n\n"
                   "| filter | cached token | new token each request | first-seen extra |\n"
                   "|---|---:|---:|---:|\n" + "\n".join(cold))

    ratios += paired(variants, a.reference)

    rounds = ["| variant | " + " | ".join(f"round {i + 1}" for i in range(a.rounds)) + " |",
              "|---|" + "---:|" * a.rounds]
    for v in variants:
        if v.runs:
            cells = [f"{r['rps']:,.0f} req/s, p99 {r['p99']:.2f} ms, {r['cpu_us']:.1f} µs" + ("" if r["ok"] else " ⚠")
                     for r in v.runs]
            rounds.append(f"| {v.name} | " + " | ".join(cells) + " |")
    described = [f"- `{v.name}`: {v.describe}" + (f" — **skipped**: {v.skip}" if v.skip else "")
                 + (" — **not checked** for refusing a forged credential (`--allow-open`)"
                    if v.name in a.allow_open else "")
                 for v in variants]
    return "\n".join([
        "# meshgate Envoy benchmark (issue 9)",
        "",
        f"Generated by `make bench-envoy` (`bench/run.py`) on {started}.",
        "",
        f"- Machine: {info['nproc']} CPUs, {info['cpu']}, {info['memory']}, Linux {info['kernel']}",
        f"- Load average at start: {info['load']}; at end: {load_end}"
        + (" (machine shared with other work: numbers are noisy)" if float(info['load'].split()[0]) > 0.5 else ""),
        f"- Envoy: {envoy_version}",
        (f"- One Envoy for every variant (a listener and a Wasm VM each), `--concurrency 1`, "
         f"pinned to CPU {a.envoy_cpu}; `direct_response` 200 upstream" if a.one_envoy else
         f"- One Envoy per variant (`--envoy-per-variant`): `--concurrency 1`, pinned to CPU {a.envoy_cpu}; "
         "`direct_response` 200 upstream"),
        f"- Load: wrk -t{a.threads} -c{a.connections}, {a.duration:g} s per run, {a.rounds} rounds "
        f"(variants alternated, each round starting one later), pinned to CPU {a.wrk_cpu}; {a.warmup:g} s warm-up per variant first",
        f"- meshgate policy: `{shown(Path(a.plugin_config))}`",
        f"- Requests: `GET {REQUEST_PATH}` with Host and the credential"
        + (f", plus the {len(BROWSER_HEADERS)} headers of a browser's API call (`--browser-headers`)"
           if a.browser_headers else " only"),
        "- Envoy CPU µs/req: Envoy's user+system CPU time (/proc) over the run divided by the requests "
        "wrk completed; on a shared machine it is the steadier figure (time waiting for the core is "
        "not counted), req/s and latency show what a client saw; for `ext-authz-apikey` it adds the "
        "control plane's CPU (the central verifier, pinned to the same core)",
        "- Every run checked: 0 non-2xx responses, 0 socket errors (⚠ marks a run that failed this)",
        "",
        "## Results",
        "",
        table,
        "",
        "## Ratios",
        "",
        ratios,
        "",
        *(["## Latency at a fixed rate", "", latency_report(variants, a), ""] if any(v.paced for v in variants) else []),
        *(["## Where the CPU goes", "", profile_report(variants), ""] if any(v.profile for v in variants) else []),
        "## Per round",
        "",
        "\n".join(rounds),
        "",
        "## Variants",
        "",
        "\n".join(described),
        "",
    ])


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=int, default=5.0, help="seconds per measured run (default 5)")
    p.add_argument("--rounds", type=int, default=3, help="rounds over all variants (default 3)")
    p.add_argument("--warmup", type=int, default=2, help="unrecorded seconds per variant first (default 2)")
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    p.add_argument("--envoy-cpu", default="0", help="taskset CPU list for every Envoy (default 0)")
    p.add_argument("--wrk-cpu", default="1", help="taskset CPU list for wrk (default 1)")
    p.add_argument("--variants", help="comma-separated subset, in this order")
    p.add_argument("--cold-tokens", type=int, default=20000,
                   help="distinct tokens for the -cold variants (0: no -cold variants; default 20000)")
    p.add_argument("--envoy", default=os.environ.get("ENVOY", str(DEFAULT_ENVOY)))
    p.add_argument("--wasm", default=os.environ.get("MESHGATE_WASM", str(DEFAULT_WASM)))
    p.add_argument("--noop-wasm", default=os.environ.get("MESHGATE_BENCH_NOOP_WASM", str(DEFAULT_NOOP_WASM)))
    p.add_argument("--plugin-config", default=str(ENVOY_DIR / "meshgate-plugin.json"),
                   help="meshgate policy (default bench/envoy/meshgate-plugin.json; for ablations)")
    p.add_argument("--variant-plugin", action="append", default=[], metavar="NAME=JSON",
                   help="also run meshgate-hs256 with this policy as variant meshgate-hs256+NAME (repeatable)")
    p.add_argument("--variant-wasm", action="append", default=[], metavar="NAME=WASM",
                   help="also run meshgate-hs256 with this .wasm (before/after a change) as meshgate-hs256+NAME")
    p.add_argument("--noop-variant", action="append", default=[], metavar="NAME=MODES",
                   help="also run the no-op filter making some of meshgate's host calls, as noop-wasm+NAME "
                        "(MODES: comma-separated pairs, set-pairs, set3, time, response, response-add, response2; "
                        "bench/noop-filter/src/lib.rs; repeatable)")
    p.add_argument("--envoy-per-variant", dest="one_envoy", action="store_false",
                   help="one Envoy per variant instead of one Envoy with a listener (and a Wasm VM) per "
                        "variant; Envoy instances differ by several µs/req from one another (bench/README.md)")
    p.add_argument("--reference", default="noop-wasm",
                   help="variant the others are paired with round by round (default noop-wasm; else the first)")
    p.add_argument("--rate", type=float, default=4000,
                   help="req/s of the fixed-rate latency phase (bench/pace; 0 skips it; default 4000)")
    p.add_argument("--pace-connections", type=int, default=8, help="connections of the fixed-rate phase (default 8)")
    p.add_argument("--pace", default=os.environ.get("MESHGATE_BENCH_PACE", str(DEFAULT_PACE)))
    p.add_argument("--allow-open", action="append", default=[], metavar="NAME",
                   help="variant not checked for refusing a forged credential (an ablation build that "
                        "skips the checks; repeatable; noted in the report)")
    p.add_argument("--profile", action="store_true",
                   help="after the rounds, one more wrk run per variant under `perf record`: Envoy CPU per request "
                        "split into Wasm code, host calls, Envoy and kernel (needs perf: Debian linux-perf)")
    p.add_argument("--perf", default=os.environ.get("PERF", "perf"))
    p.add_argument("--browser-headers", action="store_true",
                   help=f"every request also carries the {len(BROWSER_HEADERS)} headers of a browser's API call "
                        "(user-agent, accept…, cookie)")
    p.add_argument("--wrk", default=os.environ.get("WRK", "wrk"))
    p.add_argument("--results", default=str(HERE / "results.md"), help="'' to skip writing")
    p.add_argument("--keep", action="store_true", help="keep the rendered configs and Envoy logs")
    a = p.parse_args(argv)

    envoy, wasm, noop = Path(a.envoy), Path(a.wasm).resolve(), Path(a.noop_wasm).resolve()
    missing = [f"{what} {path} ({fix})" for what, path, fix in (
        ("envoy", envoy, "make envoy-install"), ("meshgate wasm", wasm, "make build"),
        ("no-op wasm", noop, "make bench-envoy builds it"),
    ) if not path.is_file()]
    if not shutil.which(a.wrk):
        missing.append(f"wrk ({a.wrk}: apt-get install -y wrk)")
    if missing:
        print("bench: missing " + "; ".join(missing), file=sys.stderr)
        return 2
    pace = Path(a.pace) if Path(a.pace).is_file() else None
    if a.rate > 0 and pace is None:
        print(f"note: no {a.pace} (cargo build --release -p meshgate-bench-pace): "
              "skipping the fixed-rate latency phase", file=sys.stderr)
    if not shutil.which("taskset"):
        print("bench: taskset not found (util-linux): running unpinned", file=sys.stderr)
        a.envoy_cpu = a.wrk_cpu = None

    # SIGTERM (e.g. from make or a CI timeout) unwinds like Ctrl-C, through the finally.
    def on_sigterm(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    # Ctrl-C too, even when started from a non-interactive shell with SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    info = machine()
    started = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    envoy_version = subprocess.run([str(envoy), "--version"], capture_output=True, text=True).stdout.strip()
    envoy_version = envoy_version.split("version:", 1)[-1].strip() or "unknown"

    extra = []
    for spec, is_wasm in [(x, False) for x in a.variant_plugin] + [(x, True) for x in a.variant_wasm]:
        tag, sep, path = spec.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z0-9._-]+", tag) or not Path(path).is_file():
            print(f"bench: want NAME=FILE (existing file), got {spec!r}", file=sys.stderr)
            return 2
        extra.append((tag, Path(a.plugin_config), Path(path).resolve()) if is_wasm
                     else (tag, Path(path), wasm))
    noop_extra = []
    for spec in a.noop_variant:
        tag, sep, modes = spec.partition("=")
        known = {"pairs", "set-pairs", "set3", "time", "response", "response-add", "response2"}
        # Empty MODES: the plain no-op again, as its own variant (an A/A check of the instrument).
        if not sep or not re.fullmatch(r"[A-Za-z0-9._-]+", tag) or not set(filter(None, modes.split(","))) <= known:
            print(f"bench: want NAME=MODES (of {', '.join(sorted(known))}), got {spec!r}", file=sys.stderr)
            return 2
        noop_extra.append((tag, modes))
    variants = build_variants(wasm, noop, a.cold_tokens, Path(a.plugin_config), extra, noop_extra)
    if a.variants:
        wanted = [n.strip() for n in a.variants.split(",") if n.strip()]
        names = {v.name: v for v in variants}
        unknown = [n for n in wanted if n not in names]
        if unknown:
            print(f"bench: unknown variant(s) {', '.join(unknown)}; known: {', '.join(names)}", file=sys.stderr)
            return 2
        variants = [names[n] for n in wanted]
    for v in variants:
        if v.skip:
            print(f"note: skipping {v.name}: {v.skip}")
    active = [v for v in variants if not v.skip]
    if a.browser_headers:
        for v in active:
            if v.tokens:
                v.extra_headers = dict(BROWSER_HEADERS)
            else:
                v.headers = {**BROWSER_HEADERS, **v.headers}
            if v.bad_headers is not None:
                v.bad_headers = {**BROWSER_HEADERS, **v.bad_headers}

    print(f"machine: {info['nproc']} CPUs, {info['cpu']}, load {info['load']}; envoy {envoy_version}")
    print(f"plan: {len(active)} variants × {a.rounds} rounds × {a.duration:g} s "
          f"(+ {a.warmup:g} s warm-up each), wrk -t{a.threads} -c{a.connections}")
    workdir = Path(tempfile.mkdtemp(prefix="meshgate-bench-"))
    procs: list[subprocess.Popen] = []
    try:
        for v in active:
            if v.central:
                procs.append(start_central(v, workdir, a.envoy_cpu))
        for group in ([active] if a.one_envoy else [[v] for v in active]):
            procs.append(start_envoy(group, envoy, workdir, a.envoy_cpu))
        deadline = time.monotonic() + 120
        for v in active:
            wait_ready(v, deadline)

        # Never benchmark an error path: the credential must pass, a forged one must not.
        problems = []
        for v in active:
            url = f"http://127.0.0.1:{v.port}{REQUEST_PATH}"
            status, body = http_get(url, v.headers)
            if status != 200:
                problems.append(f"{v.name}: valid credential got {status}: {body[:300]}")
            if v.bad_headers is not None and v.name not in a.allow_open:
                status, body = http_get(url, v.bad_headers)
                if status != 401:
                    problems.append(f"{v.name}: forged credential got {status} (want 401): {body[:300]}")
            print(f"check {v.name:20} port {v.port}: valid → 200"
                  + (", forged → 401" if v.bad_headers is not None and v.name not in a.allow_open else ""))
        if problems:
            for line in problems:
                print("FAIL " + line, file=sys.stderr)
            return 1

        if a.warmup > 0:
            print(f"warm-up {a.warmup:g} s each …", flush=True)
            for v in active:
                run_wrk(a.wrk, v, a, a.warmup)

        for rnd in range(a.rounds):
            for v in rotated(active, rnd):
                r = run_wrk(a.wrk, v, a, a.duration)
                v.runs.append(r)
                mark = "" if r["ok"] else f"  ⚠ non-2xx {r['non2xx']}, socket errors {r['socket_errors']}"
                print(f"round {rnd + 1}/{a.rounds} {v.name:20} {r['rps']:>10,.0f} req/s  "
                      f"p50 {r['p50']:.3f} ms  p99 {r['p99']:.3f} ms  cpu {r['cpu_us']:6.1f} µs/req{mark}", flush=True)

        # The filter really admitted what wrk sent (not bypassed, not denied). It hands its
        # request counters to Envoy on its 1 s tick: wait for the last one.
        # Latency at one offered load for all (the -cold variants, whose point is CPU per
        # new token, would be saturated by it: left out).
        paced = [v for v in active if not v.tokens] if a.rate > 0 and pace else []
        for rnd in range(a.rounds if paced else 0):
            for v in rotated(paced, rnd):
                r = run_pace(pace, v, a)
                v.paced.append(r)
                mark = "" if r["ok_run"] else f"  ⚠ non-2xx {r['non_2xx']}, errors {r['errors']}, {r['achieved']:,.0f} req/s"
                print(f"paced {rnd + 1}/{a.rounds} {v.name:20} {a.rate:>7,.0f} req/s  p50 {r['p50_us']} µs  "
                      f"p99 {r['p99_us']} µs  p99.9 {r['p999_us']} µs  lag p99 {r['lag_p99_us']} µs{mark}", flush=True)

        # Where each variant's CPU goes: a separate run, since perf slows Envoy down.
        problem = perf_problem(a.perf, workdir) if a.profile else None
        if problem:
            print(f"note: --profile skipped: {problem}", file=sys.stderr)
        for v in active if a.profile and not problem else []:
            if v.central:  # the verifier's CPU is another process's
                continue
            v.profile = run_profiled(a.perf, v, a, workdir)
            p = v.profile
            if p is None:
                print(f"note: profile {v.name}: perf recorded no samples", file=sys.stderr)
                continue
            print(f"profile {v.name:20} wasm {p['wasm']:5.1f}  host {p['host']:5.1f}  envoy {p['envoy']:5.1f}  "
                  f"kernel {p['kernel']:5.1f} µs/req ({p['samples']:,} samples)", flush=True)

        # In one Envoy the variants counting under one name share the counter.
        time.sleep(1.5)
        counted: dict[tuple[int, str], list[Variant]] = {}
        for v in active:
            if v.counter:
                counted.setdefault((v.admin_port, v.counter), []).append(v)
        for (_, name), group in counted.items():
            n = admin_counter(group[0], name)
            sent = sum(r["requests"] or 0 for v in group for r in v.runs)
            who = ", ".join(v.name for v in group)
            print(f"counter {who:20} {name} = {n} (measured: {sent:,}; the rest: warm-up, checks)")

        load_end = " ".join(f"{x:.2f}" for x in os.getloadavg())
        text = report(variants, a, info, envoy_version, started, load_end)
        print()
        print(text)
        if a.results:
            Path(a.results).write_text(text)
            print(f"wrote {a.results}")
        return 1 if any(not r["ok"] for v in active for r in v.runs)\
            or any(not r["ok_run"] for v in active for r in v.paced)\
            or any(not v.profile["ok"] for v in active if v.profile) else 0
    except KeyboardInterrupt:
        print("\nbench: interrupted, stopping Envoys", file=sys.stderr)
        return 130
    except RuntimeError as e:
        print(f"bench: {e}", file=sys.stderr)
        return 1
    finally:
        stop(procs)
        if a.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
