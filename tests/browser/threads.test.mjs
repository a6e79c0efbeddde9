// The CPU path on every core: served cross-origin isolated (COOP and COEP), the page starts the
// engine's threaded build, whose products and training split over a pool of Web Workers; served
// without, the same build on one thread (its memory shared within its own worker only). Both must
// give the same numbers: the same greedy answer and the same DPO losses, on SmolLM2 (the tiny
// model's products are too small to be split).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { DIST, serve } from './server.mjs';
import { distFile, generate, HAVE_TINY, importJsonl, launch, modelReady, restLoaded, shot, TINY, train } from './lib.mjs';

const MODEL = 'SmolLM2-135M-Instruct (Q4_1)';
const skip = existsSync(join(DIST, 'models/SmolLM2-135M-Instruct.Q4_1.gguf')) ? false : 'needs the default model in dist/models (scripts/setup, then scripts/build-web)';
const skipTiny = HAVE_TINY ? false : 'needs ../shared/models/stories260K (see ../shared/README.md)';

/** Opens the page on the default model, then a greedy answer and two DPO steps; what they showed. */
async function session(isolated) {
  const { server, base } = await serve({ isolated });
  // Not isolated: nor made so by the service worker (a reload), so the CPU path runs on one thread.
  const { ctx, page, errors, workers } = await launch({ serviceWorkers: isolated });
  try {
    await page.goto(`${base}/?backend=cpu`);
    await modelReady(page, MODEL, 300_000);
    const badge = await page.getByRole('status', { name: 'Compute backend' }).innerText();
    const cores = await page.evaluate(() => navigator.hardwareConcurrency);
    // A prompt of a few dozen tokens (system prompt and chat template included): its products
    // are big enough to be split, as is the head's on every token.
    const p = page.getByRole('tabpanel');
    await generate(page, { prompt: 'Write a short story about a brave little cat.', samples: 1, temperature: 0, tokens: 24 });
    await p.getByRole('article').filter({ hasText: 'length' }).or(p.getByRole('article').filter({ hasText: 'stop' })).first().waitFor({ timeout: 300_000 });
    const answer = await p.getByRole('article').first().locator('.sample-text').innerText();
    await importJsonl(page, [
      { prompt: 'Tell me about your day.', chosen: 'It was a lovely, sunny day and I met good friends.', rejected: 'It was awful and boring.' },
      { prompt: 'How is the weather?', chosen: 'Warm and bright, a perfect day for a walk.', rejected: 'Cold, grey and miserable.' },
    ]);
    const run = await train(page, { Steps: 2, 'Batch size': 2 }, 900_000);
    // The threaded build trains a toy in the background while idle (V8 then has the training code
    // optimized); its time shows in the model bar's tooltip once it has ended.
    const status = page.locator('.model-status');
    if (isolated) await page.waitForFunction(() => /training warm-up/.test(document.querySelector('.model-status')?.title ?? ''), null, { timeout: 120_000 });
    const loadParts = await status.getAttribute('title');
    await shot(page, isolated ? 'threads' : 'one-thread');
    // Whether the full build's engine needed its second module (the page fetches it too, to keep
    // it for offline use, so the server's log cannot tell).
    return { badge, cores, workers, answer, run, errors, loadParts, rest: await restLoaded(page) };
  } finally {
    await ctx.close();
    server.close();
  }
}

test('the CPU path on every core gives the numbers of one core (SmolLM2)', { skip, timeout: 15 * 60_000 }, async () => {
  const one = await session(false);
  // Not cross-origin isolated: the threaded build still, with no pool (no thread's worker).
  assert.deepEqual(one.workers, ['/worker_mt_loader.js'], 'not cross-origin isolated: the threaded build, on one thread');
  // The fused kernel (www/fused.js) links to the shared memory there too: the same sums on both.
  assert.match(one.badge, /^CPU \(Flex, WebAssembly, one thread, fused multiply-add\): chosen on the page/, one.badge);
  // The full build (and its second module) was not started.
  assert.equal(one.rest, null, 'the full build started');

  const all = await session(true);
  const threads = Math.min(all.cores, 16);
  // (The threaded build is whole: it has no second module to fetch.)
  assert.deepEqual(all.workers, ['/worker_mt_loader.js', ...Array(threads).fill('/worker_mt_thread.js')], 'isolated: the threaded build and one worker per core');
  const said = threads === 1 ? 'one thread' : `${threads} threads`;
  assert.match(all.badge, new RegExp(`^CPU \\(Flex, WebAssembly, ${said}, fused multiply-add\\): chosen on the page`), all.badge);

  assert.ok(one.answer.length > 40, `an answer: ${one.answer}`);
  assert.equal(all.answer, one.answer, 'the same greedy answer on every core as on one');
  assert.match(one.run.status, /^finished step 2 of 2/, one.run.status);
  assert.match(all.run.status, /^finished step 2 of 2/, all.run.status);
  // The first step's loss is ln 2 (policy = reference); the second shows the first update.
  assert.ok(Math.abs(one.run.first - Math.LN2) < 1e-3 && one.run.last < one.run.first, one.run.cell);
  // ... and the same even though the threaded page trained its toy before and after these steps.
  assert.equal(all.run.cell, one.run.cell, 'the same DPO losses on every core as on one');
  assert.match(all.loadParts, /; then, in the background, training warm-up \d+\.\d\d s$/, all.loadParts);
  assert.doesNotMatch(one.loadParts, /training warm-up/, 'one thread: no training warm-up');
  assert.deepEqual([...one.errors, ...all.errors], []);
});

test('a host that sends no COOP/COEP: the first visit reloads once, isolated by the service worker, and runs on every core', { skip: skipTiny, timeout: 5 * 60_000 }, async (t) => {
  const { server, base } = await serve({ isolated: false });
  const { ctx, page, workers } = await launch();
  t.after(async () => { await ctx.close().catch(() => {}); server.close(); });
  const loads = pageLoads(page);
  const visit = async (open) => {
    workers.length = 0;
    loads.length = 0;
    await open();
    await modelReady(page, 'stories260K.bin');
    assert.equal(await page.evaluate(() => crossOriginIsolated), true, 'the service worker added COOP and COEP');
    assert.equal(workers[0], '/worker_mt_loader.js', workers.join(', '));
    assert.ok(!workers.includes('/worker_loader.js'), `the threaded build, and no other engine started before: ${workers.join(', ')}`);
    assert.match(await page.getByRole('status', { name: 'Compute backend' }).innerText(), /^CPU \(Flex, WebAssembly, (\d+ threads|one thread), fused multiply-add\)/);
    return loads.length;
  };
  assert.equal(await visit(() => page.goto(`${base}/${TINY}&backend=cpu`)), 2, 'the first visit loaded the page twice: itself and one reload');
  assert.equal(await visit(() => page.reload()), 1, 'a later visit is isolated from the start');
});

test('where the service worker cannot isolate the page, the first visit reloads at most once and runs on one thread', { skip: skipTiny, timeout: 5 * 60_000 }, async (t) => {
  // A browser without service workers, or one that refuses this page's, starts at once; one whose
  // service worker does not add the headers (here: a host serving another sw.js) reloads once,
  // then goes on as it is.
  const plain = `self.addEventListener('install', () => self.skipWaiting());\nself.addEventListener('activate', (e) => e.waitUntil(self.clients.claim()));\n`;
  const refused = () => { ServiceWorkerContainer.prototype.register = () => Promise.reject(new Error('refused here')); };
  for (const [why, serveOptions, browser, times] of [
    ['no service workers', {}, { serviceWorkers: false }, 1],
    ['a service worker refused', {}, { init: refused }, 1],
    ['a service worker that adds nothing', { override: { '/sw.js': plain } }, {}, 2],
  ]) {
    const { server, base } = await serve({ isolated: false, ...serveOptions });
    const { ctx, page, workers } = await launch(browser);
    const loads = pageLoads(page);
    try {
      if (browser.init) await ctx.addInitScript(browser.init);
      await page.goto(`${base}/${TINY}&backend=cpu`);
      await modelReady(page, 'stories260K.bin');
      assert.equal(await page.evaluate(() => crossOriginIsolated), false, why);
      assert.deepEqual(workers, ['/worker_mt_loader.js'], `${why}: the threaded build, on one thread`);
      assert.equal(loads.length, times, `${why}: the page's loads`);
    } finally {
      await ctx.close();
      server.close();
    }
  }
});

test('a browser that refuses the threaded build its shared memory runs the full build on one thread', { skip: skipTiny, timeout: 5 * 60_000 }, async () => {
  // The threaded build fails before it is ready, and the page starts the full build in its place.
  const { server, base } = await serve({ isolated: false, override: refusingSharedMemory() });
  const { ctx, page, workers } = await launch({ serviceWorkers: false });
  try {
    await page.goto(`${base}/${TINY}&backend=cpu`);
    await modelReady(page, 'stories260K.bin');
    assert.deepEqual(workers, ['/worker_mt_loader.js', '/worker_loader.js'], 'the threaded build, then the full one');
    const badge = await page.getByRole('status', { name: 'Compute backend' }).innerText();
    assert.match(badge, /^CPU \(Flex, WebAssembly(, fused multiply-add)?\): chosen on the page/, badge);
    await generate(page, { prompt: 'Once upon a time', samples: 1, temperature: 0, tokens: 8 });
    await page.getByRole('tabpanel').getByRole('article').first().locator('.sample-text').filter({ hasText: /\S/ }).waitFor({ timeout: 60_000 });
  } finally {
    await ctx.close();
    server.close();
  }
});

/** The threaded build's loader served with a WebAssembly.Memory that refuses to be shared, as a
 * browser might where the page is not cross-origin isolated (a `serve` override). */
function refusingSharedMemory() {
  const loader = distFile('worker_mt_loader.js');
  const refuse = `WebAssembly.Memory = class extends WebAssembly.Memory {
  constructor(d) { if (d?.shared) throw new TypeError('shared memory refused here'); super(d); }
};\n`;
  return { [loader]: refuse + readFileSync(join(DIST, loader)) };
}

/** The page's loads from now on (its main frame's navigations: a reload counts), as a list. */
function pageLoads(page) {
  const loads = [];
  page.on('framenavigated', (f) => { if (f === page.mainFrame()) loads.push(f.url()); });
  return loads;
}

/** Opens the page on the tiny model (`backend=cpu`) from a host that answers 404 for `missing`, as
 * after a deploy (a new build's files have other names); the banner the page shows for it. */
async function afterDeploy(t, { missing, isolated, override }) {
  const { server, base } = await serve({ isolated, missing, override });
  const { ctx, page } = await launch({ serviceWorkers: isolated });
  t.after(async () => { await ctx.close().catch(() => {}); server.close(); });
  await page.goto(`${base}/${TINY}&backend=cpu`);
  const banner = page.getByRole('alert').filter({ hasText: 'The app was updated' });
  await banner.waitFor({ timeout: 120_000 });
  // Restarting the same engine would fail the same way: the page offers only a reload.
  assert.equal(await banner.getByRole('button', { name: 'Continue on CPU' }).count(), 0);
  await banner.getByRole('button', { name: 'Reload the page' }).waitFor();
  return { page, banner };
}

test("a deploy took the engine's rest away since the page opened: the page says to reload", { skip: skipTiny, timeout: 5 * 60_000 }, async (t) => {
  // The full build on one thread (where the threaded one is refused its memory) needs its second
  // module on the CPU.
  const { page, banner } = await afterDeploy(t, { missing: [distFile('worker_rest_bg.wasm')], isolated: false, override: refusingSharedMemory() });
  const said = await banner.innerText();
  assert.match(said, /is gone: the app was updated since this page opened; reload the page/);
  assert.doesNotMatch(said, /Uncaught|crashed: Error:/, "the browser's prefix is left in the engine's words");
  // Nothing says it is still starting or loading.
  assert.match(await page.getByRole('status', { name: 'Compute backend' }).innerText(), /^The engine stopped/);
  assert.equal(await page.getByText(/^Loading: /).count(), 0);
  await shot(page, 'rest-gone');
});

test('a deploy took the engine itself away before it started: the page says to reload', { skip: skipTiny, timeout: 5 * 60_000 }, async (t) => {
  // Both builds' loaders gone, as when "Continue on CPU" starts an engine after a deploy: the
  // threaded build fails, the page falls back to the full one, which fails too.
  const { banner } = await afterDeploy(t, { missing: [distFile('worker_mt_loader.js'), distFile('worker_loader.js')], isolated: true });
  assert.match(await banner.innerText(), /the engine's files \(\.\/worker-[0-9a-f]{16}_loader\.js\) are gone: the app was updated since this page opened/);
});
