// Browser benchmark (not a test): page load to first token, tokens/s and seconds per DPO step,
// driving the built app like the tests do. Run after scripts/build-web:
//   node tests/browser/bench.mjs --model tiny|smollm2 --backend cpu|webgpu [--steps 2] [--tokens 16] [--prompt TEXT] [--threads off] [--samples 4]
//   node tests/browser/bench.mjs --model smollm2 --lessons [all|id,id,...]
// Prints one JSON line. --lessons walks the built-in lessons in order in one browser, as a class
// following them would (Try it on every step), and times each lesson and step. WebGPU here is SwiftShader (software) unless the machine has a GPU.
// --samples decodes that many greedy answers together (tokens/s counts every answer's tokens).
// --threads off serves the page without cross-origin isolation, as a host that cannot set headers
// would: the CPU path then runs on one thread.
import { parseArgs } from 'node:util';
import { serve } from './server.mjs';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { TINY, followReadingStep, generate, importJsonl, launch, modelReady, train, walkLesson } from './lib.mjs';

const { values: a } = parseArgs({ options: {
  model: { type: 'string', default: 'tiny' }, backend: { type: 'string', default: 'cpu' },
  steps: { type: 'string', default: '2' }, tokens: { type: 'string', default: '16' },
  lessons: { type: 'string' }, prompt: { type: 'string' }, threads: { type: 'string', default: 'on' },
  samples: { type: 'string', default: '1' },
} });
const tiny = a.model === 'tiny';
const { server, base } = await serve({ isolated: a.threads !== 'off' });
const { ctx, page, errors } = await launch({ webgpu: a.backend === 'webgpu' });
const out = { model: tiny ? 'stories260K' : 'SmolLM2-135M-Instruct Q4_1', backend: a.backend };
try {
  const t0 = Date.now();
  await page.goto(`${base}/${tiny ? TINY + '&' : '?'}backend=${a.backend}`);
  const name = tiny ? 'stories260K.bin' : 'SmolLM2-135M-Instruct (Q4_1)';
  await modelReady(page, name, 900_000);
  out.load_s = (Date.now() - t0) / 1000;
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
  } else {
    const p = page.getByRole('tabpanel');
    const t1 = Date.now();
    const prompt = a.prompt ?? (tiny ? '' : 'What is the capital of France?');
    await generate(page, { prompt, samples: Number(a.samples), temperature: 0, tokens: Number(a.tokens) });
    await page.waitForFunction(() => /first token after/.test(document.body.innerText), null, { timeout: 900_000 });
    const stats = await page.evaluate(() => document.body.innerText.match(/first token after ([\d.]+) s, ([\d.]+) tokens\/s/));
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
} finally {
  console.log(JSON.stringify(out));
  await ctx.close();
  server.close();
}
