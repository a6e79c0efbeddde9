// Times gemm 0.19, the page's tiles and its tiles on the fused kernel (www/fused.js) on one thread
// in headless Chromium, for SmolLM2's products (hidden 576, MLP 1536, keys and values 192), and
// prints GFLOP/s: medians of ROUNDS rounds that alternate the three, and the ratios within each
// round (the VM's drift from second to second cancels there). Run by scripts/bench-wasm-gemm,
// which builds the module first.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { launch } from '../../tests/browser/lib.mjs';

const wasm = [...readFileSync(process.argv[2])];
const fused = readFileSync(join(import.meta.dirname, '../../www/fused.js'), 'utf8');
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
  await page.addScriptTag({ content: fused });
  const rows = await page.evaluate(async ({ wasm, shapes, rounds }) => {
    const e = (await WebAssembly.instantiate(new Uint8Array(wasm))).instance.exports;
    // The module as the engine's loader sees it (the bench turns the kernel on per product).
    const took = alignlabFuse({ memory: e.memory, __indirect_function_table: e.__indirect_function_table, alignlab_tile_slot: e.tile_slot }, false);
    if (!took) throw new Error('the fused kernel did not load: no relaxed SIMD in this browser?');
    const rate = (m, k, n, t, kind) => {
      e.product(m, k, n, t, kind, 2);
      const t0 = performance.now();
      const flops = e.product(m, k, n, t, kind, 20);
      return flops / ((performance.now() - t0) / 1000) / 1e9;
    };
    const median = (xs) => xs.sort((a, b) => a - b)[xs.length >> 1];
    const range = (xs) => `${Math.min(...xs).toFixed(2)}-${Math.max(...xs).toFixed(2)}`;
    return shapes.map(([m, k, n, t, what]) => {
      const [g, o, f, tiles, fusedRatio] = [[], [], [], [], []];
      for (let r = 0; r < rounds; r++) {
        g.push(rate(m, k, n, t, 0));
        o.push(rate(m, k, n, t, 1));
        f.push(rate(m, k, n, t, 2));
        tiles.push(o.at(-1) / g.at(-1));
        fusedRatio.push(f.at(-1) / o.at(-1));
      }
      return {
        what, shape: `[${m}, ${k}] x [${k}, ${n}]`, gemm: median(g), tiles: median(o), fused: median(f),
        tilesRatio: `${median([...tiles]).toFixed(2)} (${range(tiles)})`, fusedRatio: `${median([...fusedRatio]).toFixed(2)} (${range(fusedRatio)})`,
        difference: [e.difference(m, k, n, t, 1), e.difference(m, k, n, t, 2)],
      };
    });
  }, { wasm, shapes, rounds });
  console.log(`| product | shape | gemm 0.19 (GFLOP/s) | the page's tiles | fused tiles | tiles / gemm in a round, median (range) | fused / tiles | largest difference from gemm (tiles, fused) |`);
  console.log(`|---|---|---|---|---|---|---|---|`);
  for (const r of rows) {
    console.log(`| ${r.what} | ${r.shape} | ${r.gemm.toFixed(1)} | ${r.tiles.toFixed(1)} | ${r.fused.toFixed(1)} | ${r.tilesRatio} | ${r.fusedRatio} | ${r.difference.map((d) => d.toExponential(1)).join(', ')} |`);
  }
} finally {
  await ctx.close();
}
