// The lab driven like a person, on the CPU path (WebAssembly, Flex) with the tiny stories260K model:
// load by URL, generate, rank, collect pairs, export and re-import JSONL, train DPO and watch the
// charts, see the policy change in Compare, reload and find everything still there.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DIST, serve } from './server.mjs';
import { generate, HASHED, HAVE_TINY, importJsonl, launch, modelReady, shot, sleep, tempDir, TINY, train } from './lib.mjs';

const skip = HAVE_TINY ? false : 'needs ../shared/models/stories260K (see ../shared/README.md)';

test('the lab on the CPU path: generate, rank, data, train DPO, compare, reload', { skip, timeout: 20 * 60_000 }, async (t) => {
  const { server, base, paths, huge } = await serve();
  const { ctx, page, errors, workers, profile } = await launch();
  t.after(async () => { await ctx.close().catch(() => {}); server.close(); });
  const panel = () => page.getByRole('tabpanel');
  const tab = (name) => page.getByRole('tab', { name }).click();

  await t.test('loads the model by URL and says which backend', async () => {
    await page.goto(`${base}/${TINY}&backend=cpu`);
    await modelReady(page, 'stories260K.bin');
    const bar = await page.locator('.model-status').innerText();
    assert.match(bar, /llama2\.c/);
    assert.match(bar, /0\.\d M parameters · 5 layers/);
    // The bar's tooltip says where the load went, part by part, adding up to its "loaded in".
    const where = await page.locator('.model-status').getAttribute('title');
    const parts = [...(where ?? '').matchAll(/(\S+) ([\d.]+) s/g)].map(([, part, s]) => [part, Number(s)]);
    // No warm-up on the CPU before ready: it runs after, while the student types.
    assert.deepEqual(parts.map(([p]) => p), ['download', 'device', 'parse', 'weights', 'judges'], where);
    const total = Number(/loaded in ([\d.]+) s/.exec(bar)[1]);
    const sum = parts.reduce((a, [, s]) => a + s, 0);
    assert.ok(Math.abs(sum - total) <= 0.05 + 0.005 * parts.length, `the parts (${sum.toFixed(2)} s) add up to the load (${total} s)`);
    // The worker's loader starts the model's download before the engine has compiled, and the
    // engine reads that response: the model is fetched once, not twice.
    assert.equal(paths.filter((p) => p === '/test-models/stories260K.bin').length, 1, 'the model downloaded once');
    // The page's own code is a small first download: it links none of the engine (the worker
    // does). With the engine it was 1.4 MB brotli, 2.0 MB gzip; without, about 0.5 and 0.7.
    // Entries with no body are the same file taken again from the preload or the cache.
    const wasm = await page.evaluate(() => performance.getEntriesByType('resource')
      .filter((e) => /\/app-[0-9a-f]+_bg\.wasm$/.test(e.name) && e.decodedBodySize > 0)
      .map((e) => [e.encodedBodySize, e.decodedBodySize]));
    assert.ok(wasm.length >= 1, 'the page downloaded its wasm');
    for (const [sent, size] of wasm) {
      assert.ok(sent > 0 && sent < size, `served compressed: ${sent} of ${size} bytes`);
      assert.ok(sent < 1_000_000, `the page's wasm is ${sent} bytes on the wire; over 1 MB, has the engine crept into the page?`);
    }
    // On the CPU, where the page is cross-origin isolated (the test server makes it so), the page
    // starts the engine's threaded CPU build, which has no WebGPU code, and a worker per core.
    const threads = Math.min(await page.evaluate(() => navigator.hardwareConcurrency), 16);
    assert.deepEqual(workers, ['/worker_mt_loader.js', ...Array(threads).fill('/worker_mt_thread.js')], 'the CPU path starts the CPU worker');
    const badge = await page.getByRole('status', { name: 'Compute backend' }).innerText();
    // Chromium has relaxed SIMD: the products run the fused kernel (www/fused.js).
    assert.match(badge, new RegExp(`^CPU \\(Flex, WebAssembly, (${threads} threads|one thread), fused multiply-add\\): chosen on the page`), badge);
  });

  await t.test('a host that serves only gzip sends the precompressed copies, and the page runs', async () => {
    // dist's .gz copies of the page's files are zopfli's (scripts/web-dist.mjs): plain gzip, which
    // the browser must read as it reads zlib's.
    const gz = await serve({ encodings: ['gzip'] });
    const other = await ctx.newPage();
    try {
      await other.goto(`${gz.base}/${TINY}&backend=cpu`);
      await modelReady(other, 'stories260K.bin');
      assert.ok(await other.getByRole('tab', { name: 'Lessons' }).isVisible(), 'the page drew its tabs');
      const [[url, sent, size]] = await other.evaluate(() => performance.getEntriesByType('resource')
        .filter((e) => /\/app-[0-9a-f]+_bg\.wasm$/.test(e.name) && e.decodedBodySize > 0)
        .map((e) => [e.name, e.encodedBodySize, e.decodedBodySize]));
      const file = join(DIST, new URL(url).pathname);
      assert.equal(size, statSync(file).size, 'the wasm decoded to its own size');
      assert.equal(sent, statSync(`${file}.gz`).size, 'the wasm came as dist\'s .gz copy');
    } finally {
      await other.close();
      gz.server.close();
    }
  });

  await t.test('greedy generation from BOS tells the known story', async () => {
    const p = panel();
    await generate(page, { prompt: '', samples: 1, temperature: 0, tokens: 40 });
    await p.getByRole('article').filter({ hasText: 'stop' }).or(p.getByRole('article').filter({ hasText: 'length' })).first().waitFor({ timeout: 120_000 });
    const text = await p.getByRole('article').first().innerText();
    assert.match(text, /Once upon a time, there was a little girl named Lily\. She loved to play outside/);
    assert.match(await p.locator('[aria-live=polite].muted').first().innerText(), /first token after [\d.]+ s, [\d.]+ tokens\/s/);
    await shot(page, 'generate');
  });

  await t.test('a card focused while the answers are written keeps the focus', async () => {
    // A card stays in the page while its answer is written and again when the judges' scores
    // come; a student who took it with the keyboard keeps it through both.
    const p = panel();
    // Focused the moment the card shows it is being written, before the worker's first token
    // (the tiny model writes 400 tokens faster than a test can click).
    await page.evaluate(() => {
      self.focusedWhile = null;
      const watch = new MutationObserver(() => {
        const card = document.getElementById('card-0');
        if (!card || !/writing/.test(card.querySelector('header')?.textContent ?? '')) return;
        watch.disconnect();
        card.focus();
        self.focusedWhile = card.querySelector('.sample-text').textContent;
      });
      watch.observe(document.body, { childList: true, subtree: true, characterData: true });
    });
    await generate(page, { prompt: '', samples: 2, temperature: 0, tokens: 400 });
    await page.waitForFunction(() => self.focusedWhile !== null);
    assert.equal(await page.evaluate(() => self.focusedWhile), '…', 'focused before sample 1 had a token');
    const first = p.locator('#card-0');
    await first.getByText(/judges [+-]/).waitFor({ timeout: 120_000 });
    assert.equal(await page.evaluate(() => document.activeElement?.id), 'card-0');
  });

  let pairsBefore;
  await t.test('ranking with the keyboard makes preference pairs', async () => {
    const p = panel();
    await generate(page, { prompt: 'Once upon a time', samples: 3, temperature: 1, tokens: 20 });
    const save = p.getByRole('button', { name: 'Save ranking' });
    await page.waitForFunction(() => [...document.querySelectorAll('button')].some((b) => b.textContent === 'Save ranking' && !b.disabled), null, { timeout: 120_000 });
    const first = p.getByRole('article').first();
    assert.match(await first.getAttribute('aria-label'), /^Sample 1, ranked 1 of 3/);
    // Move sample 1 down with the arrow key, then sample 3 to the top with the number key.
    // A key press moves the samples between the cards' places: wait for the new order before
    // reading it.
    const ranked = (label) => p.locator(`article[aria-label^="${label}"]`).waitFor({ timeout: 10_000 });
    await first.focus();
    await page.keyboard.press('ArrowDown');
    await ranked('Sample 1, ranked 2 of 3');
    // The focus follows the moved sample to its new place a turn later: wait for that, or it
    // could take the focus from the card focused next, and the key would move the wrong card.
    await page.waitForFunction(() => document.activeElement?.id === 'card-0', null, { timeout: 10_000 });
    assert.match(await p.getByRole('article').nth(1).getAttribute('aria-label'), /^Sample 1, ranked 2 of 3/);
    await p.locator('#card-2').focus();
    await page.keyboard.press('1');
    await ranked('Sample 3, ranked 1 of 3');
    assert.match(await p.getByRole('article').first().getAttribute('aria-label'), /^Sample 3, ranked 1 of 3/);
    // And drag the last card to the top.
    await p.getByRole('article').nth(2).dragTo(p.getByRole('article').first());
    const order = await p.getByRole('article').evaluateAll((els) => els.map((e) => e.getAttribute('aria-label').split(',')[0]));
    assert.equal(order.length, 3);
    assert.equal(order[0], 'Sample 1', `drag put sample 1 on top: ${order}`);
    const texts = await p.locator('.sample-text').allInnerTexts();
    await save.click();
    await p.getByText(/Added \d preference pairs/).waitFor();
    await shot(page, 'rank');
    await tab('Data');
    const rows = page.getByRole('table', { name: 'Preference pairs' }).locator('tbody tr');
    pairsBefore = await rows.count();
    assert.ok(pairsBefore >= 1 && pairsBefore <= 3, `${pairsBefore} pairs`);
    // The best-ranked text is chosen in the first pair.
    assert.equal((await rows.first().locator('td.chosen').innerText()).trim(), texts[0].trim());
    assert.equal((await rows.first().locator('td').nth(1).innerText()).trim(), 'Once upon a time');
  });

  await t.test('exports pairs as TRL JSONL and re-imports them, reporting bad lines', async () => {
    const p = panel();
    const [download] = await Promise.all([page.waitForEvent('download'), p.getByRole('button', { name: 'Export pairs (JSONL)' }).click()]);
    assert.equal(download.suggestedFilename(), 'preferences.jsonl');
    const lines = readFileSync(await download.path(), 'utf8').trim().split('\n');
    assert.equal(lines.length, pairsBefore);
    for (const l of lines) assert.deepEqual(Object.keys(JSON.parse(l)).sort(), ['chosen', 'prompt', 'rejected']);
    await importJsonl(page, [lines[0], '{"prompt": "x", "chosen": 3}', 'not json', { prompt: 'Lily', chosen: 'a happy end', rejected: 'a sad end' }]);
    const note = await p.getByText(/Imported 2 preference pairs/).innerText();
    assert.match(note, /Skipped 2 bad line\(s\): line 2: .*; line 3: /);
    assert.equal(await page.getByRole('table', { name: 'Preference pairs' }).locator('tbody tr').count(), pairsBefore + 2);
    // Edit a row and delete another.
    const rows = page.getByRole('table', { name: 'Preference pairs' }).locator('tbody tr');
    await p.getByRole('button', { name: `Edit pair ${pairsBefore + 2}` }).click();
    await p.getByLabel(`Chosen of pair ${pairsBefore + 2}`).fill('a very happy end');
    await p.getByRole('button', { name: 'Save', exact: true }).click();
    assert.equal((await rows.nth(pairsBefore + 1).locator('td.chosen').innerText()).trim(), 'a very happy end');
    await p.getByRole('button', { name: `Delete pair ${pairsBefore + 1}` }).click();
    assert.equal(await rows.count(), pairsBefore + 1);
    await shot(page, 'data');
  });

  let firstLoss, lastLoss;
  await t.test('trains DPO with LoRA and the charts move', async () => {
    const { status, cell } = await train(page, { Steps: 6, 'Learning rate': 0.01 });
    const p = panel();
    assert.match(status, /^finished step 6 of 6/);
    const points = await p.locator('svg[data-metric=loss] polyline:not([stroke-dasharray])').getAttribute('points');
    assert.equal(points.trim().split(' ').length, 6, points);
    // The held-out pairs are scored at step 5 and after the last step: a dashed line of two points.
    const held = await p.locator('svg[data-metric=loss] polyline[stroke-dasharray]').getAttribute('points');
    assert.equal(held.trim().split(' ').length, 2, held);
    assert.match(await p.getByLabel('Held-out metrics').innerText(), /^Held-out \(step 6\): .*margins -?[\d.]+/);
    for (const m of ['loss', 'rewards', 'margins', 'accuracy']) assert.equal(await p.locator(`svg[data-metric=${m}]`).count(), 1, m);
    [firstLoss, lastLoss] = cell.split('→').map(Number);
    assert.ok(Math.abs(firstLoss - Math.LN2) < 1e-3, `DPO starts at ln 2: ${cell}`);
    assert.ok(lastLoss < firstLoss, `loss went down: ${cell}`);
    const margins = await p.locator('svg[data-metric=margins]').locator('..').locator('figcaption').innerText();
    assert.ok(Number(margins.match(/rewards\/margins: (-?[\d.]+)/)[1]) > 0, margins);
    assert.match(await p.getByText(/^Policy: /).first().innerText(), /LoRA r=8 alpha=16 on q_proj,v_proj after DPO \(6 steps\)/);
    // The last step's pairs as points on the loss curve: each dot sits on the drawn curve, and
    // their mean loss is the step's loss.
    const curve = p.locator('svg[data-metric="loss curve"]');
    const summary = await curve.getAttribute('aria-label');
    const [, n, meanLoss] = summary.match(/^step 6: (\d+) pairs, \d+ with the rejected answer ahead, mean loss ([\d.]+)$/);
    assert.ok(Number(n) >= 1 && await curve.locator('circle.pair').count() === Number(n), summary);
    assert.ok(Math.abs(Number(meanLoss) - lastLoss) < 2e-3, `${summary} vs last loss ${lastLoss}`);
    const line = (await curve.locator('polyline').getAttribute('points')).trim().split(' ').map((q) => q.split(',').map(Number));
    for (const dot of await curve.locator('circle.pair').all()) {
      const [cx, cy] = [Number(await dot.getAttribute('cx')), Number(await dot.getAttribute('cy'))];
      const i = line.findIndex(([x]) => x >= cx);
      const [[xa, ya], [xb, yb]] = [line[Math.max(i - 1, 0)], line[Math.max(i, 1)]];
      const onCurve = ya + (yb - ya) * (cx - xa) / Math.max(xb - xa, 1e-9);
      assert.ok(Math.abs(onCurve - cy) < 2, `dot (${cx}, ${cy}) is off the curve (${onCurve})`);
    }
    await shot(page, 'train');
  });

  await t.test('compare shows reference and policy side by side and a log-prob heatmap', async () => {
    await tab('Compare');
    const p = panel();
    await p.getByLabel('Prompt (empty = the Generate tab\'s)').fill('Once upon a time');
    await p.getByRole('button', { name: 'Compare', exact: true }).click();
    // Both answers are in once both carry their judge scores.
    await p.getByRole('article', { name: 'Reference' }).locator('.score').filter({ hasText: 'judges' }).waitFor({ timeout: 120_000 });
    await p.getByRole('article', { name: 'Policy' }).locator('.score').filter({ hasText: 'judges' }).waitFor({ timeout: 120_000 });
    const ref = await p.getByRole('article', { name: 'Reference' }).locator('.sample-text').innerText();
    const pol = await p.getByRole('article', { name: 'Policy' }).locator('.sample-text').innerText();
    assert.ok(ref.length > 0 && pol.length > 0);
    // Again: the reference is the loaded model still, so its answer is the one it wrote before,
    // said so, and the policy's is written anew (the same, for the same seed).
    await p.getByRole('button', { name: 'Compare', exact: true }).click();
    await p.getByRole('article', { name: 'Reference' }).getByText(/^the same answers as before/).waitFor({ timeout: 120_000 });
    await p.getByRole('article', { name: 'Policy' }).locator('.score').filter({ hasText: 'judges' }).waitFor({ timeout: 120_000 });
    assert.match(await p.getByRole('article', { name: 'Policy' }).locator('header').innerText(), /first token after/);
    assert.equal(await p.getByRole('article', { name: 'Reference' }).locator('.sample-text').innerText(), ref);
    assert.equal(await p.getByRole('article', { name: 'Policy' }).locator('.sample-text').innerText(), pol);
    await p.getByLabel('Text to inspect (as the answer to the prompt)').fill(' there was a little girl named Lily.');
    await p.getByRole('button', { name: 'Show log-prob change' }).click();
    const cells = p.getByRole('group', { name: 'Token heatmap' }).locator('.tok');
    await cells.first().waitFor({ state: 'attached', timeout: 60_000 });
    // One cell per token; together they spell the text (a lone SentencePiece "▁" shows as "·").
    assert.equal((await cells.allInnerTexts()).join('').replace(/^·/, '').trim(), 'there was a little girl named Lily.');
    assert.ok((await cells.count()) >= 5);
    const titles = await cells.evaluateAll((els) => els.map((e) => e.getAttribute('title')));
    const changes = titles.map((s) => Number(s.match(/change ([+-][\d.]+)/)[1]));
    assert.ok(changes.some((c) => Math.abs(c) > 1e-3), `the adapter changed some log-prob: ${changes}`);
    await shot(page, 'compare');
  });

  await t.test('after a reload the data, the run and the adapter are still there', async () => {
    await page.reload();
    await modelReady(page, 'stories260K.bin');
    assert.match(await page.locator('.model-status').innerText(), /from the browser cache/);
    await page.getByText('Restored your last adapter for this model.').waitFor({ timeout: 30_000 });
    await tab('Data');
    assert.equal(await page.getByRole('table', { name: 'Preference pairs' }).locator('tbody tr').count(), pairsBefore + 1);
    await tab('Train');
    assert.equal(await page.getByRole('table', { name: 'Runs' }).locator('tbody tr').count(), 1);
    await page.getByRole('tabpanel').getByText(/^Policy: LoRA r=8 .* after the adapter kept from your last session/).waitFor();
    await shot(page, 'reload');
  });

  await t.test('a file that is not a model gets a clear error and the data stays', async () => {
    const file = join(tempDir('alab-'), 'notes.bin');
    writeFileSync(file, 'these are my lecture notes, not a model'.repeat(10));
    await page.getByText('Change model').click();
    await page.getByLabel('Open model file').setInputFiles(file);
    const alert = page.getByRole('alert');
    await alert.waitFor({ timeout: 30_000 });
    assert.match(await alert.innerText(), /That did not work/);
    await tab('Data');
    assert.equal(await page.getByRole('table', { name: 'Preference pairs' }).locator('tbody tr').count(), pairsBefore + 1);
    await shot(page, 'bad-model');
  });

  await t.test('settings saved by an older version keep what still fits', async () => {
    // The previous page kept the sampling knobs at the top level and the train form as strings.
    await page.evaluate(() => new Promise((ok, fail) => {
      const open = indexedDB.open('alignlab', 1);
      open.onerror = () => fail(open.error);
      open.onsuccess = () => {
        const tx = open.result.transaction('kv', 'readwrite');
        tx.objectStore('kv').put({ system: '', prompt: 'An old prompt', chat: true, num_samples: 3, temperature: 0.5,
          judges: [['sentiment', 1, true]], train: { method: 'dpo', loss_type: 'sigmoid', lora: true, r: 8, targets: ['q_proj'] } }, 'settings');
        tx.oncomplete = () => { open.result.close(); ok(); };
        tx.onerror = () => fail(tx.error);
      };
    }));
    await page.reload();
    await modelReady(page, 'stories260K.bin');
    await tab('Generate & rank');
    assert.equal(await panel().getByLabel('Prompt', { exact: true }).inputValue(), 'An old prompt');
    assert.equal(await page.getByText('Saving in this browser failed').count(), 0, 'no storage warning');
    await tab('Train');
    assert.equal(await panel().getByLabel('Method').inputValue(), 'dpo');
  });

  await t.test('a link to a model that is not there says so, and the lessons still open', async () => {
    const other = await ctx.newPage();
    try {
      await other.goto(`${base}/?model=models/no-such-model.gguf&backend=cpu`);
      const alert = other.getByRole('alert').filter({ hasText: 'no-such-model.gguf' });
      await alert.waitFor({ timeout: 60_000 });
      assert.match(await alert.innerText(), /HTTP 404/);
      await other.locator('.lesson-list li').first().waitFor({ timeout: 10_000 });
      await shot(other, 'missing-model');
    } finally {
      await other.close();
    }
  });

  await t.test('a link to a model bigger than the page can hold is refused before it downloads', async () => {
    const other = await ctx.newPage();
    try {
      await other.goto(`${base}/?model=huge-model.gguf&backend=cpu`);
      const alert = other.getByRole('alert').filter({ hasText: 'huge-model.gguf' });
      await alert.waitFor({ timeout: 60_000 });
      assert.match(await alert.innerText(), /3221 MB, more than the 1074 MB the page can hold/);
      await shot(other, 'huge-model');
      // The page answered from the headers alone (the server stalls after 1 MiB, so waiting for the
      // body would never end) and the worker hung up rather than leave the download open.
      for (let i = 0; i < 50 && !huge.closed; i++) await sleep(100);
      assert.ok(huge.closed, 'the download was cancelled (the server sent 1 MiB, then waited)');
      await other.locator('.lesson-list li').first().waitFor({ timeout: 10_000 });
    } finally {
      await other.close();
    }
  });

  assert.deepEqual(errors.filter((e) => !/Failed to load resource/.test(e)), [], 'no page errors');
  void profile;
});

test('a returning visit takes the app from the browser\'s copy and asks only whether the page changed', { skip, timeout: 5 * 60_000 }, async (t) => {
  // dist/_headers, for hosts that read one: COOP and COEP everywhere, and a year without asking for
  // each file named by its hash (its .br and .gz copies are the same file, negotiated).
  const headers = readFileSync(join(DIST, '_headers'), 'utf8').split('\n');
  const at = headers.indexOf('/*');
  assert.deepEqual(headers.slice(at + 1, at + 3), ['  Cross-Origin-Opener-Policy: same-origin', '  Cross-Origin-Embedder-Policy: require-corp']);
  const hashed = readdirSync(DIST).filter((f) => HASHED.test(f) && !/\.(br|gz)$/.test(f));
  assert.ok(hashed.length >= 10, hashed.join(' '));
  for (const f of hashed) assert.equal(headers[headers.indexOf(`/${f}`) + 1], '  Cache-Control: public, max-age=31536000, immutable', f);
  assert.equal(headers.filter((l) => /immutable/.test(l)).length, hashed.length, 'nothing else is kept without asking');

  // The test server sends what _headers says. Two visits in one profile, the browser closed between.
  const [first, again] = await twoVisits(t, {});
  const engine = first.filter((p) => /^\/worker_mt-[0-9a-f]{16}_bg\.wasm$/.test(p));
  assert.equal(engine.length, 1, `the first visit fetched the threaded engine once: ${first.join(' ')}`);
  // The page is asked after (index.html has no hash; a deploy changes it), and nothing the first
  // visit fetched by hash is: the engine's wasm is the response the browser kept, so Chrome may
  // give V8 the optimized code it kept with it (a response taken again, even a 304, is not).
  assert.ok(again.includes('/'), `the page asked whether index.html changed: ${again.join(' ')}`);
  assert.deepEqual(again.filter((p) => first.includes(p) && HASHED.test(p)), [], 'files named by their hash were not asked for again');
});

test('on a host that has every file asked after, the service worker still takes hashed files from the browser\'s copy', { skip, timeout: 5 * 60_000 }, async (t) => {
  // No _headers rules: each file 'no-cache', as GitHub Pages has it once its ten minutes ran out.
  // The browser would revalidate each file and get a 304, and V8's kept code with it would be lost.
  const [first, again] = await twoVisits(t, { rules: false });
  assert.ok(first.filter((p) => HASHED.test(p)).length >= 8, first.join(' '));
  assert.ok(again.includes('/'), `the page asked whether index.html changed: ${again.join(' ')}`);
  assert.deepEqual(again.filter((p) => HASHED.test(p)), [], 'no file named by its hash was asked for');
});

/** Two visits to the page in one profile, the browser closed between, with the test server made
 * by `options`; the paths each visit asked the server for. */
async function twoVisits(t, options) {
  const { server, base, paths } = await serve(options);
  t.after(() => server.close());
  const profile = tempDir('alignlab-chromium-');
  const asked = [];
  for (let k = 0; k < 2; k++) {
    paths.length = 0;
    const { ctx, page, errors } = await launch({ profile });
    try {
      await page.goto(`${base}/${TINY}&backend=cpu`);
      await modelReady(page, 'stories260K.bin');
      // And the offline copy done (www/offline.js): a browser closed during its downloads keeps
      // them unfinished, and the next visit would fetch them again.
      await page.waitForFunction(() => self.alignlabOfflineCopy, null, { timeout: 60_000 });
      assert.deepEqual(errors, []);
      asked.push([...paths]);
    } finally {
      await ctx.close();
    }
  }
  return asked;
}
