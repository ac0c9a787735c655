"""The `attacks` group of envoy/e2e/run.py: an attack corpus against the real Envoy + filter.

One Envoy (2 workers) with a plugin configuration holding three keys for one issuer — the
e2e HS256 secret (`e2e-hs256`), an RS256 public key (`rs1`) and an Ed25519
public key (`ed1`, RFC 8037 A.2) — one API key, a host-bound admin route and a role-bound
admin path. Every request is built by hand; the odd ones (absolute-form targets, folded or
duplicated headers, trailers, raw `#`, `Host` vs absolute URI) go over a raw socket, so
neither Python's http.client nor Envoy's client-side niceties clean them up first.

  jwt      `alg: none` in every casing, HS256 signed with the RS256 / Ed25519 public key
           (key confusion), RS256/EdDSA headers on the HS256 kid, `kid` path traversal and
           SQL-looking values, `jku`/`x5u`/`jwk` headers ignored, `crit`, nested JWS,
           duplicate claims and header members, huge and empty segments, Unicode and
           control characters in claims
  headers  duplicated `Authorization`, mixed-case names and schemes, whitespace variants,
           obs-fold continuation lines, identity headers in other cases, with underscores,
           and in chunked trailers
  paths    encoded dots and slashes, backslashes, overlong UTF-8, `;` parameters, raw `#`
           fragments, absolute-form request targets, `Host` vs absolute-URI authority,
           host case, trailing dot and port
  apikeys  prefix collision, checksum off by one, unknown key with a valid checksum, and
           the time a refusal takes for a key sharing a long prefix with a real key vs
           one sharing none (medians printed; asserted only within 2x of each other)

Every check asserts the exact status and problem type (`urn:meshgate:problem:<slug>`), or,
where Envoy's own codec refuses the request before the filter runs, Envoy's 400 with no
upstream contact. Every response that did reach the echo upstream is checked: it never saw
a client-sent identity header (`x-user-id`, `x-user-roles`, `x-auth-method`, ...), only the
values the filter injected.

Imported by run.py, which passes itself as `h` (checks, Stack, fetch, mint, keys).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import os
import re
import socket
import statistics
import time
from pathlib import Path

import demo_tokens  # envoy/demo_tokens.py (run.py puts envoy/ on sys.path)

P = "urn:meshgate:problem:"
IDENTITY_HEADERS = ("x-user-id", "x-user-roles", "x-user-scopes", "x-app-id", "x-auth-method",
                    "x-key-id", "x-session-id", "x-guest-id")

# A 2048-bit RSA public key (generated for this file; its private half was discarded) and the
# RFC 8037 appendix A.2 Ed25519 public key: used only as public keys the filter trusts.
RSA_N = ("nZa2K7kkqV89gg_8AkkzfpZZzd3HC6HZN-7gWAT-q65SnvvIYhmonNQ_N74-cDY1RI0HOcZW9knNE_H6Ui5Ynxep"
         "tPUbLV51cdYPlL8yo8-94E2qt61cTV458TWwXYIefoZWUTfHxDN0cqKnyHMsLcmTTXTbhLsV14zuIPh8a9kyFe8y"
         "teyuupLhOSjj5VviY8mD3IjloUIwibKTi5HfOA97E_qJr7_PMrkAlAeixc3ibchJehh6ryX0IiqJZrnU6IXPnzxq"
         "bH1hR1Kuz9UO_nE4qBRJT-7AJhBhRTfPr7-NDSmnOum3fQ9iGdShDapHdx9Ia4fDvPKp8Zrjfh1Vsw")
RSA_E = "AQAB"
ED_X = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def enc(obj) -> str:
    raw = obj if isinstance(obj, (bytes, str)) else json.dumps(obj, separators=(",", ":"))
    return b64url(raw.encode() if isinstance(raw, str) else raw)


def config(h) -> dict:
    issuer = dict(h.ISSUERS[0])
    issuer["keys"] = list(issuer["keys"]) + [
        {"kty": "RSA", "kid": "rs1", "alg": "RS256", "n": RSA_N, "e": RSA_E},
        {"kty": "OKP", "crv": "Ed25519", "kid": "ed1", "alg": "EdDSA", "x": ED_X},
    ]
    return {
        "realm": "meshgate-e2e",
        "routes": [
            {"name": "admin-host", "host": "admin.example.com", "path": {"prefix": "/"},
             "policy": {"roles_any": ["admin"]}},
            {"name": "health", "path": {"exact": "/health"}, "policy": {"access": "public"}},
            {"name": "public", "path": {"prefix": "/public"}, "policy": {"access": "public"}},
            {"name": "admin", "path": {"prefix": "/admin"}, "policy": {"roles_any": ["admin"]}},
            {"name": "api", "path": {"prefix": "/api"}, "policy": {"access": "authenticated"}},
        ],
        "default_policy": {"access": "deny"},
        "issuers": [issuer],
        "keys": h.KEYS,
    }


# --- tokens --------------------------------------------------------------------------------
def claims(h, **extra) -> dict:
    now = int(time.time())
    c = {"iss": h.ISSUER, "aud": h.AUDIENCE, "sub": "alice", "iat": now, "exp": now + 600,
         "roles": ["user"]}
    c.update(extra)
    return c


def hs(header: dict | str, payload: dict | str | bytes, secret: bytes) -> str:
    signing_input = f"{enc(header)}.{enc(payload)}"
    sig = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(sig)}"


def e2e(h, payload, header: dict | None = None) -> str:
    """Signed with the configured HS256 secret (a valid signature)."""
    return hs(header or {"alg": "HS256", "typ": "JWT", "kid": h.KID}, payload, h.SECRET)


# --- raw HTTP/1.1 --------------------------------------------------------------------------
class Raw:
    """A response read off a raw socket (status, lower-cased headers, body)."""

    def __init__(self, data: bytes) -> None:
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2) if lines and lines[0] else ["", "0"]
        self.status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        self.headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            body = dechunk(body)
        elif self.headers.get("content-length", "").isdigit():
            body = body[: int(self.headers["content-length"])]
        self.body = body

    def json(self) -> dict:
        try:
            value = json.loads(self.body)
            return value if isinstance(value, dict) else {}
        except ValueError:
            return {}

    @property
    def upstream(self) -> dict:
        j = self.json()
        return j.get("headers", {}) if "method" in j else {}

    def problem(self) -> str:
        return str(self.json().get("type", ""))

    def short(self) -> str:
        body = self.body.decode("utf-8", "replace")
        return f"{self.status} type={self.problem()!r} body={body[:160]!r}"


def dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        try:
            size = int(size_line.split(b";")[0], 16)
        except ValueError:
            break
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2:]
    return out


def complete(data: bytes) -> bool:
    """Whether `data` holds a whole response (headers, then its length or last chunk)."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    if m:
        return len(body) >= int(m.group(1))
    if re.search(rb"(?im)^transfer-encoding:\s*chunked", head):
        return body.endswith(b"0\r\n\r\n")
    return False


def raw(port: int, request: bytes, timeout: float = 10.0) -> Raw:
    """Sends `request` as is and reads one response (to its length, or to EOF)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        data = b""
        while not complete(data):
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            data += chunk
    return Raw(data)


def req(target: str, headers: list[tuple[str, str]] | None = None, method: str = "GET",
        host: str | None = "localhost", body: bytes = b"", extra: bytes = b"") -> bytes:
    lines = [f"{method} {target} HTTP/1.1"]
    if host is not None:
        lines.append(f"Host: {host}")
    lines += [f"{k}: {v}" for k, v in (headers or [])]
    lines.append("Connection: close")
    if body and not any(k.lower() == "transfer-encoding" for k, _ in (headers or [])):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n").encode("latin-1") + extra + b"\r\n" + body


# --- the group -------------------------------------------------------------------------------
class Attacks:
    def __init__(self, h, stack) -> None:
        self.h, self.stack, self.port = h, stack, stack.port
        self.upstream_seen = 0
        self.leaks: list[str] = []
        self.known: list[str] = []

    def send(self, target: str, headers=None, **kw) -> Raw:
        return raw(self.port, req(target, headers, **kw))

    def watch(self, name: str, r: Raw, allowed: dict[str, str] | None = None) -> None:
        """Records any identity header the upstream saw that the filter did not inject."""
        if not r.upstream:
            return
        self.upstream_seen += 1
        allowed = allowed or {}
        for k, v in r.upstream.items():
            norm = k.replace("_", "-")
            if norm in IDENTITY_HEADERS and allowed.get(k) != v:
                self.leaks.append(f"{name}: upstream saw {k}={v!r}")

    def expect(self, name: str, r: Raw, status: int, slug: str | None,
               allowed: dict[str, str] | None = None, known: str = "") -> None:
        """Exact status; the problem type when `slug` is set; `slug=''`: Envoy's own refusal
        (no problem body, upstream not reached). `known`: a weakness SECURITY.md lists as not
        yet fixed; its check prints `known` instead of failing the run (and says so when it
        starts passing, so the entry can go)."""
        self.watch(name, r, allowed)
        if slug is None:
            ok = r.status == status
        elif slug == "":
            ok = r.status == status and not r.problem() and not r.upstream
        else:
            ok = r.status == status and r.problem() == P + slug
        want = f"{status}" + (f" {slug}" if slug else " (Envoy codec)" if slug == "" else "")
        if known:
            state = "now passes, remove `known`" if ok else f"not fixed yet: {known}"
            print(f"known attacks/{name}: want {want}, got {r.short()} ({state})", flush=True)
            self.known.append(name)
            return
        self.h.R.check(ok, f"attacks/{name}", f"want {want}, got {r.short()}")

    def bearer(self, name: str, token: str, status: int, slug: str | None, path: str = "/api/x",
               allowed: dict[str, str] | None = None) -> Raw:
        r = self.send(path, [("Authorization", f"Bearer {token}")])
        self.expect(name, r, status, slug, allowed)
        return r


def jwt_attacks(a: Attacks) -> None:
    h = a.h
    good = claims(h)
    a.bearer("jwt: control, valid HS256 token -> 200", e2e(h, good), 200, None,
             allowed={"x-user-id": "alice", "x-user-roles": "user", "x-auth-method": "jwt"})
    for alg in ("none", "None", "NONE", "nOnE", ""):
        for sig in ("", "c2ln"):
            tok = f"{enc({'alg': alg, 'typ': 'JWT'})}.{enc(good)}.{sig}"
            a.bearer(f"jwt: alg {alg!r} sig {'empty' if not sig else 'junk'}", tok, 401,
                     "unsupported-algorithm")
        tok = f"{enc({'alg': alg, 'kid': h.KID})}.{enc(good)}."
        a.bearer(f"jwt: alg {alg!r} with the HS256 kid", tok, 401, "unsupported-algorithm")
    rsa_der_ish = b64d(RSA_N)
    pem = ("-----BEGIN PUBLIC KEY-----\n" + base64.b64encode(rsa_der_ish).decode()
           + "\n-----END PUBLIC KEY-----\n").encode()
    for label, secret in (("modulus bytes", rsa_der_ish), ("PEM text", pem),
                          ("JWK JSON", json.dumps({"kty": "RSA", "n": RSA_N, "e": RSA_E}).encode())):
        a.bearer(f"jwt: HS/RS confusion (HS256 on kid rs1, secret = RSA {label})",
                 hs({"alg": "HS256", "kid": "rs1"}, good, secret), 401, "algorithm-mismatch")
    a.bearer("jwt: HS/EdDSA confusion (HS256 on kid ed1, secret = Ed25519 public key)",
             hs({"alg": "HS256", "kid": "ed1"}, good, b64d(ED_X)), 401, "algorithm-mismatch")
    a.bearer("jwt: RS256 header on the HS256 kid",
             f"{enc({'alg': 'RS256', 'kid': h.KID})}.{enc(good)}.{b64url(b'x' * 256)}", 401,
             "algorithm-mismatch")
    a.bearer("jwt: EdDSA header on the HS256 kid",
             f"{enc({'alg': 'EdDSA', 'kid': h.KID})}.{enc(good)}.{b64url(b'x' * 64)}", 401,
             "algorithm-mismatch")
    a.bearer("jwt: HS384 (not an accepted algorithm)",
             hs({"alg": "HS384", "kid": h.KID}, good, h.SECRET), 401, "unsupported-algorithm")
    for kid in ("../../../../etc/passwd", "/dev/null", "..%2f..%2fkeys", "' OR '1'='1",
                "e2e-hs256' --", "e2e-hs256\u0000", "E2E-HS256", "e2e-hs256 "):
        a.bearer(f"jwt: kid {kid!r} (signed with the real secret)",
                 hs({"alg": "HS256", "kid": kid}, good, h.SECRET), 401, "unknown-key")
    attacker = b"attacker-controlled-secret-32-bytes!!"
    hdr = {"alg": "HS256", "kid": h.KID, "jwk": {"kty": "oct", "k": b64url(attacker)}}
    a.bearer("jwt: embedded jwk header (attacker's key) -> refused", hs(hdr, good, attacker), 401,
             "malformed-token")
    a.bearer("jwt: embedded jwk header, real signature -> refused all the same", hs(hdr, good, h.SECRET), 401,
             "malformed-token")
    for field, value in (("jku", "http://127.0.0.1:1/jwks.json"), ("x5u", "http://127.0.0.1:1/c.pem")):
        hdr = {"alg": "HS256", "kid": h.KID, field: value}
        a.bearer(f"jwt: {field} header ignored (attacker-signed) -> invalid-signature",
                 hs(hdr, good, attacker), 401, "invalid-signature")
        a.bearer(f"jwt: {field} header ignored (real key still verifies) -> 200",
                 hs(hdr, good, h.SECRET), 200, None,
                 allowed={"x-user-id": "alice", "x-user-roles": "user", "x-auth-method": "jwt"})
    for crit in (["exp"], ["b64"], []):
        a.bearer(f"jwt: crit {crit} -> refused", e2e(h, good, {"alg": "HS256", "kid": h.KID, "crit": crit}),
                 401, "malformed-token")
    inner = e2e(h, claims(h, sub="root", roles=["admin"]))
    a.bearer("jwt: nested JWS (payload is a signed JWT string, cty JWT)",
             e2e(h, json.dumps(inner), {"alg": "HS256", "kid": h.KID, "cty": "JWT"}), 401,
             "malformed-token", path="/admin/x")
    a.bearer("jwt: nested JWS under alg none", f"{enc({'alg': 'none', 'cty': 'JWT'})}.{enc(json.dumps(inner))}.",
             401, "unsupported-algorithm", path="/admin/x")
    body = json.dumps(claims(h))[:-1] + ', "sub": "root", "roles": ["admin"]}'
    a.bearer("jwt: duplicate sub/roles claims (last-wins parsers would see root/admin)",
             e2e(h, body), 401, "malformed-token", path="/admin/x")
    a.bearer("jwt: duplicate alg in header (none, then HS256)",
             hs('{"alg":"none","alg":"HS256","kid":"%s"}' % h.KID, good, h.SECRET), 401,
             "malformed-token")
    a.bearer("jwt: 9000-byte token (issuer cap 8192)",
             e2e(h, claims(h, pad="A" * 9000)), 401, "token-too-large")
    r = a.send("/api/x", [("Authorization", "Bearer " + "A" * 100_000)])
    a.expect("jwt: 100 KB Authorization header -> Envoy 431", r, 431, "")
    for label, tok in (("empty segments", ".."), ("empty header", f".{enc(good)}.c2ln"),
                       ("empty payload", f"{enc({'alg': 'HS256', 'kid': h.KID})}..c2ln"),
                       ("two segments", f"{enc({'alg': 'HS256'})}.{enc(good)}"),
                       ("four segments", e2e(h, good) + ".x"),
                       ("not base64", "!!!.@@@.###")):
        a.bearer(f"jwt: {label}", tok, 401, "malformed-token")
    a.bearer("jwt: empty signature on HS256", f"{enc({'alg': 'HS256', 'kid': h.KID})}.{enc(good)}.",
             401, "invalid-signature")
    for label, extra in (("Unicode sub", {"sub": "ålice"}), ("RTL override in sub", {"sub": "al\u202eice"}),
                         ("CRLF in sub", {"sub": "alice\r\nx-user-roles: admin"}),
                         ("NUL in sub", {"sub": "alice\u0000admin"}),
                         ("comma in a role", {"roles": ["user,admin"]}),
                         ("space in a role", {"roles": ["user admin"]}),
                         ("Unicode app_id", {"app_id": "аpp"})):
        a.bearer(f"jwt: {label} -> invalid-claim", e2e(h, claims(h, **extra)), 401, "invalid-claim")
    a.bearer("jwt: Unicode in an unused claim is fine", e2e(h, claims(h, name="Zoë ✓")), 200, None,
             allowed={"x-user-id": "alice", "x-user-roles": "user", "x-auth-method": "jwt"})


def header_attacks(a: Attacks) -> None:
    h = a.h
    alice, root = e2e(h, claims(h)), e2e(h, claims(h, sub="root", roles=["admin"]))
    ok_alice = {"x-user-id": "alice", "x-user-roles": "user", "x-auth-method": "jwt"}
    r = a.send("/admin/x", [("Authorization", f"Bearer {alice}"), ("Authorization", f"Bearer {root}")])
    # Envoy joins repeated `authorization` lines into one value ("Bearer a,Bearer b"); a comma
    # is not a token character, so the joined value is refused whole.
    a.expect("headers: Authorization twice (user, then admin; Envoy joins them)", r, 400, "malformed-credential")
    r = a.send("/admin/x", [("Authorization", f"Bearer {root}"), ("authorization", f"Bearer {alice}")])
    a.expect("headers: Authorization twice, different case", r, 400, "malformed-credential")
    r = a.send("/api/x", [("X-API-Key", h.API_KEY), ("x-api-key", h.API_KEY)])
    a.expect("headers: X-API-Key twice (the same key)", r, 400, "duplicate-credential")
    r = a.send("/api/x", [("Authorization", f"Bearer {alice}"), ("X-API-Key", h.API_KEY)])
    a.expect("headers: JWT and API key together", r, 400, "conflicting-credentials")
    r = a.send("/api/x", [("Authorization", f"Bearer {alice}, Bearer {root}")])
    a.expect("headers: two bearer tokens in one Authorization value", r, 400, "malformed-credential")
    for label, name, value in (("mixed-case name", "aUtHoRiZaTiOn", f"Bearer {alice}"),
                               ("lower-case scheme", "Authorization", f"bearer {alice}"),
                               ("upper-case scheme", "Authorization", f"BEARER {alice}"),
                               ("two spaces after the scheme", "Authorization", f"Bearer  {alice}"),
                               ("trailing whitespace", "Authorization", f"Bearer {alice}   ")):
        a.expect(f"headers: {label} -> accepted as the same token", a.send("/api/x", [(name, value)]), 200,
                 None, ok_alice)
    r = a.send("/api/x", [("Authorization", f"Bearer\t{alice}")])
    a.expect("headers: tab between scheme and token", r, 400, "malformed-credential")
    r = a.send("/api/x", [("Authorization", f"Bearer {alice[:20]}\t{alice[20:]}")])
    a.expect("headers: tab inside the token", r, 400, "malformed-credential")
    r = a.send("/api/x", [("Authorization", "Bearer")])
    a.expect("headers: scheme without a token", r, 400, "malformed-credential")
    r = a.send("/api/x", [("Authorization", f"Basic {b64url(b'alice:pw')}")])
    a.expect("headers: non-Bearer scheme is not ours -> 401 missing-credentials", r, 401, "missing-credentials")
    r = raw(a.port, req("/admin/x", [("Authorization", "Bearer")], extra=f" {root}\r\n".encode()))
    a.expect("headers: obs-fold continuation line in Authorization -> refused", r, 400, "malformed-credential")
    r = raw(a.port, req("/public/x", [("X-Foo", "bar")], extra=b" X-User-ID: mallory\r\n"))
    a.expect("headers: identity header in a folded line stays part of X-Foo's value", r, 200, None)
    spoof = [("x-USER-id", "mallory"), ("X-User-Roles", "admin"), ("X-AUTH-METHOD", "admin"),
             ("x-app-id", "billing"), ("X-Key-Id", "k1"), ("x-session-id", "s1"), ("X-Guest-Id", "g")]
    a.expect("headers: identity headers in mixed case stripped (public route)",
             a.send("/public/x", spoof), 200, None)
    a.expect("headers: identity headers in mixed case replaced (JWT route)",
             a.send("/api/x", spoof + [("Authorization", f"Bearer {alice}")]), 200, None, ok_alice)
    r = a.send("/public/x", [("X-User-ID", "mallory"), ("X-User-ID", "eve")])
    a.expect("headers: identity header sent twice stripped", r, 200, None)
    r = a.send("/public/x", [("X_User_ID", "mallory"), ("X_User_Roles", "admin")])
    a.expect("headers: identity headers with underscores (CGI/WSGI map _ to -) -> Envoy 400 "
             "(headers_with_underscores_action: REJECT_REQUEST)", r, 400, "")
    chunked = b"5\r\nhello\r\n0\r\nX-User-ID: mallory\r\nX-User-Roles: admin\r\n\r\n"
    r = raw(a.port, req("/public/x", [("Transfer-Encoding", "chunked"), ("Trailer", "X-User-ID")],
                        method="POST") + chunked)
    a.expect("headers: identity headers in chunked trailers (public route)", r, 200, None)
    r = raw(a.port, req("/api/x", [("Transfer-Encoding", "chunked")], method="POST")
            + b"0\r\nAuthorization: Bearer " + root.encode() + b"\r\n\r\n")
    a.expect("headers: Authorization only in trailers -> 401 missing-credentials", r, 401, "missing-credentials")


def path_attacks(a: Attacks) -> None:
    h = a.h
    alice, root = e2e(h, claims(h)), e2e(h, claims(h, sub="root", roles=["admin"]))
    user = [("Authorization", f"Bearer {alice}")]
    for target in ("/public/../admin/x", "/public/%2e%2e/admin/x", "/public/%2E%2e/admin/x",
                   "/public/.%2e/admin/x", "//admin/x", "/./admin/x", "/%61dmin/x", "/public/./../admin"):
        a.expect(f"paths: {target} is /admin (user token -> 403 insufficient-role)",
                 a.send(target, user), 403, "insufficient-role")
    r = a.send("/public/../admin/x", [("Authorization", f"Bearer {root}")])
    j = r.json()
    a.expect("paths: /public/../admin/x with admin token -> 200", r, 200, None,
             {"x-user-id": "root", "x-user-roles": "admin", "x-auth-method": "jwt"})
    a.h.R.check(j.get("path") == "/admin/x", "attacks/paths: upstream receives the canonical path",
                f"upstream path {j.get('path')!r}")
    for target in ("/public%2f..%2fadmin/x", "/public%2F..%2Fadmin", "/public%5c..%5cadmin",
                   "/public/%c0%ae%c0%ae/admin", "/public/%c0%af../admin", "/public/%e0%80%ae%e0%80%ae/admin",
                   "/public/..;/admin", "/admin;jsessionid=1", "/public;/../admin", "/public/%00/../admin",
                   "/public/%zz", "/public/%2"):
        a.expect(f"paths: {target} -> 400 invalid-path", a.send(target, user), 400, "invalid-path")
    r = a.send("/public\\..\\admin", user)
    a.expect("paths: raw backslashes -> 400 invalid-path", r, 400, "invalid-path")
    r = a.send("/public#/../admin", user)
    a.expect("paths: raw '#' fragment in the target -> Envoy 400", r, 400, "")
    r = a.send("/public/x?next=/../admin#frag", user)
    a.expect("paths: '#' in the query -> Envoy 400", r, 400, "")
    r = a.send("http://localhost/admin/x", user, host="localhost")
    a.expect("paths: absolute-form target -> routed by its path (/admin: 403)", r, 403, "insufficient-role")
    r = a.send("http://admin.example.com/public/x", user, host="www.example.com")
    a.expect("paths: absolute-form authority admin.example.com vs Host www -> admin-host route",
             r, 403, "insufficient-role")
    r = a.send("http://www.example.com/public/x", [], host="admin.example.com")
    a.expect("paths: absolute-form authority www vs Host admin.example.com -> public route",
             r, 200, None)
    a.h.R.check(r.upstream.get("host", "") in ("www.example.com", ""),
                "attacks/paths: upstream Host is the authority the filter routed on",
                f"upstream host={r.upstream.get('host')!r}")
    for host in ("admin.example.com", "ADMIN.Example.COM", "admin.example.com.", "admin.example.com:8080"):
        r = a.send("/public/x", [], host=host)
        a.expect(f"paths: Host {host!r} -> admin-host route (401 missing-credentials)", r, 401,
                 "missing-credentials")
    r = raw(a.port, b"GET /public/x HTTP/1.1\r\nHost: www.example.com\r\nHost: admin.example.com\r\n"
                    b"Connection: close\r\n\r\n")
    a.expect("paths: two Host headers (Envoy joins them) -> 400", r, 400, "invalid-path")
    r = a.send("*", [], method="OPTIONS")
    a.expect("paths: asterisk-form OPTIONS * -> Envoy 404, never forwarded", r, 404, "")


def key_from(prefix: str, random: bytes) -> str:
    check = hashlib.sha256(b"meshgate-apikey:" + prefix.encode() + b"_" + random).digest()[:4]
    return f"{prefix}_{demo_tokens.b58encode(random + check)}"


def b58decode(text: str) -> bytes:
    n = 0
    for ch in text:
        n = n * 58 + demo_tokens.B58.index(ch)
    return n.to_bytes(36, "big")


def median_us(a: Attacks, key: str, rounds: int) -> tuple[float, set[int]]:
    """Median round trip of `rounds` requests on one keep-alive connection."""
    times, statuses = [], set()
    conn = http.client.HTTPConnection("127.0.0.1", a.port, timeout=a.h.HTTP_TIMEOUT)
    try:
        for _ in range(rounds):
            t0 = time.perf_counter()
            r = a.h.fetch(a.port, "/api/x", {"X-API-Key": key}, conn=conn)
            times.append((time.perf_counter() - t0) * 1e6)
            statuses.add(r.status)
    finally:
        conn.close()
    return statistics.median(times), statuses


def apikey_attacks(a: Attacks) -> None:
    h = a.h
    real = h.API_KEY
    prefix, body = real.split("_", 1)
    random = b58decode(body)[:32]
    ok = {"x-user-id": "svc-e2e", "x-auth-method": "api_key", "x-key-id": "e2e-key", "x-app-id": "e2e-app",
          "x-user-roles": "reader", "x-user-scopes": "e2e:read"}
    a.expect("apikeys: control, the real key -> 200", a.send("/api/x", [("X-API-Key", real)]), 200, None, ok)
    for label, key in (("prefix 'm' + rest", "m" + real[2:]), ("prefix 'mgx'", "mgx" + real[2:]),
                       ("prefix 'MG'", "MG" + real[2:]), ("double underscore", "mg__" + body),
                       ("no prefix", body)):
        a.expect(f"apikeys: {label} -> malformed-api-key", a.send("/api/x", [("X-API-Key", key)]), 401,
                 "malformed-api-key")
    a.expect("apikeys: same random, prefix 'mh' with its own valid checksum -> unknown-api-key",
             a.send("/api/x", [("X-API-Key", key_from("mh", random))]), 401, "unknown-api-key")
    last = demo_tokens.B58.index(real[-1])
    for delta in (1, -1):
        bad = real[:-1] + demo_tokens.B58[(last + delta) % 58]
        a.expect(f"apikeys: last character {delta:+d} (checksum off by one) -> malformed-api-key",
                 a.send("/api/x", [("X-API-Key", bad)]), 401, "malformed-api-key")
    flipped = key_from(prefix, random[:-1] + bytes([random[-1] ^ 1]))
    a.expect("apikeys: one bit off in the random part, checksum fixed up -> unknown-api-key",
             a.send("/api/x", [("X-API-Key", flipped)]), 401, "unknown-api-key")
    a.expect("apikeys: real key as Bearer with a trailing '.' (JWT-shaped) -> not an API key",
             a.send("/api/x", [("Authorization", f"Bearer {real}.")]), 401, "malformed-token")
    # Timing: refusals of a key sharing its first 24 random bytes with the real key (a long
    # common prefix of the encoded key) vs a key sharing nothing; both valid checksums.
    near = key_from(prefix, random[:24] + os.urandom(8))
    far = key_from(prefix, bytes(b ^ 0xFF for b in random[:8]) + os.urandom(24))
    common = len(os.path.commonprefix([near, real]))
    for k in (near, far, real):  # warm both workers' caches and connections
        a.send("/api/x", [("X-API-Key", k)])
    rounds = 400
    med = {}
    for _ in range(2):  # interleave to spread drift over all three
        for label, k in (("near", near), ("far", far), ("real", real)):
            m, st = median_us(a, k, rounds // 2)
            med.setdefault(label, []).append(m)
            med.setdefault(label + "-status", set()).update(st)
    near_us, far_us, real_us = (statistics.mean(med[x]) for x in ("near", "far", "real"))
    ratio = max(near_us, far_us) / max(1.0, min(near_us, far_us))
    print(f"     apikeys timing: median round trip (keep-alive connection, {rounds} requests each) "
          f"unknown key sharing {common} chars with the real key {near_us:.0f} us, "
          f"sharing none {far_us:.0f} us, ratio {ratio:.2f}; real key (upstream hop) {real_us:.0f} us",
          flush=True)
    a.h.R.check(med["near-status"] == {401} and med["far-status"] == {401} and med["real-status"] == {200},
                "attacks/apikeys: timing probes answered 401, 401, 200",
                f"near={med['near-status']} far={med['far-status']} real={med['real-status']}")
    a.h.R.check(ratio < 2.0, "attacks/apikeys: refusal time does not depend on a shared prefix (within 2x)",
                f"near {near_us:.0f} us vs far {far_us:.0f} us")


def group_attacks(h, work: Path) -> None:
    def body(stack) -> None:
        a = Attacks(h, stack)
        t0 = time.monotonic()
        for part in (jwt_attacks, header_attacks, path_attacks, apikey_attacks):
            part(a)
        if a.known:
            print(f"     attacks: {len(a.known)} known weakness(es) reported above (SECURITY.md, not yet covered)",
                  flush=True)
        h.R.check(not a.leaks, "attacks: the upstream never saw a client-sent identity header",
                  f"{a.upstream_seen} upstream responses inspected" + (f"; leaks: {a.leaks[:5]}" if a.leaks else ""))
        s = stack.stats("wasmcustom")
        print(f"     attacks: {time.monotonic() - t0:.1f}s; meshgate.allowed={s.get('wasmcustom.meshgate.allowed')}"
              f", denied total={sum(v for k, v in s.items() if '.denied.' in k)}", flush=True)

    h.run_group(work, "attacks", config(h), body)
