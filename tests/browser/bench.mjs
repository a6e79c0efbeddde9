// Browser benchmark (not a test): page load to first token, tokens/s and seconds per DPO step,
// driving the built app like the tests do. Run after scripts/build-web:
//   node tests/browser/bench.mjs --model tiny|smollm2 --backend cpu|webgpu [--steps 2] [--tokens 16] [--prompt TEXT] [--threads off] [--coop off] [--samples 4] [--temperature 0.7]
//   node tests/browser/bench.mjs --model smollm2 --lessons [all|id,id,...]
//   node tests/browser/bench.mjs --model smollm2 --flow [--steps 4] [--samples 4] [--tokens 40] [--prompt TEXT] [--type S] [--read S] [--settle S] [--again BETA [--runs N] [--pause S]] [--answer-after]
//   any of them with --browser-flag SWITCH (repeatable), e.g. --browser-flag=--js-flags=--no-wasm-dynamic-tiering, with --revisit or --visits N [--cache-trace], and with --rules off
//   any of them with --trace FILE
// Prints one JSON line. --lessons walks the built-in lessons in order in one browser, as a class
// following them would (Try it on every step), and times each lesson and step. WebGPU here is SwiftShader (software) unless the machine has a GPU.
// --samples decodes that many greedy answers together (tokens/s counts every answer's tokens);
// --temperature samples them instead (the page's top-p, 0.9).
// --flow times a new user's way to the first visible DPO shift: open the page, sample --samples
// answers of --tokens tokens to the prompt, save them in the order shown (every better-over-worse
// pair), train --steps DPO steps with the page's defaults, and read the margins chart. --type S
// waits S seconds before Generate, as a student typing the prompt would, and --read S before
// saving the ranking, as one reading the answers would, and --settle S between saving and Train,
// as one looking over the training form would (all default 0): the threaded page's training
// warm-up runs in such idle time (docs/results.md, stops 61-62), and the reference is scored
// ahead of the run in the time after saving (stop 63). --again
// then trains a second run of --steps on the same pairs with beta BETA, as a class trying another
// beta would, and times its steps too; --runs N trains N such runs, each after --pause S seconds
// with the page idle (a class reading the chart; default 0). --answer-after then asks the trained
// model for one greedy answer of --tokens tokens to the prompt, as a student looking at what
// training changed would, and times it as the plain bench does.
// --browser-flag passes a switch to Chromium: V8's flags, for one, to see what its compilers do to
// a step (docs/results.md, stop 60: the second run's slower steps are V8's tier-up).
// --coop off serves the page without COOP and COEP, as a host that cannot set headers (GitHub
// Pages): the first visit reloads once, made cross-origin isolated by the service worker
// (www/offline.js). --threads off also takes the browser's service workers away (a page on plain
// HTTP from another machine): the CPU path then runs on one thread.
// --revisit measures a returning student: the walk once (its figures under first_visit), the
// browser closed, the page's stored data (IndexedDB) removed so that the second walk does the same
// work, then the same walk again in the same profile. What the browser kept stays: the app's files,
// the model the engine cached, and the optimized code V8 kept for the engine's wasm. --visits N
// makes N such visits (--revisit is 2; the figures of those between under earlier_visits), and
// --cache-trace says for each what Chrome did with that code (wasm_code_cache). --rules off
// ignores dist/_headers, so every file is asked after on every visit (answered 304), as on a host
// whose short max-age has run out (GitHub Pages: ten minutes).
// --trace FILE writes Chrome's trace of the last visit, from opening the page to a ready model
// (Perfetto or chrome://tracing reads it): which thread of the page, its workers and the browser
// did what while the page started (docs/results.md, stop 76).
import { parseArgs } from 'node:util';
import { serve } from './server.mjs';
import { existsSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { TINY, followReadingStep, generate, importJsonl, launch, modelReady, train, walkLesson } from './lib.mjs';

const { values: a } = parseArgs({ options: {
  model: { type: 'string', default: 'tiny' }, backend: { type: 'string', default: 'cpu' },
  steps: { type: 'string' }, tokens: { type: 'string' },
  lessons: { type: 'string' }, prompt: { type: 'string' }, threads: { type: 'string', default: 'on' }, coop: { type: 'string', default: 'on' }, rules: { type: 'string', default: 'on' },
  samples: { type: 'string' }, temperature: { type: 'string', default: '0' }, flow: { type: 'boolean', default: false }, again: { type: 'string' },
  revisit: { type: 'boolean', default: false }, 'cache-trace': { type: 'boolean', default: false }, visits: { type: 'string' }, runs: { type: 'string', default: '1' }, type: { type: 'string', default: '0' }, read: { type: 'string', default: '0' }, settle: { type: 'string', default: '0' }, pause: { type: 'string', default: '0' }, 'answer-after': { type: 'boolean', default: false }, 'browser-flag': { type: 'string', multiple: true, default: [] },
  trace: { type: 'string' },
} });
if (a.trace && a['cache-trace']) {
  console.error('bench: --trace and --cache-trace both trace the browser: take one');
  process.exit(2);
}
// --flow's defaults are the walk (4 answers of 40 tokens, 4 steps); the rest one greedy answer.
a.steps ??= a.flow ? '4' : '2';
a.tokens ??= a.flow ? '40' : '16';
a.samples ??= a.flow ? '4' : '1';
const tiny = a.model === 'tiny';
const visits = Number(a.visits ?? (a.revisit ? 2 : 1));
const DECODE_STATS = /first token after ([\d.]+) s, ([\d.]+) tokens\/s/;
const { server, base } = await serve({ isolated: a.threads !== 'off' && a.coop !== 'off', rules: a.rules !== 'off' });
const browser = { webgpu: a.backend === 'webgpu', flags: a['browser-flag'], serviceWorkers: a.threads !== 'off' };
let { ctx, page, errors, profile } = await launch(browser);
const head = { model: tiny ? 'stories260K' : 'SmolLM2-135M-Instruct Q4_1', backend: a.backend };
if (a['browser-flag'].length) head.browser_flags = a['browser-flag'];
if (a.rules === 'off') head.rules = 'off: every file revalidated';
let out = { ...head };
try {
  const earlier = [];
  for (let k = 1; k < visits; k++) {
    await walk();
    earlier.push(out);
    await ctx.close();
    out.code_cache_kb = codeCacheKb();
    rmSync(join(profile, 'Default', 'IndexedDB'), { recursive: true, force: true });
    ({ ctx, page, errors } = await launch({ ...browser, profile }));
    out = { ...head, revisit: true, first_visit: earlier[0], ...(earlier.length > 1 ? { earlier_visits: earlier.slice(1) } : {}) };
  }
  await walk();
} finally {
  await ctx.close();
  if (visits > 1) out.code_cache_kb = codeCacheKb();
  console.log(JSON.stringify(out));
  server.close();
}

// The optimized wasm code Chrome kept in the profile so far (KiB): it grows when a visit's engine
// could not take the code an earlier visit kept.
function codeCacheKb() {
  const dir = join(profile, 'Default', 'Code Cache', 'wasm');
  const files = existsSync(dir) ? readdirSync(dir, { recursive: true }).map((f) => statSync(join(dir, f))) : [];
  return Math.round(files.filter((f) => f.isFile()).reduce((n, f) => n + f.size, 0) / 1024);
}

// One visit: the page's walk, traced if --cache-trace asks.
async function walk() {
  if (!a['cache-trace']) return walkPage();
  const stop = await traceCodeCache();
  try {
    await walkPage();
  } finally {
    out.wasm_code_cache = await stop();
  }
}

// Chrome's trace of the given categories from now until the returned function is called, which
// resolves to its events (Chrome's trace event format), those `keep` takes: a whole walk's
// timeline is too much to hold for a few events.
async function tracing(categories, keep = () => true) {
  const cdp = await ctx.newCDPSession(page);
  const events = [];
  cdp.on('Tracing.dataCollected', ({ value }) => events.push(...value.filter(keep)));
  const done = new Promise((ok) => cdp.on('Tracing.tracingComplete', ok));
  await cdp.send('Tracing.start', { categories: categories.join(','), transferMode: 'ReportEvents' });
  return async () => {
    await cdp.send('Tracing.end');
    await done;
    return events;
  };
}

// --cache-trace: what Chrome did with the engine's optimized code this visit, from its trace
// (Blink's events for wasm code caching): the sizes of each copy it kept (KiB), and the size of
// the one it gave V8 back (null: compiled from the start).
async function traceCodeCache() {
  const stop = await tracing(['disabled-by-default-devtools.timeline'], (e) => e.name.startsWith('v8.wasm.'));
  return async () => {
    const seen = { produced_kb: [], consumed_kb: null, invalid: 0 };
    for (const { name, args } of await stop()) {
      if (name === 'v8.wasm.cachedModule') seen.produced_kb.push(Math.round(args.producedCacheSize / 1024));
      if (name === 'v8.wasm.moduleCacheHit') seen.consumed_kb = Math.round(args.consumedCacheSize / 1024);
      if (name === 'v8.wasm.moduleCacheInvalid') seen.invalid += 1;
    }
    return seen;
  };
}

// --trace: Chrome's trace from here until the returned function is called, written to the file
// --trace names, and its busiest threads in `out`.
async function traceToReady() {
  const stop = await tracing(['devtools.timeline', 'disabled-by-default-devtools.timeline', 'v8', 'v8.wasm', 'v8.execute', 'loading', 'blink', 'toplevel', '__metadata']);
  return async () => {
    const events = await stop();
    writeFileSync(a.trace, JSON.stringify({ traceEvents: events }));
    out.trace = { file: a.trace, busy_s: busiest(events) };
  };
}

/** The six threads that ran the longest tasks in a trace, by process and thread name, with the
 * seconds their top-level tasks took (wall time: on a busy machine a task also waits for a core). */
function busiest(events) {
  const processes = new Map(), threads = new Map();
  for (const e of events.filter((e) => e.ph === 'M')) {
    if (e.name === 'process_name') processes.set(e.pid, e.args.name);
    if (e.name === 'thread_name') threads.set(`${e.pid}/${e.tid}`, e.args.name);
  }
  const busy = new Map(), end = new Map();
  const tasks = events.filter((e) => e.ph === 'X' && (e.name === 'RunTask' || e.name === 'ThreadPool_RunTask')).sort((x, y) => x.ts - y.ts);
  for (const e of tasks) {
    const thread = `${e.pid}/${e.tid}`;
    if ((end.get(thread) ?? -1) > e.ts) continue; // nested in a task counted already
    end.set(thread, e.ts + e.dur);
    busy.set(thread, (busy.get(thread) ?? 0) + e.dur / 1e6);
  }
  const named = new Set();
  return Object.fromEntries([...busy].sort((x, y) => y[1] - x[1]).slice(0, 6).map(([thread, s]) => {
    const [pid, tid] = thread.split('/');
    const name = `${processes.get(Number(pid)) ?? '?'} / ${threads.get(thread) ?? '?'}`;
    // Threads of one name (a pool's) told apart by their id.
    const label = named.has(name) ? `${name} ${tid}` : name;
    named.add(name);
    return [label, Math.round(s * 100) / 100];
  }));
}

// One visit: open the page and walk what the arguments ask for, into `out`.
async function walkPage() {
  const stopTrace = a.trace ? await traceToReady() : null;
  const t0 = Date.now();
  await page.goto(`${base}/${tiny ? TINY + '&' : '?'}backend=${a.backend}`);
  const name = tiny ? 'stories260K.bin' : 'SmolLM2-135M-Instruct (Q4_1)';
  await modelReady(page, name, 900_000);
  out.load_s = (Date.now() - t0) / 1000;
  if (stopTrace) await stopTrace();
  // Of which the worker's load of the model (fetch, parse, warm-up; the model bar's "loaded in");
  // the rest is the page and the worker starting.
  const bar = await page.getByText(`${name} ·`, { exact: false }).first().innerText();
  out.model_load_s = Number(/loaded in ([\d.]+) s/.exec(bar)?.[1] ?? NaN);
  // And where that went ("download 0.62 s · device 0.00 s · parse 0.31 s · …").
  out.model_load_parts = (await page.locator('.model-status').getAttribute('title'))?.replace(/^Where the load went: /, '') ?? '';
  console.error('bench: loaded', JSON.stringify(out));
  out.device = await page.getByRole('status', { name: 'Compute backend' }).innerText();
  if (a.lessons !== undefined) {
    const labs = resolve(import.meta.dirname, '../../www/labs');
    const want = a.lessons === 'all' || a.lessons === '' ? null : a.lessons.split(',');
    out.lessons = [];
    for (const f of JSON.parse(readFileSync(join(labs, 'index.json'), 'utf8'))) {
      const lesson = JSON.parse(readFileSync(join(labs, f), 'utf8'));
      if (want && !want.includes(lesson.id)) continue;
      const t = Date.now();
      const steps = await walkLesson(page, lesson.title, { timeout: 3_600_000, onStep: (i) => followReadingStep(page, lesson.steps[i]) });
      out.lessons.push({ id: lesson.id, seconds: (Date.now() - t) / 1000, steps: steps.map((s) => [s.title, s.ms / 1000, s.error]) });
      console.error('bench:', JSON.stringify(out.lessons.at(-1)));
    }
  } else if (a.flow) {
    await firstShift(t0);
  } else {
    const p = page.getByRole('tabpanel');
    const t1 = Date.now();
    const prompt = a.prompt ?? (tiny ? '' : 'What is the capital of France?');
    const main = await mainThread();
    await generate(page, { prompt, samples: Number(a.samples), temperature: Number(a.temperature), tokens: Number(a.tokens) });
    // Polled a few times a second, not every frame: reading innerText lays the page out, which
    // would count in the main thread's time.
    await page.waitForFunction(() => /first token after/.test(document.body.innerText), null, { timeout: 900_000, polling: 250 });
    out.main_thread_while_decoding = await main();
    const stats = await decodeStats();
    out.first_token_s = Number(stats[1]);
    out.page_load_to_first_token_s = (t1 - t0) / 1000 + out.first_token_s;
    out.decode_tokens_per_s = Number(stats[2]);
    console.error('bench: generated', JSON.stringify(out));
    out.answer = (await p.getByRole('article').first().locator('.sample-text').innerText()).slice(0, 80);

    await importJsonl(page, [
      { prompt: 'Tell me about your day.', chosen: 'It was a lovely, sunny day and I met good friends.', rejected: 'It was awful and boring.' },
      { prompt: 'How is the weather?', chosen: 'Warm and bright, a perfect day for a walk.', rejected: 'Cold, grey and miserable.' },
    ]);
    const { status } = await train(page, { Steps: Number(a.steps), 'Batch size': 2 }, 1_800_000);
    out.train_status = status;
    out.dpo_seconds_per_step = Number(status.match(/([\d.]+) s\/step/)?.[1]);
    out.dpo = 'batch 2 pairs, LoRA r=8 on q,v';
  }
  if (errors.length) out.errors = errors;
}

// The --flow walk (see the header): from opening the page (t0) to the DPO chart's margins after
// the last step. Clicks take milliseconds; a student's typing, reading and ranking time is not
// counted, except --type's and --read's (trained_s counts them, ranked_to_trained_s does not).
async function firstShift(t0) {
  const p = page.getByRole('tabpanel');
  const since = () => (Date.now() - t0) / 1000;
  const prompt = a.prompt ?? 'Write a short story about a brave little cat.';
  if (Number(a.type)) out.type_s = Number(a.type);
  await page.waitForTimeout(Number(a.type) * 1000);
  await generate(page, { prompt, samples: Number(a.samples), tokens: Number(a.tokens) });
  await page.waitForFunction(() => [...document.querySelectorAll('button')].some((b) => b.textContent === 'Save ranking' && !b.disabled), null, { timeout: 900_000 });
  out.generated_s = since();
  out.samples = `${a.samples} x ${a.tokens} tokens, the page's sampling settings`;
  if (Number(a.read)) out.read_s = Number(a.read);
  await page.waitForTimeout(Number(a.read) * 1000);
  const t = Date.now();
  await p.getByRole('button', { name: 'Save ranking' }).click();
  out.pairs = Number((await p.getByText(/Added \d+ preference pairs/).innerText()).match(/Added (\d+)/)[1]);
  if (Number(a.settle)) out.settle_s = Number(a.settle);
  await page.waitForTimeout(Number(a.settle) * 1000);
  const { status, cell } = await train(page, { Steps: Number(a.steps) }, 1_800_000);
  out.trained_s = since();
  out.ranked_to_trained_s = (Date.now() - t) / 1000;
  // The threaded page's background training warm-up, when it ended before now (the model bar's tooltip).
  const warm = /training warm-up ([\d.]+) s/.exec(await page.locator('.model-status').getAttribute('title') ?? '');
  out.training_warm_up_s = warm ? Number(warm[1]) : null;
  // The reference scored ahead of the run, when that ended before now (the same tooltip).
  const ahead = /scores of (\d+) new pairs, ahead of training, ([\d.]+) s/.exec(await page.locator('.model-status').getAttribute('title') ?? '');
  out.scored_ahead = ahead ? { pairs: Number(ahead[1]), s: Number(ahead[2]) } : null;
  out.train_status = status;
  out.loss = cell;
  const margins = await page.getByRole('tabpanel').locator('svg[data-metric=margins]').locator('..').locator('figcaption').innerText();
  out.margins = Number(margins.match(/rewards\/margins: (-?[\d.]+)/)?.[1]);
  out.shift_visible = out.margins > 0 && /^finished/.test(status);
  out.step_seconds = await stepSeconds();
  if (a.again !== undefined) await again();
  if (a['answer-after']) await answerAfter(prompt);
}

// --again: more runs on the same pairs with another beta, each after --pause seconds.
async function again() {
  out.again = [];
  for (let k = 0; k < Number(a.runs); k++) {
    await page.waitForTimeout(Number(a.pause) * 1000);
    const t = Date.now();
    const run = await train(page, { Beta: Number(a.again), Steps: Number(a.steps) }, 1_800_000);
    out.again.push({ beta: Number(a.again), seconds: (Date.now() - t) / 1000, train_status: run.status, loss: run.cell, step_seconds: await stepSeconds() });
  }
}

// --answer-after: one greedy answer from the trained model; its first token and tokens/s.
async function answerAfter(prompt) {
  const before = await decodeStats();
  await generate(page, { prompt, samples: 1, temperature: 0, tokens: Number(a.tokens) });
  await page.waitForFunction(([src, b]) => {
    const now = document.body.innerText.match(new RegExp(src))?.[0];
    return now !== undefined && now !== b;
  }, [DECODE_STATS.source, before?.[0]], { timeout: 900_000 });
  const [, first, rate] = await decodeStats();
  const answer = await page.getByRole('tabpanel').getByRole('article').first().locator('.sample-text').innerText();
  out.after = { first_token_s: Number(first), decode_tokens_per_s: Number(rate), answer: answer.slice(0, 80) };
}

// The page's main thread from now to the returned function's call (seconds busy, of which script,
// style and layout; Chrome's own counters): what drawing the streamed answers costs it, on the
// cores the engine's threads use too.
async function mainThread() {
  const cdp = await ctx.newCDPSession(page);
  await cdp.send('Performance.enable');
  const read = async () => Object.fromEntries((await cdp.send('Performance.getMetrics')).metrics.map((m) => [m.name, m.value]));
  const before = await read();
  return async () => {
    const after = await read();
    const d = (k) => Number((after[k] - before[k]).toFixed(3));
    return { busy_s: d('TaskDuration'), script_s: d('ScriptDuration'), style_s: d('RecalcStyleDuration'), layout_s: d('LayoutDuration') };
  };
}

// The Generate tab's line for the last answer: [the line, first token's seconds, tokens/s], or null.
function decodeStats() {
  return page.evaluate((src) => document.body.innerText.match(new RegExp(src)), DECODE_STATS.source);
}

// Each step's own time (the worker's `step_seconds`), from the newest run the page kept in
// IndexedDB. A step also scores the reference on the pairs new to the run (except the first,
// whose fresh adapters make the policy its own reference); the last also scores the held-out pairs.
async function stepSeconds() {
  await page.waitForTimeout(1500); // the record follows a run once a second
  return page.evaluate(() => new Promise((done, fail) => {
    const open = indexedDB.open('alignlab');
    open.onerror = () => fail(open.error);
    open.onsuccess = () => {
      const get = open.result.transaction('kv').objectStore('kv').get('runs');
      get.onerror = () => fail(get.error);
      get.onsuccess = () => {
        const runs = get.result?.data ?? get.result;
        const field = (m, k) => (m instanceof Map ? m.get(k) : m?.[k]);
        const last = runs.at(-1);
        done(field(last, 'metrics').map((m) => Number(field(m, 'step_seconds').toFixed(2))));
      };
    };
  }));
}
