// Writes tools/wasm-split/keep.txt, the functions the WebGPU worker's first download keeps
// (scripts/build-web splits the rest off, tools/wasm-split): what a WebGPU session runs.
//   node scripts/split-profile.mjs
// Needs a build (scripts/build-web): its whole worker, $CARGO_TARGET_DIR/web-stage/worker_whole_bg.wasm.
// It instruments that module (every function marks a byte when it first runs), serves the app with
// it in headless Chromium on SwiftShader's WebGPU adapter, walks a session through the page on the
// tiny model (generate, sample, every training method, judges, Compare, each technique tab, then a
// reload and an answer from the restored adapter), and lists the functions
// that ran by their stable names (the symbol without its build hashes, tools/wasm-split/src/names.rs;
// the list holds a 64-bit hash of each), so it outlives compiler and dependency updates. Run it when
// a WebGPU session has to fetch the worker's rest (the webgpu browser test says so; the session
// then waits for a second download), then scripts/build-web again.
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { SHARED_MODELS, serve } from '../tests/browser/server.mjs';
import { HAVE_TINY, TINY, distFile, fullEngine, generate, importJsonl, launch, modelReady, setField, tempDir, train } from '../tests/browser/lib.mjs';

const ROOT = resolve(import.meta.dirname, '..');
const target = process.env.CARGO_TARGET_DIR ?? join(homedir(), '.cache/alignlab/target');
const tool = join(process.env.ALIGNLAB_TOOLS_TARGET ?? join(homedir(), '.cache/alignlab/tools-target'), 'release/alignlab-wasm-split');
const OUT = join(ROOT, 'tools/wasm-split/keep.txt');
if (!HAVE_TINY) { console.error('split-profile: needs ../shared/models/stories260K'); process.exit(1); }

const dir = tempDir('alignlab-split-');
execFileSync(tool, ['instrument', join(target, 'web-stage/worker_whole_bg.wasm'), join(dir, 'worker.wasm'), join(dir, 'names.txt')], { stdio: 'inherit' });
const names = readFileSync(join(dir, 'names.txt'), 'utf8').split('\n');
// Served in place of the full build's first module, whatever its hash (scripts/web-dist.mjs).
const { server, base } = await serve({ override: { [distFile('worker_bg.wasm')]: readFileSync(join(dir, 'worker.wasm')) } });
const { ctx, page, errors } = await launch({ webgpu: true });
const step = (what) => console.error(`split-profile: ${what} (${Math.round(performance.now() / 1000)} s)`);
try {
  await page.goto(`${base}/${TINY}&backend=webgpu`);
  await modelReady(page, 'stories260K.bin', 300_000);
  const badge = await page.getByRole('status', { name: 'Compute backend' }).innerText();
  if (!/^WebGPU/.test(badge)) throw new Error(`not on WebGPU: ${badge}`);
  step('model ready');
  await session(page);
  await techniques(page);
  const ran = new Set(await coverage(page));
  // A returning visit runs other code: the model read from the engine's cache instead of the
  // network, the adapter and reward model given back to a fresh engine. The reload starts a new
  // worker, so its coverage is read apart and added. (The page gives the adapter back before it
  // asks for the answer: the engine takes its messages in order.)
  await page.reload();
  await modelReady(page, 'stories260K.bin', 300_000);
  await generate(page, { prompt: 'Once upon a time', samples: 1, temperature: 0, tokens: 8 });
  await page.getByRole('tabpanel').getByText(/first token after/).waitFor({ timeout: 300_000 });
  step('reloaded');
  for (const i of await coverage(page)) ran.add(i);
  // Each line of names.txt: the function's key, a tab, its stable name (tools/wasm-split/src/names.rs).
  const keep = [...new Set([...ran].map((i) => names[i]?.split('\t')[0]).filter(Boolean))].sort();
  writeFileSync(OUT, [
    `# Written by scripts/split-profile.mjs: the WebGPU worker's functions a session ran, ${keep.length} names`,
    '# by key (FNV-1a of the name without its build hashes, tools/wasm-split/src/names.rs).',
    `# rustc: ${execFileSync('rustc', ['--version'], { encoding: 'utf8' }).trim()} (scripts/build-web warns when it builds with another)`,
    '# Every function of the app itself stays too, so a change to alignlab does not outdate the list,',
    "# and std's own, whose internals a new compiler may rename.",
    '~alignlab',
    '^std::',
    '^<std::',
    ...keep,
  ].join('\n') + '\n');
  console.error(`split-profile: ${ran.size} of ${names.length - 1} functions ran; ${keep.length} keys in ${OUT}`);
  if (errors.length) console.error(`split-profile: the page reported: ${errors.join('\n')}`);
} finally {
  await ctx.close().catch(() => {});
  server.close();
}

/** The technique tabs, each once, at the Train form's settings (one step): prompt variants,
 * answers from documents and the fact check, the probes, the constitution's self-judging, the
 * sample class and its group adapters, a reward-model ensemble, distillation (from the best of N,
 * then from a second model as the teacher) and the weak critic's rerank. */
async function techniques(page) {
  const p = page.getByRole('tabpanel');
  const tab = (name) => page.getByRole('tab', { name, exact: true }).click();
  const until = (label, re) => page.waitForFunction(([l, r]) => new RegExp(r).test(document.querySelector(`[aria-label="${l}"]`)?.textContent ?? ''), [label, re.source], { timeout: 900_000 });
  await tab('Prompting');
  await p.getByLabel('Question', { exact: true }).fill('Who went to the park?');
  await p.getByLabel('Reference answer').fill('Lily went to the park with her mom.');
  await p.getByRole('button', { name: 'Try the variants' }).click();
  await page.waitForFunction(() => [...document.querySelectorAll('[aria-label="Variant answers"] .score')].filter((s) => /nats\/token/.test(s.textContent)).length === 4, null, { timeout: 900_000 });
  step('prompting');
  await tab('Documents');
  await p.getByLabel('Document question').fill('What year was the Quenby lighthouse first lit?');
  await p.getByRole('button', { name: 'Ask', exact: true }).click();
  await p.getByRole('article', { name: 'With documents' }).waitFor({ timeout: 900_000 });
  await p.getByRole('button', { name: 'Check the facts' }).click();
  await until('Fact summary', /^\d+ of \d+ questions/);
  step('documents');
  await tab('Probes');
  await p.getByRole('button', { name: 'Run the probes' }).click();
  await until('Probe summary', /^\d+ probes/);
  step('probes');
  await tab('Constitution');
  await p.getByRole('button', { name: 'Judge and label' }).click();
  await until('Self-judgement summary', /^\d+ answers: mean self-score/);
  step('constitution');
  await tab('Class');
  await p.getByRole('button', { name: 'Open the sample class' }).click();
  await p.getByRole('table', { name: 'Group agreement' }).waitFor();
  await p.getByRole('button', { name: 'Train the group adapters' }).click();
  await p.getByLabel('Group summary').waitFor({ timeout: 900_000 });
  await page.waitForFunction(() => !document.querySelector('.class button.primary')?.disabled, null, { timeout: 900_000 });
  step('rater groups');
  await tab('Ensemble');
  await setField(p, 'Members', 2);
  await p.getByRole('button', { name: 'Train the ensemble' }).click();
  await p.getByRole('table', { name: 'Ensemble accuracy' }).waitFor({ timeout: 900_000 });
  step('ensemble');
  await tab('Distill');
  await setField(p, 'N', 2);
  await p.getByRole('button', { name: 'Distill', exact: true }).click();
  await p.getByRole('table', { name: 'Distillation' }).waitFor({ timeout: 900_000 });
  // A second model as the teacher: it answers and scores without autodiff, tensors of a kind the
  // student's (trainable) model never makes.
  await p.getByLabel('Teacher', { exact: true }).selectOption('model');
  await p.getByLabel('Teacher model').setInputFiles([join(SHARED_MODELS, 'stories260K.bin'), join(SHARED_MODELS, 'tok512.bin')]);
  await p.getByText(/stories260K\.bin \(0\.\d+M parameters\)/).waitFor({ timeout: 60_000 });
  await p.getByRole('button', { name: 'Distill', exact: true }).click();
  await page.waitForFunction(() => [...document.querySelectorAll('table[aria-label="Distillation"] th')].some((th) => th.textContent.includes('log-prob per token')), null, { timeout: 900_000 });
  await setField(p, 'Weak critic', 'include=happy');
  await p.getByRole('button', { name: 'Rerank with the weak critic' }).click();
  await p.getByLabel('Weak-to-strong summary').waitFor({ timeout: 900_000 });
  step('distill, weak to strong');
}

/** The indices of the functions the page's engine has run so far (the instrumented module marks a
 * byte for each). */
async function coverage(page) {
  return fullEngine(page).evaluate(() => {
    const bytes = new Uint8Array(self.alignlabSplit.exports.__split_coverage.buffer);
    return bytes.reduce((out, b, i) => (b ? (out.push(i), out) : out), []);
  });
}

/** What a class does on WebGPU, each on the GPU backend: the flows of tests/browser/methods.test.mjs. */
async function session(page) {
  const p = page.getByRole('tabpanel');
  const tab = (name) => page.getByRole('tab', { name, exact: true }).click();
  const trainWith = async (method, fields) => {
    await tab('Train');
    await p.getByLabel('Method').selectOption(method);
    const r = await train(page, fields, 900_000);
    step(`${method}: ${r.status}`);
  };
  const answers = async (options) => {
    await generate(page, options);
    await p.getByText(/first token after/).waitFor({ timeout: 300_000 });
  };
  await answers({ prompt: '', samples: 1, temperature: 0, tokens: 8 });
  await answers({ prompt: 'Once upon a time', samples: 3, temperature: 1.0, tokens: 8, topK: 20 });
  step('generated');
  await p.getByLabel('Thumbs').check();
  await p.getByRole('button', { name: 'Thumbs up for sample 1' }).click();
  await p.getByRole('button', { name: 'Thumbs down for sample 2' }).click();
  await trainWith('kto', { Steps: 2, 'Learning rate': 0.01 });
  await tab('Generate & rank');
  await p.getByText('Write the ideal answer (for SFT)').click();
  await p.getByLabel('Ideal answer').fill(' there was a kind dragon.');
  await p.getByRole('button', { name: 'Save ideal answer' }).click();
  await trainWith('sft', { Steps: 2, 'Learning rate': 0.01 });
  await importJsonl(page, [
    { prompt: 'Once upon a time', chosen: ' there was a happy dog.', rejected: ' there was a sad cat.' },
    { prompt: 'One day', chosen: ' the sun was warm and kind.', rejected: ' the rain was cold and mean.' },
  ]);
  await page.getByText(/Imported 2 preference pairs/).waitFor();
  await trainWith('dpo', { Steps: 2, 'Learning rate': 0.01 });
  await tab('Data');
  await p.getByLabel('Prompts').fill('Once upon a time\nOne day');
  await p.getByLabel('Prompts').dispatchEvent('change');
  await p.getByRole('button', { name: 'Auto-label', exact: true }).click();
  await p.getByText(/Auto-labelled \d+ of \d+ prompts/).waitFor({ timeout: 600_000 });
  step('auto-labelled');
  await trainWith('reward', { Steps: 2, 'Learning rate': 0.01, 'Held out': 0.5, 'Evaluate every': 1 });
  await tab('Compare');
  await p.getByRole('button', { name: 'Best of N' }).click();
  await p.locator('ol.best li .score').filter({ hasText: 'reward model' }).first().waitFor({ timeout: 600_000 });
  step('best of N');
  await trainWith('rl', { Steps: 1, 'Learning rate': 0.005, 'Samples per prompt': 2, 'Max tokens': 6, 'Prompts per round': 1 });
}
