"""Checks of bench/run.py's pieces that a benchmark run would only show as wrong numbers:
the bootstrap with a listener per variant (validated by Envoy itself when ENVOY or
.venv/bin/envoy is there), the round order, the pairing, the latency table and the
classification of perf's call stacks.

    python3 -m unittest bench/test_run.py      # part of `make test`
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402


def variant(name: str, cpu: list[float], group: str = "meshgate", **kw) -> run.Variant:
    v = run.Variant(name, group, name, **kw)
    v.runs = [{"cpu_us": c, "rps": 1e6 / c, "p50": 1.0, "p99": 2.0, "ok": True} for c in cpu]
    return v


class Bootstrap(unittest.TestCase):
    def test_one_envoy_holds_a_listener_and_a_vm_per_variant(self):
        noop = run.snippet("noop-wasm", 10, WASM=run.yaml_string("/x/noop.wasm"), MODES=run.yaml_string(""))
        listeners = [("noop-wasm", 10001, run.own_vm(noop, "noop-wasm")),
                     ("noop-wasm+again", 10002, run.own_vm(noop, "noop-wasm+again")),
                     ("baseline", 10003, "")]
        text = run.render_bootstrap("all", 9901, listeners, "")
        for name, port, _ in listeners:
            self.assertIn(f"  - name: {name}\n", text)
            self.assertIn(f"port_value: {port} }}", text)
        self.assertIn("vm_id: noop-noop-wasm\n", text)
        self.assertIn("vm_id: noop-noop-wasm+again\n", text)
        self.assertEqual(text.count("envoy.filters.http.router"), 3)
        self.assertNotIn("${", text)

    @unittest.skipUnless(Path(os.environ.get("ENVOY", run.DEFAULT_ENVOY)).is_file(), "no Envoy (make envoy-install)")
    def test_envoy_accepts_it(self):
        plugin = run.yaml_string(run.plugin_config(run.ENVOY_DIR / "meshgate-plugin.json",
                                                   [run.Signer("HS256", "k")], "00" * 32))
        mesh = run.snippet("meshgate", 10, WASM=run.yaml_string(str(run.DEFAULT_WASM)), PLUGIN_CONFIG=plugin)
        listeners = [(n, 10000 + i, run.own_vm(mesh, n)) for i, n in enumerate(("a", "b"))]
        listeners.append(("baseline", 10009, ""))
        with tempfile.TemporaryDirectory() as d:
            cfg = Path(d) / "all.yaml"
            cfg.write_text(run.render_bootstrap("all", 9901, listeners, ""))
            envoy = os.environ.get("ENVOY", str(run.DEFAULT_ENVOY))
            done = subprocess.run([envoy, "--mode", "validate", "-c", str(cfg)], capture_output=True, text=True,
                                  timeout=120)
        self.assertEqual(done.returncode, 0, (done.stdout + done.stderr)[-2000:])


class Rounds(unittest.TestCase):
    def test_each_round_starts_one_later(self):
        vs = [variant(n, [1.0]) for n in "abc"]
        orders = ["".join(v.name for v in run.rotated(vs, r)) for r in range(4)]
        self.assertEqual(orders, ["abc", "bca", "cab", "abc"])
        self.assertEqual(run.rotated([], 3), [])

    def test_pairs_by_round_against_the_reference(self):
        ref = variant("noop-wasm", [50.0, 52.0, 51.0], group="noop")
        a = variant("meshgate-hs256", [70.0, 69.0, 75.0])
        text = run.paired([ref, a, variant("skipped", [])], "noop-wasm")
        self.assertIn("against `noop-wasm`", text)
        # Differences 20, 17, 24: median 20, range 17..24, all three positive.
        self.assertIn("| meshgate-hs256 | +20.0 (+17.0 to +24.0) | 3/3 |", text)
        self.assertNotIn("skipped", text)
        # No such reference: the first variant that ran.
        self.assertIn("against `meshgate-hs256`", run.paired([a, ref], "nothing"))
        self.assertEqual(run.paired([a], "noop-wasm"), "")


class Latency(unittest.TestCase):
    def test_table_and_ratios(self):
        def paced(name: str, group: str, p99s: list[int], alg: str | None = None, ok: bool = True) -> run.Variant:
            v = run.Variant(name, group, name, alg=alg)
            v.paced = [{"p50_us": p - 50, "p99_us": p, "p999_us": 2 * p, "lag_p99_us": 60, "ok_run": ok}
                       for p in p99s]
            return v

        vs = [paced("baseline", "baseline", [180, 190, 185]), paced("native-hs256", "native", [220, 230, 210], "HS256"),
              paced("meshgate-hs256", "meshgate", [264, 280, 260], "HS256", ok=False)]
        a = argparse.Namespace(rate=4000.0, pace_connections=8)
        text = run.latency_report(vs, a)
        self.assertIn("| baseline | 135 | 185 | 370 | +0 | 60 |", text)
        self.assertIn("| meshgate-hs256 ⚠ | 214 | 264 | 528 | +79 | 60 |", text)
        self.assertIn(f"| meshgate-hs256 / native-hs256 | {214 / 170:.3f} | {264 / 220:.3f} |", text)
        self.assertEqual(run.latency_report([variant("x", [1.0])], a), "")


ENVOY_BIN = "(/venv/lib/python3.11/site-packages/envoy/_bin/envoy)"


class Profile(unittest.TestCase):
    def test_call_stacks_are_split_by_where_the_leaf_is(self):
        script = "\n".join([
            # Wasm code (no file behind it: perf names the missing map file).
            "\t    18502a70c701 (/tmp/perf-8124.map)", "\t         57aebee " + ENVOY_BIN, "",
            # A host function called from Wasm code: unwinding stops at the Wasm frame.
            "\t         2f65980 " + ENVOY_BIN, "\t         2fac900 " + ENVOY_BIN,
            "\t    18502a70c702 (/tmp/perf-8124.map)", "",
            "\t         2f65981 " + ENVOY_BIN, "\t    18502a4c0280 ([JIT] tid 7751)", "",
            # Envoy's own work, to the thread's start; the end-of-stack marker is not a frame.
            "\t         57a2565 " + ENVOY_BIN, "\t           891f4 (/usr/lib/x86_64-linux-gnu/libc.so.6)",
            "\tffffffffffffffff ([unknown])", "",
            "\t           9a2b1 (/usr/lib/x86_64-linux-gnu/libc.so.6)", "",
            # The kernel, on behalf of Envoy.
            "\tffffffff8f12ab34 ([kernel.kallsyms])", "\t         57a2565 " + ENVOY_BIN,
        ])
        self.assertEqual(run.classify_samples(script), {"wasm": 1, "host": 2, "envoy": 2, "kernel": 1})
        self.assertEqual(run.classify_samples(""), dict.fromkeys(run.PROFILE_PARTS, 0))

    def test_report(self):
        v = variant("meshgate-hs256", [70.0])
        v.profile = {"ok": True, "cpu_us": 80.0, "samples": 12000, "wasm": 8.04, "host": 5.96, "envoy": 50.0,
                     "kernel": 12.0}
        text = run.profile_report([v, variant("noop-wasm", [50.0])])
        self.assertIn("| meshgate-hs256 | 8.0 | 6.0 | 50.0 | 12.0 | 76.0 | 12,000 |", text)
        self.assertNotIn("| noop-wasm |", text)
        self.assertEqual(run.profile_report([variant("x", [1.0])]), "")


if __name__ == "__main__":
    unittest.main()
