// Every training method from the page, on the CPU path with the tiny stories260K model: top-k
// sampling, thumbs up/down then KTO, an ideal answer then SFT, auto-labelling with the judges, a
// reward model with its held-out accuracy scoring answers in Compare and still there after a
// reload, RLHF against the judges with its knobs, a NaN run that stops and keeps the last good
// weights, the adapter exported in PEFT's layout and imported back, and the run handed off to TRL.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, copyFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { serve } from './server.mjs';
import { generate, HAVE_TINY, launch, modelReady, shot, sleep, tempDir, TINY, train as trainOn } from './lib.mjs';

const skip = HAVE_TINY ? false : 'needs ../shared/models/stories260K (see ../shared/README.md)';

test('every method from the page, NaN handling and PEFT adapter export/import', { skip, timeout: 20 * 60_000 }, async (t) => {
  const { server, base } = await serve();
  const { ctx, page, errors } = await launch();
  t.after(async () => { await ctx.close().catch(() => {}); server.close(); });
  const panel = () => page.getByRole('tabpanel');
  const tab = (name) => page.getByRole('tab', { name }).click();
  const train = async (method, steps, lr, fields = {}) => {
    await tab('Train');
    await panel().getByLabel('Method').selectOption(method);
    return trainOn(page, { Steps: steps, 'Learning rate': lr, ...fields });
  };
  await page.goto(`${base}/${TINY}&backend=cpu`);
  await modelReady(page, 'stories260K.bin');
  const dir = tempDir('alab-');

  await t.test('top-k 1 makes sampling greedy', async () => {
    const p = panel();
    await generate(page, { prompt: 'Once upon a time', samples: 3, temperature: 1.5, tokens: 12, topK: 1 });
    await p.getByText(/first token after/).waitFor({ timeout: 120_000 });
    const texts = await p.getByRole('article').locator('.sample-text').allInnerTexts();
    assert.equal(texts.length, 3);
    assert.ok(texts.every((x) => x === texts[0]) && texts[0].length > 0, `one answer at top-k 1: ${JSON.stringify(texts)}`);
    await generate(page, { prompt: 'Once upon a time', samples: 3, temperature: 1.5, tokens: 12, topK: 0 });
    await p.getByText(/first token after/).waitFor({ timeout: 120_000 });
    const free = await p.getByRole('article').locator('.sample-text').allInnerTexts();
    assert.ok(new Set(free).size > 1, `without top-k the samples differ: ${JSON.stringify(free)}`);
  });

  await t.test('thumbs up/down feed KTO', async () => {
    const p = panel();
    await generate(page, { prompt: 'Once upon a time', samples: 3, tokens: 16 });
    await p.getByText(/first token after/).waitFor({ timeout: 120_000 });
    assert.equal(await p.getByRole('article').count(), 3);
    await p.getByLabel('Thumbs').check();
    await p.getByRole('button', { name: 'Thumbs up for sample 1' }).click();
    await p.getByRole('button', { name: 'Thumbs down for sample 2' }).click();
    await p.getByRole('button', { name: 'Thumbs up for sample 3' }).click();
    assert.equal(await p.getByRole('button', { name: 'Thumbs down for sample 2' }).getAttribute('aria-pressed'), 'true');
    await tab('Data');
    assert.equal(await page.getByRole('table', { name: 'Rated answers' }).locator('tbody tr').count(), 3);
    const r = await train('kto', 4, 0.01);
    assert.match(r.status, /^finished step 4 of 4/);
    assert.ok(Number.isFinite(r.first) && Number.isFinite(r.last), `${r.first} ${r.last}`);
    assert.equal(await panel().locator('svg[data-metric=KL] polyline').count(), 1, 'KTO reports its KL estimate');
  });

  await t.test('an ideal answer trains SFT and the loss falls', async () => {
    await tab('Generate & rank');
    const p = panel();
    await p.getByText('Write the ideal answer (for SFT)').click();
    await p.getByLabel('Ideal answer').fill(' there was a kind dragon who baked bread for the whole village.');
    await p.getByRole('button', { name: 'Save ideal answer' }).click();
    const r = await train('sft', 8, 0.01);
    assert.match(r.status, /^finished step 8 of 8/);
    assert.ok(r.last < r.first * 0.8, `SFT loss fell: ${r.first} → ${r.last}`);
  });

  await t.test('auto-labelling with the judges makes pairs', async () => {
    await tab('Data');
    const p = panel();
    await p.getByLabel('Prompts').fill('Once upon a time\nOne day\nThe little dog');
    await p.getByLabel('Prompts').dispatchEvent('change');
    // Length judge too, so samples of different lengths always differ in score.
    await p.getByRole('checkbox').nth(3).check();
    await p.getByRole('button', { name: 'Auto-label', exact: true }).click();
    await p.getByText(/Auto-labelled 3 of 3 prompts: \d+ pairs added/).waitFor({ timeout: 180_000 });
    const n = await page.getByRole('table', { name: 'Preference pairs' }).locator('tbody tr').count();
    assert.ok(n >= 2, `${n} auto-labelled pairs`);
    await shot(page, 'autolabel');
  });

  await t.test('a reward model trains, reports held-out accuracy and scores answers in Compare', async () => {
    const r = await train('reward', 6, 0.01, { 'Held out': 0.5, 'Evaluate every': 3 });
    assert.match(r.status, /^finished step 6 of 6/);
    assert.ok(r.last < r.first, `RM loss fell: ${r.first} → ${r.last}`);
    const held = await panel().getByLabel('Held-out metrics').innerText();
    const acc = Number(held.match(/accuracy ([\d.]+)/)?.[1]);
    assert.ok(acc >= 0 && acc <= 1, `held-out accuracy shown: ${held}`);
    await panel().getByText('Reward model: trained').waitFor();
    await shot(page, 'reward-model');
    await tab('Compare');
    const p = panel();
    await p.getByRole('button', { name: 'Best of N' }).click();
    await p.locator('ol.best li .score').filter({ hasText: 'reward model' }).first().waitFor({ timeout: 120_000 });
    const scores = await p.locator('ol.best li .score').allInnerTexts();
    const rm = scores.map((s) => Number(s.match(/reward model ([+-][\d.]+)/)[1]));
    assert.deepEqual(rm, [...rm].sort((a, b) => b - a), `best first: ${scores}`);
    await shot(page, 'best-of-n');
  });

  await t.test('the reward model is still there after a reload', async () => {
    await page.reload();
    await modelReady(page, 'stories260K.bin');
    await tab('Train');
    await panel().getByText('Reward model: trained').waitFor({ timeout: 60_000 });
    await tab('Compare');
    const p = panel();
    await p.getByRole('button', { name: 'Best of N' }).click();
    await p.locator('ol.best li .score').filter({ hasText: 'reward model' }).first().waitFor({ timeout: 120_000 });
  });

  await t.test('RLHF against the judges runs with its knobs and reports rewards', async () => {
    await tab('Train');
    await panel().getByLabel('Method').selectOption('rl');
    await panel().getByLabel('KL estimator').selectOption('k1');
    await panel().getByLabel('Advantage').selectOption('rloo');
    const r = await train('rl', 2, 0.005, { 'Samples per prompt': 2, 'Max tokens': 8, 'Prompts per round': 1 });
    assert.match(r.status, /^finished step 2 of 2/);
    // GRPO's loss starts at about ±1e-8: a zero, never "-0.0000".
    assert.doesNotMatch(`${r.cell} ${r.status}`, /-0\.0+(?!\d)/, `${r.cell} · ${r.status}`);
    assert.equal(await panel().locator('svg[data-metric=reward] polyline').count(), 1);
    // The round's samples: one prompt × 2, RLOO's advantages opposite, the mean reward the chart's.
    const rows = await panel().getByRole('table', { name: 'RL samples' }).locator('tbody tr').all();
    assert.equal(rows.length, 2);
    const cells = await Promise.all(rows.map(async (row) => (await row.locator('td').allInnerTexts())));
    const [reward, advantage, kl] = [2, 3, 4].map((c) => cells.map((r) => Number(r[c])));
    assert.ok([...reward, ...advantage, ...kl].every(Number.isFinite), JSON.stringify(cells));
    assert.ok(Math.abs(advantage[0] + advantage[1]) < 2e-3 && Math.abs(advantage[0] - (reward[0] - reward[1])) < 2e-3, JSON.stringify(cells));
    const legend = await panel().locator('svg[data-metric=reward]').locator('..').locator('figcaption').innerText();
    assert.ok(Math.abs(Number(legend.match(/reward: (-?[\d.]+)/)[1]) - (reward[0] + reward[1]) / 2) < 2e-3, `${legend} vs ${reward}`);
    await shot(page, 'rlhf');
  });

  await t.test('a diverging run stops on NaN and keeps the last good weights', async () => {
    const r = await train('dpo', 5, 1e30);
    assert.match(r.status, /^failed/);
    const alert = page.getByRole('alert');
    await alert.waitFor();
    assert.match(await alert.innerText(), /Training stopped: the numbers blew up[\s\S]*(NaN or infinite|gradient norm became)[\s\S]*last good weights/);
    await shot(page, 'nan');
    await alert.getByRole('button', { name: 'Dismiss' }).click();
  });

  await t.test('the adapter exports in PEFT layout and imports back', async () => {
    const r = await train('dpo', 2, 0.01);
    assert.match(r.status, /^finished/);
    const p = panel();
    const downloads = [];
    page.on('download', (d) => downloads.push(d));
    await p.getByRole('button', { name: 'Export adapter' }).click();
    await page.waitForFunction(() => true);
    for (let i = 0; i < 50 && downloads.length < 2; i++) await sleep(100);
    const names = downloads.map((d) => d.suggestedFilename()).sort();
    assert.deepEqual(names, ['adapter_config.json', 'adapter_model.safetensors']);
    const cfgPath = join(dir, 'adapter_config.json'), stPath = join(dir, 'adapter_model.safetensors');
    copyFileSync(await downloads.find((d) => d.suggestedFilename().endsWith('.json')).path(), cfgPath);
    copyFileSync(await downloads.find((d) => d.suggestedFilename().endsWith('.safetensors')).path(), stPath);
    const cfg = JSON.parse(readFileSync(cfgPath, 'utf8'));
    assert.equal(cfg.peft_type, 'LORA');
    assert.equal(cfg.task_type, 'CAUSAL_LM');
    assert.equal(cfg.r, 8);
    assert.deepEqual([...cfg.target_modules].sort(), ['q_proj', 'v_proj']);
    const st = readFileSync(stPath);
    const header = JSON.parse(st.subarray(8, 8 + Number(st.readBigUInt64LE(0))).toString('utf8'));
    assert.deepEqual(header['base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight'].shape, [8, 64]);
    assert.deepEqual(header['base_model.model.model.layers.4.self_attn.v_proj.lora_B.weight'].shape, [32, 8]);
    await p.getByRole('button', { name: 'Reset to base model' }).click();
    await p.getByText('Policy: the base model').waitFor();
    await p.getByLabel('Import adapter').setInputFiles([cfgPath, stPath]);
    await p.getByText(/^Policy: LoRA r=8 alpha=16 on q_proj,v_proj after an imported adapter/).waitFor();
    await shot(page, 'adapter');
  });

  await t.test('the run is handed off to TRL as one zip: data, adapter and script', async () => {
    const p = panel();
    const [download] = await Promise.all([page.waitForEvent('download', { timeout: 60_000 }),
      p.getByRole('button', { name: 'Take it further in TRL' }).click()]);
    assert.equal(download.suggestedFilename(), 'alignlab-dpo-trl.zip');
    await p.getByText(/TRL hand-off downloaded/).waitFor();
    const zip = join(dir, 'handoff.zip');
    copyFileSync(await download.path(), zip);
    // Python's zipfile reads it (an independent reader), and the script's head is run for its settings.
    const out = JSON.parse(execFileSync('python3', ['-c', `
import json, sys, zipfile
z = zipfile.ZipFile(sys.argv[1]); assert z.testzip() is None
script = z.read('train_trl.py').decode()
ns = {}; exec(script.split('# ---- Below:')[0], ns)
rows = [json.loads(l) for n in ('train.jsonl', 'eval.jsonl') if n in z.namelist() for l in z.read(n).decode().splitlines()]
compile(script, 'train_trl.py', 'exec')
print(json.dumps({'names': sorted(z.namelist()), 'method': ns['METHOD'], 'chat': ns['CHAT'], 'config': ns['CONFIG'],
  'steps': ns['ARGS']['max_steps'], 'lr': ns['ARGS']['learning_rate'], 'base': ns['BASE_MODEL'], 'rows': rows,
  'adapter': z.read('adapter/adapter_model.safetensors').hex()}))`, zip]).toString());
    assert.deepEqual(out.names, ['README.md', 'adapter/adapter_config.json', 'adapter/adapter_model.safetensors', 'eval.jsonl', 'train.jsonl', 'train_trl.py']);
    assert.deepEqual([out.method, out.chat, out.config, out.steps, out.lr], ['dpo', false, 'DPOConfig', 2, 0.01]);
    assert.equal(out.base, 'stories260K.bin');
    assert.ok(out.rows.length >= 1 && out.rows.every((r) => ['prompt', 'chosen', 'rejected'].every((k) => typeof r[k] === 'string')),
      `plain-text pairs (this model has no chat template): ${JSON.stringify(out.rows.slice(0, 2))}`);
    assert.equal(out.adapter, readFileSync(join(dir, 'adapter_model.safetensors')).toString('hex'), 'the adapter the page holds');
    await shot(page, 'trl-handoff');
  });

  assert.deepEqual(errors.filter((e) => !/Failed to load resource/.test(e)), [], 'no page errors');
});
