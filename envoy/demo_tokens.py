#!/usr/bin/env python3
"""Mint HS256 JWTs that the demo plugin configuration accepts (standard library only).

Issuer, audience, kid and secret are read from the plugin JSON's first issuer that has an
`oct` (HS256) key, so tokens always match the configuration Envoy was started with:

    demo_tokens.py --sub alice --roles user             # valid for 1 hour
    demo_tokens.py --sub root --roles admin,user --ttl 300
    demo_tokens.py --sub alice --ttl -3600              # already expired
    demo_tokens.py --sub alice --secret other-32-byte-secret-xxxxxxxxxxxxx  # bad signature

Prints the compact JWT on stdout. Importable: `mint(plugin_config_path, sub, roles, ...)`.
The demo secret is public (it sits in envoy/demo-plugin.json): never reuse it.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import sys
import time
from pathlib import Path

DEFAULT_PLUGIN_CONFIG = Path(__file__).resolve().parent / "demo-plugin.json"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def b58encode(data: bytes) -> str:
    """Base58 (Bitcoin alphabet), as meshgate API keys use it."""
    n = int.from_bytes(data, "big")
    out = ""
    while n:
        n, r = divmod(n, 58)
        out = B58[r] + out
    return "1" * (len(data) - len(data.lstrip(b"\0"))) + out


def mint_api_key(prefix: str = "mg") -> str:
    """A key in the README's format: prefix_base58(random32 || sha256(tag, prefix, _, random)[:4])."""
    random = os.urandom(32)
    check = hashlib.sha256(b"meshgate-apikey:" + prefix.encode() + b"_" + random).digest()[:4]
    return f"{prefix}_{b58encode(random + check)}"


def hs256_issuer(plugin_config: Path | str) -> tuple[str, str, str, bytes]:
    """(issuer, audience, kid, secret) of the first issuer with an `oct` key."""
    cfg = json.loads(Path(plugin_config).read_text())
    for issuer in cfg.get("issuers", []):
        for key in issuer.get("keys", []):
            if key.get("kty") == "oct" and key.get("k"):
                return issuer["issuer"], issuer["audiences"][0], key["kid"], _b64url_decode(key["k"])
    raise SystemExit(f"{plugin_config}: no issuer with an HS256 (kty=oct) key")


def mint(
    plugin_config: Path | str = DEFAULT_PLUGIN_CONFIG,
    sub: str = "alice",
    roles: list[str] | tuple[str, ...] = (),
    *,
    ttl: int = 3600,
    scope: str | None = "demo:read",
    app_id: str | None = None,
    sid: str | None = None,
    secret: bytes | None = None,
    extra: dict | None = None,
    now: int | None = None,
) -> str:
    """Return a signed compact JWT. `ttl` may be negative (an expired token)."""
    iss, aud, kid, key = hs256_issuer(plugin_config)
    now = int(time.time()) if now is None else now
    claims: dict = {
        "iss": iss,
        "aud": aud,
        "sub": sub,
        "iat": now,
        "exp": now + ttl,
        "jti": hashlib.sha256(f"{sub}|{now}|{ttl}|{time.time_ns()}".encode()).hexdigest()[:24],
        "roles": list(roles),
    }
    if scope:
        claims["scope"] = scope
    if app_id:
        claims["app_id"] = app_id
    if sid:
        claims["sid"] = sid
    claims.update(extra or {})
    header = {"alg": "HS256", "typ": "JWT", "kid": kid}
    compact = lambda obj: json.dumps(obj, separators=(",", ":")).encode()  # noqa: E731
    signing_input = f"{_b64url(compact(header))}.{_b64url(compact(claims))}"
    signature = hmac.new(secret or key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64url(signature)}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--plugin-config", default=str(DEFAULT_PLUGIN_CONFIG))
    p.add_argument("--sub", default="alice")
    p.add_argument("--roles", default="", help="comma-separated")
    p.add_argument("--ttl", type=int, default=3600, help="seconds until exp (negative: expired)")
    p.add_argument("--scope", default="demo:read", help="space-separated scopes ('' for none)")
    p.add_argument("--app-id")
    p.add_argument("--sid")
    p.add_argument("--secret", help="sign with this secret instead (a forged token)")
    a = p.parse_args(argv)
    print(
        mint(
            a.plugin_config,
            a.sub,
            [r for r in a.roles.split(",") if r],
            ttl=a.ttl,
            scope=a.scope or None,
            app_id=a.app_id,
            sid=a.sid,
            secret=a.secret.encode() if a.secret else None,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
