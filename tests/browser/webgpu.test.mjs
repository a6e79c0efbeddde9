// The WebGPU path: headless Chromium with SwiftShader gives a real (software) WebGPU adapter.
// SwiftShader is a CPU emulation, so this proves the path works on the tiny model; speed needs a GPU.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { serve } from './server.mjs';
import { copyFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { HAVE_TINY, TINY, generate, importJsonl, launch, modelReady, restLoaded, shot, sleep, tempDir, train } from './lib.mjs';

const skip = HAVE_TINY ? false : 'needs ../shared/models/stories260K (see ../shared/README.md)';

test('without a WebGPU adapter the page falls back to the CPU and says why', { skip, timeout: 5 * 60_000 }, async (t) => {
  const { server, base } = await serve();
  const { ctx, page } = await launch({ webgpu: false });
  t.after(async () => { await ctx.close().catch(() => {}); server.close(); });
  await page.goto(`${base}/${TINY}&backend=webgpu`);
  await modelReady(page, 'stories260K.bin');
  const badge = await page.getByRole('status', { name: 'Compute backend' }).innerText();
  assert.match(badge, /^CPU \(Flex, WebAssembly, fused multiply-add\): .*WebGPU/, badge);
  await shot(page, 'fallback');
});

test('the WebGPU path (SwiftShader): generate and train DPO on the GPU backend, hand off to TRL with no network', { skip, timeout: 15 * 60_000 }, async (t) => {
  const { server, base, paths } = await serve();
  const { ctx, page, errors, workers } = await launch({ webgpu: true });
  t.after(async () => { await ctx.close().catch(() => {}); server.close(); });
  await page.goto(`${base}/${TINY}&backend=webgpu`);
  await modelReady(page, 'stories260K.bin', 300_000);
  const badge = await page.getByRole('status', { name: 'Compute backend' }).innerText();
  assert.match(badge, /^WebGPU: .*\(software adapter, slow\) · decoding in f(16|32)/, badge);
  // On a GPU the warm-up compiles the kernels before the model is called ready (on the CPU it
  // runs after).
  const where = await page.locator('.model-status').getAttribute('title');
  assert.match(where ?? '', /judges [\d.]+ s · warm-up [\d.]+ s$/, where);
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
  // needed the rest. (The page fetches the rest itself once the model is ready, to keep it.)
  // Its files are named by their hash (scripts/web-dist.mjs): an open page never mixes them with
  // another deploy's, its second module least of all.
  const files = await page.evaluate(() => self.alignlabWorkers.full);
  assert.equal(files.length, 4, files.join(' '));
  for (const f of files) assert.match(f, /^\.\/worker-[0-9a-f]{16}(_loader\.js|\.js|_bg\.wasm|_rest_bg\.wasm)$/);
  const rest = files.find((f) => f.endsWith('_rest_bg.wasm'));
  assert.ok(paths.includes(files.find((f) => f.endsWith('_bg.wasm') && f !== rest).slice(1)), paths.join(' '));
  assert.equal(await restLoaded(page), false, 'a WebGPU session needed worker_rest_bg.wasm: run scripts/split-profile.mjs, then scripts/build-web');

  // A returning visit needs no more of it: the model read from the engine's cache, the trained
  // adapter given back to a fresh engine (both in the profile).
  await page.waitForFunction(() => navigator.serviceWorker?.controller != null, null, { timeout: 30_000 });
  await page.reload();
  await modelReady(page, 'stories260K.bin', 300_000);
  await page.getByText('Restored your last adapter for this model.').waitFor();
  await page.getByRole('tab', { name: 'Train' }).click();
  await page.getByRole('tabpanel').getByText(/^Policy: .*the adapter kept from your last session/).waitFor({ timeout: 120_000 });
  assert.equal(await restLoaded(page), false, 'a returning WebGPU visit needed worker_rest_bg.wasm: run scripts/split-profile.mjs, then scripts/build-web');

  // With no network the rest still comes when needed: the page keeps it after a visit, and the
  // service worker serves it to the engine that started under it. The TRL hand-off's zip writer
  // is in the rest.
  const kept = () => page.evaluate(async (f) => Boolean(await (await caches.open('alignlab-app-v1')).match(f)), rest);
  for (let i = 0; i < 120 && !(await kept()); i++) await sleep(500);
  assert.ok(await kept(), 'the page did not keep worker_rest_bg.wasm for a visit with no network');
  await ctx.setOffline(true);
  try {
    const [download] = await Promise.all([page.waitForEvent('download', { timeout: 120_000 }),
      page.getByRole('tabpanel').getByRole('button', { name: 'Take it further in TRL' }).click()]);
    assert.equal(download.suggestedFilename(), 'alignlab-dpo-trl.zip');
    await page.getByText(/TRL hand-off downloaded/).waitFor();
    assert.equal(await restLoaded(page), true, 'the hand-off ran without the rest of the engine?');
    // The adapter trained above is in the zip (two pairs hold none out, so there is no
    // eval.jsonl).
    const zip = join(tempDir('alab-'), 'handoff.zip');
    copyFileSync(await download.path(), zip);
    const names = execFileSync('python3', ['-c', 'import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); assert z.testzip() is None; print(" ".join(sorted(z.namelist())))', zip]).toString().trim();
    assert.equal(names, 'README.md adapter/adapter_config.json adapter/adapter_model.safetensors train.jsonl train_trl.py');
    await shot(page, 'webgpu-offline-handoff');
  } finally {
    await ctx.setOffline(false);
  }
  assert.deepEqual(errors.filter((e) => !/Failed to load resource/.test(e)), []);
});
