#!/usr/bin/env python3
"""Render an Envoy bootstrap template (default: envoy/demo.yaml.in) for meshgate.

Fills the template's ${NAME} placeholders from flags, falling back to environment
variables, falling back to the local defaults of docs (ARCHITECTURE.md):

  placeholder          flag                   environment                    default
  LISTEN_ADDRESS       --listen-address       MESHGATE_ENVOY_ADDRESS         127.0.0.1
  ENVOY_PORT           --envoy-port           MESHGATE_ENVOY_PORT            8080
  ADMIN_PORT           --admin-port           MESHGATE_ENVOY_ADMIN_PORT      9901
  UPSTREAM_HOST        --upstream-host        MESHGATE_UPSTREAM_HOST         127.0.0.1
  UPSTREAM_PORT        --upstream-port        MESHGATE_UPSTREAM_PORT         8082
  CONTROL_PLANE_HOST   --control-plane-host   MESHGATE_CONTROL_PLANE_HOST    host of MESHGATE_LISTEN, else 127.0.0.1
  CONTROL_PLANE_PORT   --control-plane-port   MESHGATE_CONTROL_PLANE_PORT    port of MESHGATE_LISTEN, else 8081
  WASM                 --wasm                 MESHGATE_WASM                  target/wasm32-wasip1/release/meshgate_filter.wasm
  PLUGIN_CONFIG        --plugin-config FILE   MESHGATE_PLUGIN_CONFIG         envoy/demo-plugin.json

The plugin configuration file must hold JSON; it is parsed (a syntax error stops the
render with the file and line), compacted, and embedded as the google.protobuf.StringValue
`configuration` of the wasm filter. `--plugin-json TEXT` embeds JSON given inline instead
(handy for tests that try one-off configurations). The WASM path is made absolute and
must exist unless --no-check is given.

Writes to --out FILE (default stdout). Only the Python standard library is used, so
tests and scripts can call it as `python3 envoy/render.py ...` or import `render()`.
"""

from __future__ import annotations

import argparse
import json
import os
import string
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_TEMPLATE = HERE / "demo.yaml.in"
DEFAULT_PLUGIN_CONFIG = HERE / "demo-plugin.json"
DEFAULT_WASM = REPO / "target" / "wasm32-wasip1" / "release" / "meshgate_filter.wasm"


def _listen_parts() -> tuple[str | None, str | None]:
    """Host and port of MESHGATE_LISTEN (the control plane's listen address), if set."""
    value = os.environ.get("MESHGATE_LISTEN", "").strip()
    if not value or ":" not in value:
        return None, None
    host, _, port = value.rpartition(":")
    host = host.strip("[]")
    if host in ("0.0.0.0", "", "::"):
        host = "127.0.0.1"
    return host, port


def yaml_string(text: str) -> str:
    """A YAML double-quoted scalar holding `text` exactly.

    A JSON string literal is a valid YAML 1.2 double-quoted scalar, and ensure_ascii
    keeps every non-ASCII or control character as a \\uXXXX escape.
    """
    return json.dumps(text, ensure_ascii=True)


def render(
    *,
    template: Path = DEFAULT_TEMPLATE,
    wasm: Path | str = DEFAULT_WASM,
    plugin_json: str,
    envoy_port: int = 8080,
    admin_port: int = 9901,
    upstream_host: str = "127.0.0.1",
    upstream_port: int = 8082,
    control_plane_host: str = "127.0.0.1",
    control_plane_port: int = 8081,
    listen_address: str = "127.0.0.1",
) -> str:
    """Return the rendered bootstrap. `plugin_json` must be valid JSON text."""
    compact = json.dumps(json.loads(plugin_json), separators=(",", ":"), ensure_ascii=False)
    values = {
        "LISTEN_ADDRESS": listen_address,
        "ENVOY_PORT": str(int(envoy_port)),
        "ADMIN_PORT": str(int(admin_port)),
        "UPSTREAM_HOST": upstream_host,
        "UPSTREAM_PORT": str(int(upstream_port)),
        "CONTROL_PLANE_HOST": control_plane_host,
        "CONTROL_PLANE_PORT": str(int(control_plane_port)),
        "WASM": yaml_string(str(Path(wasm).resolve())),
        "PLUGIN_CONFIG": yaml_string(compact),
    }
    return string.Template(Path(template).read_text()).substitute(values)


def main(argv: list[str] | None = None) -> int:
    env = os.environ.get
    cp_host, cp_port = _listen_parts()
    p = argparse.ArgumentParser(
        description="Render an Envoy bootstrap for meshgate.",
        epilog="See the module docstring for the environment variables.",
    )
    p.add_argument("--template", default=str(DEFAULT_TEMPLATE))
    p.add_argument("--wasm", default=env("MESHGATE_WASM", str(DEFAULT_WASM)))
    src = p.add_mutually_exclusive_group()
    src.add_argument(
        "--plugin-config", default=env("MESHGATE_PLUGIN_CONFIG", str(DEFAULT_PLUGIN_CONFIG))
    )
    src.add_argument("--plugin-json", help="inline JSON instead of --plugin-config")
    p.add_argument("--listen-address", default=env("MESHGATE_ENVOY_ADDRESS", "127.0.0.1"))
    p.add_argument("--envoy-port", type=int, default=int(env("MESHGATE_ENVOY_PORT", "8080")))
    p.add_argument("--admin-port", type=int, default=int(env("MESHGATE_ENVOY_ADMIN_PORT", "9901")))
    p.add_argument("--upstream-host", default=env("MESHGATE_UPSTREAM_HOST", "127.0.0.1"))
    p.add_argument(
        "--upstream-port", type=int, default=int(env("MESHGATE_UPSTREAM_PORT", "8082"))
    )
    p.add_argument(
        "--control-plane-host",
        default=env("MESHGATE_CONTROL_PLANE_HOST", cp_host or "127.0.0.1"),
    )
    p.add_argument(
        "--control-plane-port",
        type=int,
        default=int(env("MESHGATE_CONTROL_PLANE_PORT", cp_port or "8081")),
    )
    p.add_argument("--out", help="output file (default: stdout)")
    p.add_argument("--no-check", action="store_true", help="do not require the .wasm to exist")
    a = p.parse_args(argv)

    if not a.no_check and not Path(a.wasm).is_file():
        print(f"render.py: wasm module not found: {a.wasm} (run `make build`)", file=sys.stderr)
        return 2
    if a.plugin_json is not None:
        plugin_json, origin = a.plugin_json, "--plugin-json"
    else:
        plugin_json, origin = Path(a.plugin_config).read_text(), a.plugin_config
    try:
        out = render(
            template=Path(a.template),
            wasm=a.wasm,
            plugin_json=plugin_json,
            envoy_port=a.envoy_port,
            admin_port=a.admin_port,
            upstream_host=a.upstream_host,
            upstream_port=a.upstream_port,
            control_plane_host=a.control_plane_host,
            control_plane_port=a.control_plane_port,
            listen_address=a.listen_address,
        )
    except json.JSONDecodeError as e:
        print(f"render.py: {origin}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}",
              file=sys.stderr)
        return 2
    except (KeyError, ValueError) as e:
        print(f"render.py: {a.template}: bad placeholder {e}", file=sys.stderr)
        return 2

    if a.out:
        Path(a.out).write_text(out)
    else:
        sys.stdout.write(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
