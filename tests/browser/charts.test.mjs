// A long run: the page keeps answering while it charts hundreds of steps, each chart stays the
// same size in the document however long the run, and its cursor reads one step's numbers.
// (Once every chart drew an element per step, rebuilt at every step: by step 300 a click took
// seconds, and by step 900 two minutes.)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HAVE_TINY, importJsonl, openTiny, setField, shot } from './lib.mjs';

const skip = HAVE_TINY ? false : 'needs ../shared/models/stories260K (see ../shared/README.md)';

/** How long the page's main thread takes to run a task queued now, in ms. */
const lag = (page) => page.evaluate(() => new Promise((ok) => { const t = performance.now(); setTimeout(() => ok(performance.now() - t), 0); }));

/** The step the status line reports. */
const step = async (page) => Number((await page.getByRole('status', { name: 'Training status' }).innerText()).match(/step (\d+)/)?.[1] ?? 0);

/** The loss chart: its number of elements and the points of its training line. */
const lossChart = (page) => page.locator('svg[data-metric="loss"]').evaluate((svg) => ({
  nodes: svg.querySelectorAll('*').length,
  points: svg.querySelector('polyline').getAttribute('points').trim().split(/\s+/).length,
}));

test('a long run: the page keeps answering and the charts stay light', { skip, timeout: 5 * 60_000 }, async (t) => {
  const { page, panel, tab } = await openTiny(t);
  const rows = ['Lily', 'Tom'].map((who) => ({ prompt: `Once upon a time, ${who} went to the park`, chosen: ' and she was very happy.', rejected: ' and it was sad and dark.' }));
  await importJsonl(page, rows);
  await tab('Train');
  const p = panel();
  await setField(p, 'Steps', 2000);
  await p.getByRole('button', { name: 'Train', exact: true }).click();

  // Past 650 steps the lines are thinned (600 points at most); the page must answer throughout.
  await page.waitForFunction(() => /step (\d\d)/.test(document.querySelector('[aria-label="Training status"]')?.textContent ?? ''), null, { timeout: 60_000 });
  const early = await lossChart(page);
  const lags = [];
  const t0 = Date.now();
  while ((await step(page)) < 650) {
    assert.ok(Date.now() - t0 < 180_000, `650 steps within 3 minutes (at step ${await step(page)})`);
    lags.push(await lag(page));
    await page.waitForTimeout(500);
  }
  const late = await lossChart(page);
  console.log(`loss line ${early.points} → ${late.points} points; elements ${early.nodes} → ${late.nodes}; main-thread lag max ${Math.max(...lags).toFixed(0)} ms over ${lags.length} probes`);
  assert.ok(Math.max(...lags) < 1000, `the page answers within a second all along: ${lags.map((l) => l.toFixed(0))}`);
  assert.ok(late.points <= 600, `a long line is thinned: ${late.points} points`);
  assert.equal(late.nodes, early.nodes, 'a chart has as many elements at step 650 as at step 10');

  // A click lands at once, mid-run.
  const clicked = Date.now();
  await p.getByRole('button', { name: 'Pause' }).click({ timeout: 10_000 });
  await page.waitForFunction(() => /^paused/.test(document.querySelector('[aria-label="Training status"]')?.textContent ?? ''), null, { timeout: 30_000 });
  assert.ok(Date.now() - clicked < 5_000, `Pause answered in ${Date.now() - clicked} ms`);
  const paused = await step(page);

  // The cursor: the pointer over the middle of the plot reads that step; ← → on the focused chart move it.
  const chart = page.locator('svg[data-metric="loss"]');
  const readout = page.getByLabel('loss at the cursor');
  assert.match(await readout.innerText(), /^Point at the chart/);
  const box = await chart.boundingBox();
  // The plot spans x = 30..312 of the 320-wide drawing; its middle is about step (paused + 1) / 2.
  await page.mouse.move(box.x + box.width * (171 / 320), box.y + box.height / 2);
  const [, mid, loss] = (await readout.innerText()).match(/^step (\d+): loss (-?[\d.]+)$/) ?? [];
  assert.ok(Math.abs(Number(mid) - (paused + 1) / 2) <= paused / 100 + 2, `the middle reads step ${mid} of ${paused}`);
  assert.ok(Number.isFinite(Number(loss)), 'with its loss');
  await shot(page, 'chart-cursor');
  await page.mouse.move(0, 0);
  await chart.focus();
  await page.keyboard.press('End');
  assert.match(await readout.innerText(), new RegExp(`^step ${paused}: loss `));
  await page.keyboard.press('Shift+ArrowLeft');
  assert.match(await readout.innerText(), new RegExp(`^step ${paused - 10}: loss `));
  await page.keyboard.press('Home');
  assert.match(await readout.innerText(), /^step 1: loss 0\.693\d$/, 'step 1 of DPO: loss ln 2');
  await p.getByRole('button', { name: 'Stop' }).first().click();
  await page.waitForFunction(() => /^stopped/.test(document.querySelector('[aria-label="Training status"]')?.textContent ?? ''), null, { timeout: 30_000 });
});
