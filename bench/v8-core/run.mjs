// Times meshgate-core's per-request work under V8 (node's, not Envoy's): the
// module cost the filter adds, without the proxy's noise. Usage:
//   node bench/v8-core/run.mjs MODULE.wasm [--ms 400] [--rounds 5] [--only SUBSTR] [--json]
// Each case runs in batches sized to about `--ms` milliseconds, `--rounds`
// times after a warm-up; it prints the median, min and max microseconds per
// call. A case whose runs did not all succeed is an error, not a number.
import { readFileSync } from 'node:fs';
import { WASI } from 'node:wasi';
import { performance } from 'node:perf_hooks';

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : dflt;
};
const path = args.find((a, i) => !a.startsWith('--') && !(i > 0 && args[i - 1].startsWith('--')));
if (!path) {
  console.error('usage: node run.mjs MODULE.wasm [--ms N] [--rounds N] [--only SUBSTR] [--json]');
  process.exit(2);
}
const budgetMs = Number(opt('--ms', '400'));
const rounds = Number(opt('--rounds', '5'));
const only = opt('--only', '');

const wasi = new WASI({ version: 'preview1', args: [], env: {}, returnOnExit: true });
const { instance } = await WebAssembly.instantiate(readFileSync(path), wasi.getImportObject());
wasi.initialize(instance);
const m = instance.exports;

const count = m.setup();
const buf = m.alloc(64);
const nameOf = (i) => {
  const len = m.case_name(i, buf, 64);
  return Buffer.from(new Uint8Array(m.memory.buffer, buf, len)).toString();
};

const timed = (i, n) => {
  const t0 = performance.now();
  const ok = m.run(i, n);
  const ms = performance.now() - t0;
  if (ok !== n) throw new Error(`${nameOf(i)}: ${n - ok} of ${n} runs failed`);
  return ms;
};

const results = [];
for (let i = 0; i < count; i++) {
  const name = nameOf(i);
  if (only && !name.includes(only)) continue;
  // Warm-up (Liftoff, then TurboFan) and sizing: grow n until a batch
  // takes a tenth of the budget, then scale it to the whole budget.
  let n = 1;
  while (timed(i, n) < budgetMs / 10 && n < 1 << 24) n *= 2;
  n = Math.max(1, Math.round((n * budgetMs) / Math.max(timed(i, n), 1e-3)));
  const perCall = [];
  for (let r = 0; r < rounds; r++) perCall.push((timed(i, n) * 1000) / n);
  perCall.sort((a, b) => a - b);
  results.push({ name, calls: n, median_us: perCall[perCall.length >> 1], min_us: perCall[0], max_us: perCall[perCall.length - 1] });
}

if (args.includes('--json')) {
  console.log(JSON.stringify({ node: process.version, v8: process.versions.v8, results }, null, 2));
} else {
  console.log(`node ${process.version}, V8 ${process.versions.v8}; µs per call, median (min–max) of ${rounds} batches`);
  for (const r of results) {
    console.log(`${r.name.padEnd(28)} ${r.median_us.toFixed(3).padStart(10)}  (${r.min_us.toFixed(3)}–${r.max_us.toFixed(3)})  x${r.calls}`);
  }
}
