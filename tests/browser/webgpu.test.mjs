// The WebGPU path: headless Chromium with SwiftShader gives a real (software) WebGPU adapter.
// SwiftShader is a CPU emulation, so this proves the path works on the tiny model; speed needs a GPU.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { serve } from './server.mjs';
import { HAVE_TINY, TINY, generate, importJsonl, launch, modelReady, shot, train } from './lib.mjs';

const skip = HAVE_TINY ? false : 'needs ../shared/models/stories260K (see ../shared/README.md)';

test('without a WebGPU adapter the page falls back to the CPU and says why', { skip, timeout: 5 * 60_000 }, async (t) => {
  const { server, base } = await serve();
  const { ctx, page } = await launch({ webgpu: false });
  t.after(async () => { await ctx.close().catch(() => {}); server.close(); });
  await page.goto(`${base}/${TINY}&backend=webgpu`);
  await modelReady(page, 'stories260K.bin');
  const badge = await page.getByRole('status', { name: 'Compute backend' }).innerText();
  assert.match(badge, /^CPU \(Flex, WebAssembly\): .*WebGPU/, badge);
  await shot(page, 'fallback');
});

test('the WebGPU path (SwiftShader): generate and train DPO on the GPU backend', { skip, timeout: 15 * 60_000 }, async (t) => {
  const { server, base, paths } = await serve();
  const { ctx, page, errors, workers } = await launch({ webgpu: true });
  t.after(async () => { await ctx.close().catch(() => {}); server.close(); });
  await page.goto(`${base}/${TINY}&backend=webgpu`);
  await modelReady(page, 'stories260K.bin', 300_000);
  const badge = await page.getByRole('status', { name: 'Compute backend' }).innerText();
  assert.match(badge, /^WebGPU: .*\(software adapter, slow\) · decoding in f(16|32)/, badge);
  // Answers are decoded in f16 exactly where the adapter computes in f16 (SwiftShader does not
  // today, so the page says why it decodes in f32).
  const f16 = await page.evaluate(async () => (await navigator.gpu.requestAdapter()).features.has('shader-f16'));
  assert.match(badge, f16 ? / · decoding in f16$/ : / · decoding in f32 \(the adapter has no shader-f16\)$/, badge);
  // Where the browser has WebGPU the page starts the engine's build that has it.
  assert.deepEqual(workers, ['/worker_loader.js']);

  const p = page.getByRole('tabpanel');
  await generate(page, { prompt: '', samples: 1, temperature: 0, tokens: 12 });
  await page.waitForFunction(() => /first token after/.test(document.body.innerText), null, { timeout: 300_000 });
  assert.match(await p.getByRole('article').first().innerText(), /Once upon a time, there was a little girl/);
  await shot(page, 'webgpu-generate');

  await importJsonl(page, [
    { prompt: 'Once upon a time', chosen: ' there was a happy dog.', rejected: ' there was a sad cat.' },
    { prompt: 'One day', chosen: ' the sun was warm and kind.', rejected: ' the rain was cold and mean.' },
  ]);
  await page.getByText(/Imported 2 preference pairs/).waitFor();
  const { status, first, last, cell } = await train(page, { Steps: 3, 'Learning rate': 0.01 }, 600_000);
  assert.match(status, /^finished step 3 of 3/);
  assert.ok(Math.abs(first - Math.LN2) < 1e-3 && last < first, cell);
  await shot(page, 'webgpu-train');
  // The worker's first download held all a WebGPU session ran (tools/wasm-split): it never
  // fetched the rest.
  assert.ok(paths.includes('/worker_bg.wasm'), paths.join(' '));
  assert.ok(!paths.includes('/worker_rest_bg.wasm'), 'a WebGPU session needed worker_rest_bg.wasm: run scripts/split-profile.mjs, then scripts/build-web');
  assert.deepEqual(errors.filter((e) => !/Failed to load resource/.test(e)), []);
});
