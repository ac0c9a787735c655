#!/usr/bin/env python3
"""Checks the Istio manifests in this directory without a cluster.

  python3 envoy/istio/check.py

With PyYAML (`python3 -c 'import yaml'`; else `.venv/bin/pip install pyyaml`):
  - wasmplugin.yaml and control-plane.yaml parse; kinds WasmPlugin, ServiceEntry,
    DestinationRule; the WasmPlugin fields the README relies on (url scheme, sha256 shape,
    phase AUTHN, failStrategy never FAIL_OPEN, pluginName meshgate, type HTTP);
  - pluginConfig carries the demo's routes, realm, default policy and security headers
    (envoy/demo-plugin.json) and a `sync` section whose `cluster` is the name Istio gives
    the ServiceEntry's cluster, outbound|<port>||<host>; the DestinationRule is for that host;
  - the pluginConfig, serialised to JSON as Istio does, is accepted by the filter itself:
    rendered into the demo bootstrap and run through `envoy --mode validate` (skipped with
    a note when Envoy or the .wasm is missing).
Without PyYAML, only parser-free sanity checks (no tabs, the three kinds present, the
`cluster:` line matches the ServiceEntry host and port).

Prints `ok`/`FAIL` lines and `N passed, M failed`; exit status 1 on any failure.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ENVOY_DIR = HERE.parent
REPO = ENVOY_DIR.parent
sys.path.insert(0, str(ENVOY_DIR))
sys.dont_write_bytecode = True

PASSED = FAILED = 0


def check(cond: bool, name: str, detail: str = "") -> bool:
    global PASSED, FAILED
    if cond:
        PASSED += 1
    else:
        FAILED += 1
    print(f"{'ok  ' if cond else 'FAIL'} {name}" + (f": {detail}" if detail else ""), flush=True)
    return bool(cond)


def parser_free(wasm_text: str, cp_text: str) -> None:
    for fname, text in (("wasmplugin.yaml", wasm_text), ("control-plane.yaml", cp_text)):
        check("\t" not in text, f"{fname}: no tab characters")
    check(re.search(r"^kind: WasmPlugin$", wasm_text, re.M) is not None, "wasmplugin.yaml: kind WasmPlugin")
    for kind in ("ServiceEntry", "DestinationRule"):
        check(re.search(rf"^kind: {kind}$", cp_text, re.M) is not None, f"control-plane.yaml: kind {kind}")
    host = re.search(r"^  hosts:\n    - (\S+)$", cp_text, re.M)
    port = re.search(r"^    - number: (\d+)$", cp_text, re.M)
    cluster = re.search(r'^      cluster: "([^"]+)"$', wasm_text, re.M)
    want = f"outbound|{port.group(1)}||{host.group(1)}" if host and port else "?"
    check(bool(cluster) and cluster.group(1) == want, "sync.cluster names the ServiceEntry's cluster",
          f"{cluster.group(1) if cluster else None!r} vs {want!r}")


def envoy_validate(plugin: dict) -> None:
    import render  # envoy/render.py

    envoy = os.environ.get("ENVOY") or str(REPO / ".venv" / "bin" / "envoy")
    wasm = os.environ.get("MESHGATE_WASM") or str(render.DEFAULT_WASM)
    if not (os.access(envoy, os.X_OK) and os.path.isfile(wasm)):
        print(f"note: envoy --mode validate skipped (no {envoy} or no {wasm}; `make envoy-install build`)")
        return
    # Istio hands the filter protojson of a google.protobuf.Struct: integral numbers print
    # without a fraction, so json.dumps of the parsed YAML is the same document.
    text = json.dumps(plugin, separators=(",", ":"))
    with tempfile.TemporaryDirectory(prefix="meshgate-istio-check.") as d:
        cfg = Path(d) / "envoy.yaml"
        cfg.write_text(render.render(wasm=wasm, plugin_json=text, envoy_port=0, admin_port=0,
                                     upstream_port=1, control_plane_port=1))
        p = subprocess.run([envoy, "--mode", "validate", "-c", str(cfg), "--concurrency", "1",
                            "--disable-hot-restart", "--log-level", "warning"],
                           capture_output=True, text=True, timeout=120)
    out = (p.stdout + p.stderr).splitlines()
    why = [l[l.find("meshgate:"):] for l in out if "invalid plugin configuration" in l] or out[-3:]
    check(p.returncode == 0, "pluginConfig accepted by the filter (envoy --mode validate)",
          f"exit status {p.returncode}" + (f"; {why[:2]}" if p.returncode else ""))


def main() -> int:
    wasm_text = (HERE / "wasmplugin.yaml").read_text()
    cp_text = (HERE / "control-plane.yaml").read_text()
    try:
        import yaml
    except ImportError:
        print("note: PyYAML not installed: parser-free checks only")
        parser_free(wasm_text, cp_text)
        print(f"{PASSED} passed, {FAILED} failed")
        return 1 if FAILED else 0

    docs = {}
    for fname, text in (("wasmplugin.yaml", wasm_text), ("control-plane.yaml", cp_text)):
        try:
            for d in yaml.safe_load_all(text):
                docs[d["kind"]] = d
            check(True, f"{fname}: parses")
        except (yaml.YAMLError, KeyError, TypeError) as e:
            check(False, f"{fname}: parses", str(e))
    if not check({"WasmPlugin", "ServiceEntry", "DestinationRule"} <= docs.keys(), "kinds present",
                 str(sorted(docs))):
        print(f"{PASSED} passed, {FAILED} failed")
        return 1
    wp, se, dr = docs["WasmPlugin"]["spec"], docs["ServiceEntry"]["spec"], docs["DestinationRule"]["spec"]
    check(docs["WasmPlugin"]["apiVersion"] == "extensions.istio.io/v1alpha1", "WasmPlugin apiVersion")
    check(re.match(r"^(oci|https)://", wp.get("url", "")) is not None, "WasmPlugin url is oci:// or https://",
          wp.get("url", ""))
    check(re.fullmatch(r"[0-9a-f]{64}", str(wp.get("sha256", ""))) is not None, "WasmPlugin sha256 is 64 hex")
    check(wp.get("phase") == "AUTHN", "WasmPlugin phase AUTHN", str(wp.get("phase")))
    check(wp.get("failStrategy") in ("FAIL_CLOSE", "FAIL_RELOAD"), "WasmPlugin never fails open",
          str(wp.get("failStrategy")))
    check(wp.get("pluginName") == "meshgate" and wp.get("type", "HTTP") == "HTTP",
          "WasmPlugin pluginName meshgate, type HTTP")

    pc = wp.get("pluginConfig", {})
    demo = json.loads((ENVOY_DIR / "demo-plugin.json").read_text())
    for field in ("routes", "realm", "default_policy", "security_headers"):
        check(pc.get(field) == demo.get(field), f"pluginConfig.{field} equals envoy/demo-plugin.json's")
    sync = pc.get("sync", {})
    port = se["ports"][0]["number"]
    host = se["hosts"][0]
    want = f"outbound|{port}||{host}"
    check(sync.get("cluster") == want, "pluginConfig.sync.cluster names the ServiceEntry's cluster",
          f"{sync.get('cluster')!r} vs {want!r}")
    check(dr.get("host") == host, "DestinationRule is for the ServiceEntry's host", f"{dr.get('host')!r}")
    check(bool(sync.get("api_key")) and all(not i.get("keys") for i in pc.get("issuers", [])),
          "sync.api_key set; issuers take their keys from the feed")
    envoy_validate(pc)
    print(f"{PASSED} passed, {FAILED} failed")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
