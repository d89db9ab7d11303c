// ort_bench.js: ONNX Runtime (npm onnxruntime-node, CPU) side of the benchmark; run.sh drives it.
//
//   node ort_bench.js MODEL.onnx B T VOCAB [--runs N] [--threads N] [--check TOKENS.i64 OUT.f32]
//
// Runs the [B, T] forward exported by torch_model.py with N intra-op threads (default 2), one
// inter-op thread, sequential execution, all graph optimisations; prints 'key: value' lines:
// forward_seconds and forward_tokens_per_s (median of N runs after WARMUPS = 3 untimed runs) and peak_rss_kib
// (process.resourceUsage().maxRSS, KiB). With --check, runs the given int64 tokens once and
// writes the logits as raw little-endian float32 (torch_model.py check compares them).
'use strict';
const fs = require('fs');
const path = require('path');
const ort = require(path.join(__dirname, 'node_modules', 'onnxruntime-node'));
const WARMUPS = 3; // untimed runs before the timed ones: >= 3 for every engine (run.sh)

function arg(name, dflt) {
  const i = process.argv.indexOf(name);
  return i < 0 ? dflt : process.argv[i + 1];
}

function median(v) {
  const s = [...v].sort((a, b) => a - b);
  const n = s.length;
  return n % 2 ? s[(n - 1) / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
}

async function main() {
  const [model, Bs, Ts, Vs] = process.argv.slice(2, 6);
  const B = +Bs, T = +Ts, V = +Vs;
  const runs = +arg('--runs', 5), threads = +arg('--threads', 2);
  const sess = await ort.InferenceSession.create(model, {
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
  });
  const ci = process.argv.indexOf('--check');
  if (ci >= 0) {
    const buf = fs.readFileSync(process.argv[ci + 1]);
    const ids = new BigInt64Array(buf.buffer, buf.byteOffset, B * T);
    const out = await sess.run({ tokens: new ort.Tensor('int64', BigInt64Array.from(ids), [B, T]) });
    const l = out.logits.data;
    if (l.length !== B * T * V) throw new Error(`logits have ${l.length} values, expected ${B * T * V}`);
    fs.writeFileSync(process.argv[ci + 2], Buffer.from(l.buffer, l.byteOffset, l.byteLength));
  }
  // the same kind of input as the other engines: uniform random ids (speed does not depend on them)
  const ids = new BigInt64Array(B * T);
  let s = 12345;
  for (let i = 0; i < B * T; i++) {
    s = (s * 1103515245 + 12345) % 2147483648;
    ids[i] = BigInt(s % V);
  }
  const feeds = { tokens: new ort.Tensor('int64', ids, [B, T]) };
  for (let k = 0; k < WARMUPS; k++) await sess.run(feeds);
  const times = [];
  for (let k = 0; k < runs; k++) {
    const t0 = process.hrtime.bigint();
    await sess.run(feeds);
    times.push(Number(process.hrtime.bigint() - t0) / 1e9);
  }
  const fwd = median(times);
  console.log(`forward_seconds: ${fwd.toFixed(6)}`);
  console.log(`forward_tokens_per_s: ${(B * T / fwd).toFixed(1)}`);
  console.log(`peak_rss_kib: ${process.resourceUsage().maxRSS}`);
  console.log(`ort_version: ${require(path.join(__dirname, 'node_modules', 'onnxruntime-node', 'package.json')).version}`);
}

main().catch((e) => {
  console.error(`ort_bench.js: error: ${e.message}`);
  process.exit(1);
});
