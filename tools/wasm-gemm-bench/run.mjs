// Times gemm 0.19 and the page's tiles on one thread in headless Chromium, for SmolLM2's products
// (hidden 576, MLP 1536, keys and values 192), and prints GFLOP/s: medians of ROUNDS rounds that
// alternate the two, and the ratio within each round (the VM's drift from second to second
// cancels there). Run by scripts/bench-wasm-gemm, which builds the module first.
import { readFileSync } from 'node:fs';
import { launch } from '../../tests/browser/lib.mjs';

const wasm = [...readFileSync(process.argv[2])];
const rounds = Number(process.env.ROUNDS ?? 5);
// [m, k, n, layout (1: a read transposed, 2: b), what]
const shapes = [
  [128, 576, 1536, 0, 'MLP up, 128 rows'],
  [128, 1536, 576, 0, 'MLP down, 128 rows'],
  [128, 576, 192, 0, 'keys, 128 rows'],
  [40, 576, 576, 0, 'a query, 40 rows'],
  [128, 1536, 576, 2, 'gradient to the input, 128 rows (g Wᵀ)'],
  [576, 128, 1536, 1, 'gradient to a weight, 128 rows (xᵀ g)'],
];
const { ctx, page } = await launch({});
try {
  await page.goto('about:blank');
  const rows = await page.evaluate(async ({ wasm, shapes, rounds }) => {
    const e = (await WebAssembly.instantiate(new Uint8Array(wasm))).instance.exports;
    const rate = (m, k, n, t, tiles) => {
      e.product(m, k, n, t, tiles, 2);
      const t0 = performance.now();
      const flops = e.product(m, k, n, t, tiles, 20);
      return flops / ((performance.now() - t0) / 1000) / 1e9;
    };
    const median = (xs) => xs.sort((a, b) => a - b)[xs.length >> 1];
    return shapes.map(([m, k, n, t, what]) => {
      const [g, o, ratio] = [[], [], []];
      for (let r = 0; r < rounds; r++) {
        g.push(rate(m, k, n, t, 0));
        o.push(rate(m, k, n, t, 1));
        ratio.push(o.at(-1) / g.at(-1));
      }
      const spread = `${Math.min(...ratio).toFixed(2)}-${Math.max(...ratio).toFixed(2)}`;
      return { what, shape: `[${m}, ${k}] x [${k}, ${n}]`, gemm: median(g), tiles: median(o), ratio: median(ratio), spread, difference: e.difference(m, k, n, t) };
    });
  }, { wasm, shapes, rounds });
  console.log(`| product | shape | gemm 0.19 (GFLOP/s) | the page's tiles | ratio in a round, median (range) | largest difference |`);
  console.log(`|---|---|---|---|---|---|`);
  for (const r of rows) {
    console.log(`| ${r.what} | ${r.shape} | ${r.gemm.toFixed(1)} | ${r.tiles.toFixed(1)} | ${r.ratio.toFixed(2)} (${r.spread}) | ${r.difference.toExponential(1)} |`);
  }
} finally {
  await ctx.close();
}
