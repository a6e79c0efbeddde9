// Browser benchmark (not a test): page load to first token, tokens/s and seconds per DPO step,
// driving the built app like the tests do. Run after scripts/build-web:
//   node tests/browser/bench.mjs --model tiny|smollm2 --backend cpu|webgpu [--steps 2] [--tokens 16]
// Prints one JSON line. WebGPU here is SwiftShader (software) unless the machine has a GPU.
import { writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { serve } from './server.mjs';
import { TINY, launch, modelReady, setField } from './lib.mjs';

const { values: a } = parseArgs({ options: {
  model: { type: 'string', default: 'tiny' }, backend: { type: 'string', default: 'cpu' },
  steps: { type: 'string', default: '2' }, tokens: { type: 'string', default: '16' },
} });
const tiny = a.model === 'tiny';
const { server, base } = await serve();
const { ctx, page, errors } = await launch({ webgpu: a.backend === 'webgpu' });
const out = { model: tiny ? 'stories260K' : 'SmolLM2-135M-Instruct Q4_1', backend: a.backend };
try {
  const t0 = Date.now();
  await page.goto(`${base}/${tiny ? TINY + '&' : '?'}backend=${a.backend}`);
  await modelReady(page, tiny ? 'stories260K.bin' : 'Mix1 Ep2', 900_000);
  out.load_s = (Date.now() - t0) / 1000;
  console.error('bench: loaded', JSON.stringify(out));
  out.device = await page.getByRole('status', { name: 'Compute backend' }).innerText();
  const p = page.getByRole('tabpanel');
  await p.getByLabel('Prompt', { exact: true }).fill(tiny ? '' : 'What is the capital of France?');
  await setField(p, 'Samples', 1);
  await setField(p, 'Temperature', 0);
  await setField(p, 'Max tokens', Number(a.tokens));
  const t1 = Date.now();
  await p.getByRole('button', { name: 'Generate', exact: true }).click();
  await page.waitForFunction(() => /first token after/.test(document.body.innerText), null, { timeout: 900_000 });
  const stats = await page.evaluate(() => document.body.innerText.match(/first token after ([\d.]+) s, ([\d.]+) tokens\/s/));
  out.first_token_s = Number(stats[1]);
  out.page_load_to_first_token_s = out.load_s + (t1 - t0 - out.load_s * 1000) / 1000 + out.first_token_s;
  out.decode_tokens_per_s = Number(stats[2]);
  console.error('bench: generated', JSON.stringify(out));
  out.answer = (await p.getByRole('article').first().locator('.sample-text').innerText()).slice(0, 80);

  const file = join(mkdtempSync(join(tmpdir(), 'alab-')), 'pairs.jsonl');
  writeFileSync(file, [
    { prompt: 'Tell me about your day.', chosen: 'It was a lovely, sunny day and I met good friends.', rejected: 'It was awful and boring.' },
    { prompt: 'How is the weather?', chosen: 'Warm and bright, a perfect day for a walk.', rejected: 'Cold, grey and miserable.' },
  ].map((r) => JSON.stringify(r)).join('\n'));
  await page.getByRole('tab', { name: 'Data' }).click();
  await page.getByRole('tabpanel').getByLabel('Import JSONL').setInputFiles(file);
  await page.getByRole('tab', { name: 'Train' }).click();
  const tp = page.getByRole('tabpanel');
  await setField(tp, 'Steps', Number(a.steps));
  await setField(tp, 'Batch size', 2);
  await tp.getByRole('button', { name: 'Train', exact: true }).click();
  await page.waitForFunction(() => /^(finished|failed|stopped)/.test(document.querySelector('[aria-label="Training status"]')?.textContent ?? ''), null, { timeout: 1_800_000 });
  const status = await tp.getByRole('status', { name: 'Training status' }).innerText();
  out.train_status = status;
  out.dpo_seconds_per_step = Number(status.match(/([\d.]+) s\/step/)?.[1]);
  out.dpo = 'batch 2 pairs, LoRA r=8 on q,v';
  if (errors.length) out.errors = errors;
} finally {
  console.log(JSON.stringify(out));
  await ctx.close();
  server.close();
}
