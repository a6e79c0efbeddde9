// The products' fused kernel (www/fused.js) in Chromium: the module it builds against the sums in
// f64, on the engine's two kinds of memory, and how it takes an engine's table slot, or leaves it
// where the browser has no relaxed SIMD. (The engine running on it end to end: threads.test.mjs
// and app.test.mjs read the badge, and every CPU test runs its products.)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { launch } from './lib.mjs';
import { serve } from './server.mjs';

const FUSED = readFileSync(join(import.meta.dirname, '../../www/fused.js'), 'utf8');

test('the fused kernel gives each tile its sums, and takes the engine\'s slot only where it validates', { timeout: 120_000 }, async (t) => {
  // Served cross-origin isolated, so the page may make the threaded build's shared memory.
  const { server, base } = await serve();
  const { ctx, page } = await launch();
  t.after(async () => { await ctx.close(); server.close(); });
  await page.goto(`${base}/labs/index.json`);
  await page.addScriptTag({ content: FUSED });
  assert.equal(await page.evaluate(() => crossOriginIsolated), true);

  const sums = await page.evaluate(() => {
    const out = [];
    for (const shared of [false, true]) {
      const memory = new WebAssembly.Memory(shared ? { initial: 4, maximum: 65536, shared } : { initial: 4 });
      const bytes = alignlabTileModule(shared);
      const tiles = new WebAssembly.Instance(new WebAssembly.Module(bytes), { m: { memory } }).exports.tiles;
      const f = new Float32Array(memory.buffer);
      let x = 7;
      const next = () => { x = (x * 1103515245 + 12345) % 2147483648; return x / 1073741824 - 1; };
      for (const [kc, n] of [[0, 1], [1, 1], [5, 3], [256, 11]]) {
        // a: n panels of kc runs of 6 floats from byte 64 (not 16-aligned: packed panels need not
        // be); b: kc runs of 8 at byte 131072; the sums (6 rows of 8 a tile) from byte 163840,
        // filled with NaN first.
        const [a, b, c] = [16, 32768, 40960];
        for (let i = 0; i < n * kc * 6; i++) f[a + i] = next();
        for (let i = 0; i < kc * 8; i++) f[b + i] = next();
        f.fill(NaN, c, c + 48 * n + 48);
        tiles(4 * a, 4 * b, kc, 4 * c, n);
        let worst = 0;
        for (let t = 0; t < n; t++) {
          for (let r = 0; r < 6; r++) {
            for (let j = 0; j < 8; j++) {
              let want = 0;
              for (let p = 0; p < kc; p++) want += f[a + t * kc * 6 + 6 * p + r] * f[b + 8 * p + j];
              const got = f[c + 48 * t + 8 * r + j];
              worst = Math.max(worst, Number.isNaN(got) ? Infinity : Math.abs(got - want) / Math.max(1, Math.abs(want)));
            }
          }
        }
        // Nothing past the n tiles' sums.
        if (!f.subarray(c + 48 * n, c + 48 * n + 48).every(Number.isNaN)) worst = Infinity;
        out.push({ shared, kc, n, worst, valid: WebAssembly.validate(bytes) });
      }
    }
    return out;
  });
  for (const s of sums) {
    assert.ok(s.valid, 'Chromium has relaxed SIMD');
    assert.ok(s.worst < 1e-5, `shared ${s.shared}, ${s.n} tiles ${s.kc} deep: off by ${s.worst}`);
  }

  // An engine's exports, as alignlabFuse reads them: its memory, table, slot and switch.
  const fuse = await page.evaluate(() => {
    const engine = () => {
      const e = { memory: new WebAssembly.Memory({ initial: 1 }), __indirect_function_table: new WebAssembly.Table({ initial: 4, element: 'anyfunc' }), on: false };
      e.alignlab_tile_slot = () => 3;
      e.alignlab_tile_fused = () => { e.on = true; };
      return e;
    };
    const said = (e, took) => ({ took, on: e.on, slot: typeof e.__indirect_function_table.get(3), others: [0, 1, 2].map((i) => e.__indirect_function_table.get(i)) });
    const main = engine(), thread = engine(), without = engine();
    const results = [said(main, alignlabFuse(main, true)), said(thread, alignlabFuse(thread, false))];
    // A browser without relaxed SIMD: the module does not validate, and nothing changes.
    const validate = WebAssembly.validate;
    WebAssembly.validate = () => false;
    try { results.push(said(without, alignlabFuse(without, true))); } finally { WebAssembly.validate = validate; }
    return results;
  });
  assert.deepEqual(fuse[0], { took: true, on: true, slot: 'function', others: [null, null, null] }, 'the engine: slot filled, turned on');
  assert.deepEqual(fuse[1], { took: true, on: false, slot: 'function', others: [null, null, null] }, 'a thread: slot filled, the switch left to the engine');
  assert.deepEqual(fuse[2], { took: false, on: false, slot: 'object', others: [null, null, null] }, 'no relaxed SIMD: the plain tiles');
});
