// Shared by the browser tests: launch Debian's Chromium (headless, fresh profile), open the app on
// the tiny stories260K model, and small helpers. playwright-core has no `expect`: node:assert.
import { chromium } from 'playwright-core';
import { mkdtempSync, mkdirSync, existsSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { DIST, SHARED_MODELS, serve } from './server.mjs';

export const SHOTS = resolve(import.meta.dirname, 'screenshots');
mkdirSync(SHOTS, { recursive: true });

export const HAVE_TINY = existsSync(join(SHARED_MODELS, 'stories260K.bin'));
export const TINY = '?model=/test-models/stories260K.bin&tokenizer=/test-models/tok512.bin';

const BASE_FLAGS = ['--no-sandbox', '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--no-first-run', '--disable-quic', '--disable-dev-shm-usage'];
// A real WebGPU adapter without a GPU: SwiftShader (CPU emulation of Vulkan).
export const WEBGPU_FLAGS = ['--enable-unsafe-webgpu', '--enable-features=Vulkan', '--use-angle=swiftshader',
  '--enable-unsafe-swiftshader', '--use-webgpu-adapter=swiftshader'];

// Every folder a test makes is removed when its file's process ends: a browser profile keeps the
// app's files and the models in its caches (~250 MB), and a test run starts ~60 of them.
const made = [];
process.on('exit', () => made.forEach((d) => {
  // A browser left running by a failed test may still be writing there: what remains is left.
  try { rmSync(d, { recursive: true, force: true }); } catch {}
}));

/** A new empty folder under the system's temporary one, removed when the test file ends. */
export function tempDir(prefix = 'alignlab-') {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  made.push(dir);
  return dir;
}

/** A persistent context so IndexedDB and the Cache API survive a reload within one test.
 * `flags`: more Chromium switches (the benchmark's --browser-flag). `serviceWorkers: false`: a
 * browser without them (a page on plain HTTP from another machine of the room, a private window
 * in some browsers), so a page not served cross-origin isolated stays so, and runs the CPU path
 * on one thread. */
export async function launch({ webgpu = false, profile, flags = [], serviceWorkers = true } = {}) {
  const dir = profile ?? tempDir('alignlab-chromium-');
  const ctx = await chromium.launchPersistentContext(dir, {
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    acceptDownloads: true,
    viewport: { width: 1280, height: 900 },
    args: [...BASE_FLAGS, ...(webgpu ? WEBGPU_FLAGS : []), ...flags],
  });
  if (!serviceWorkers) await ctx.addInitScript(() => { delete Navigator.prototype.serviceWorker; });
  const page = ctx.pages()[0] ?? (await ctx.newPage());
  const errors = [];
  // Every Web Worker the page starts, by its role's path: which build of the engine it chose. (Counted at
  // the start, not by the server's requests: a script can be fetched twice for one start while a
  // service worker takes control.)
  const workers = [];
  page.on('worker', (w) => workers.push(role(new URL(w.url()).pathname)));
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  return { ctx, page, errors, workers, profile: dir };
}

/** A file of dist/ by its role: without the hash scripts/web-dist.mjs names it by
 * (`/worker-<hash>_loader.js` is `/worker_loader.js`). */
export const role = (path) => path.replace(HASHED, '');
/** The hash in a file's name (scripts/web-dist.mjs). */
export const HASHED = /-[0-9a-f]{16}(?=[._])/;

/** dist/'s file of a role (`worker_rest_bg.wasm`: `worker-<hash>_rest_bg.wasm`), as a path. */
export function distFile(name) {
  const file = readdirSync(DIST).find((f) => role(`/${f}`) === `/${name}`);
  if (!file) throw new Error(`no ${name} in dist/, under any hash: run scripts/build-web`);
  return `/${file}`;
}

/** The engine's full build (WebGPU, or the CPU on one thread) running in the page, if it runs. */
export function fullEngine(page) {
  return page.workers().find((w) => role(new URL(w.url()).pathname) === '/worker_loader.js');
}

/** Whether the full build's engine has loaded its second module, worker_rest_bg.wasm (the split
 * loader of scripts/web-dist.mjs records it); null where the full build is not running. */
export async function restLoaded(page) {
  const engine = fullEngine(page);
  return engine ? engine.evaluate(() => self.alignlabSplit.restLoaded) : null;
}

/** Waits until the model bar says the model is ready. */
/**
 * Serves the app and opens it on the tiny model on the CPU, ready; closes both when `t` ends.
 * `panel()` is the shown tab's panel, `tab(name)` clicks a tab.
 */
export async function openTiny(t) {
  const { server, base } = await serve();
  const { ctx, page, errors } = await launch();
  t.after(async () => { await ctx.close().catch(() => {}); server.close(); });
  await page.goto(`${base}/${TINY}&backend=cpu`);
  await modelReady(page, 'stories260K.bin');
  return { page, errors, panel: () => page.getByRole('tabpanel'), tab: (name) => page.getByRole('tab', { name, exact: true }).click() };
}

export async function modelReady(page, name, timeout = 180_000) {
  await page.getByText(`${name} ·`, { exact: false }).first().waitFor({ timeout });
}

export async function shot(page, name) {
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
}

/** Fills a labelled number/text field and commits it (change event). */
export async function setField(page, label, value) {
  const f = page.getByLabel(label, { exact: true }).first();
  await f.fill(String(value));
  await f.dispatchEvent('change');
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Fills the Generate tab's form (fields left undefined keep their value) and clicks Generate. */
export async function generate(page, { prompt, samples, temperature, tokens, topK }) {
  await page.getByRole('tab', { name: 'Generate & rank' }).click();
  const p = page.getByRole('tabpanel');
  await p.getByLabel('Prompt', { exact: true }).fill(prompt);
  if (samples !== undefined) await setField(p, 'Samples', samples);
  if (temperature !== undefined) await setField(p, 'Temperature', temperature);
  if (topK !== undefined) await setField(p, 'Top-k', topK);
  if (tokens !== undefined) await setField(p, 'Max tokens', tokens);
  await p.getByRole('button', { name: 'Generate', exact: true }).click();
}

/** Writes `rows` (objects, or raw lines as strings) to a JSONL file and imports it on the Data tab. */
export async function importJsonl(page, rows) {
  const file = join(tempDir(), 'import.jsonl');
  writeFileSync(file, rows.map((r) => (typeof r === 'string' ? r : JSON.stringify(r))).join('\n'));
  await page.getByRole('tab', { name: 'Data' }).click();
  await page.getByRole('tabpanel').getByLabel('Import JSONL').setInputFiles(file);
}

/**
 * On the Train tab: fills `fields` (label → value), clicks Train and waits for the run to end.
 * Returns the status line and the newest run's first and last loss (from the Runs table).
 */
export async function train(page, fields = {}, timeout = 300_000) {
  await page.getByRole('tab', { name: 'Train' }).click();
  const p = page.getByRole('tabpanel');
  for (const [label, value] of Object.entries(fields)) await setField(p, label, value);
  await p.getByRole('button', { name: 'Train', exact: true }).click();
  await page.waitForFunction(() => /^(finished|failed|stopped)/.test(document.querySelector('[aria-label="Training status"]')?.textContent ?? ''), null, { timeout });
  const status = await p.getByRole('status', { name: 'Training status' }).innerText();
  const cell = await page.getByRole('table', { name: 'Runs' }).locator('tbody tr').first().locator('td').nth(2).innerText();
  const [first, last] = cell.split('→').map(Number);
  return { status, first, last, cell };
}

/**
 * Walks a lesson as a student would: starts it from the Lessons tab, and on every step presses
 * Try it (when there is one), waits for the action to end and reads the watched numbers, then goes
 * on. `onStep` sees each step (for screenshots). Returns each step's title, wall time, the watched
 * lines ({ metric, state: 'yes' | 'no' | 'shown' | 'pending', text }) and the error banner, if any.
 */
export async function walkLesson(page, title, { onStep = async () => {}, timeout = 600_000 } = {}) {
  await page.getByRole('tab', { name: 'Lessons' }).click();
  await page.getByRole('button', { name: `Start lesson: ${title}` }).click();
  const card = page.getByRole('complementary', { name: 'Lesson' });
  const steps = [];
  for (let i = 0; ; i++) {
    await card.getByText(new RegExp(`step ${i + 1} of \\d+`)).waitFor();
    const name = await card.locator('h2').innerText();
    const t0 = Date.now();
    const tryIt = card.getByRole('button', { name: /^Try it/ });
    let error = null;
    if (await tryIt.count()) {
      await tryIt.click();
      await page.waitForFunction(() => document.querySelector('[aria-label="Lesson action"]')?.textContent === 'Done.', null, { timeout });
      const alert = page.getByRole('alert');
      if (await alert.count()) {
        error = (await alert.first().innerText()).replace(/\s+/g, ' ');
        await alert.first().getByRole('button', { name: 'Dismiss' }).click();
      }
    }
    const watches = await card.locator('.watch li').evaluateAll((lis) => lis.map((li) => ({ metric: li.dataset.metric, state: li.dataset.expected, text: li.textContent })));
    const step = { title: name, ms: Date.now() - t0, watches, error };
    steps.push(step);
    await onStep(i, step);
    const next = card.getByRole('button', { name: 'Next step' });
    if (await next.count()) await next.click();
    else {
      await card.getByRole('button', { name: 'Finish lesson' }).click();
      return steps;
    }
  }
}

/** Does what a reading step asks when a later step depends on it (the lab format has no action for it). */
export async function followReadingStep(page, spec) {
  if (/click Clear all/.test(spec.text)) {
    await page.getByRole('tab', { name: 'Data' }).click();
    page.once('dialog', (d) => d.accept());
    await page.getByRole('tabpanel').getByRole('button', { name: 'Clear all' }).click();
    await page.waitForFunction(() => /Preference pairs \(0\)/.test(document.querySelector('table[aria-label="Preference pairs"] caption')?.textContent ?? ''));
  }
}
