// Curricula and pipelines, clicked through on the tiny stories260K model (CPU): pairs ordered on
// the Data tab by the judges' margin (easy first, a mislabelled pair last) and "In order" ticked;
// then three stages added from the Train tab's form (SFT, a reward model, RLHF against it), run
// one after another, each measured on held-out prompts beside the base model with a snapshot to
// download; a reload keeps the stages and the table.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { HAVE_TINY, modelReady, openTiny, setField, shot, tempDir } from './lib.mjs';

const skip = HAVE_TINY ? false : 'needs ../shared/models/stories260K (see ../shared/README.md)';

test('a curriculum and a three-stage pipeline', { skip, timeout: 10 * 60_000 }, async (t) => {
  const { page, errors, panel, tab } = await openTiny(t);
  const dir = tempDir('alab-pipe-');
  const line = (o) => JSON.stringify(o);
  const pairs = [['Ben', ' and it was sad.', ' and he was happy.'], ['Tom', ' and he was happy.', ' and it was a day.'],
    ['Lily', ' and she was very happy and glad.', ' and it was sad and dark.'], ['Sue', ' and all was bright and warm.', ' and then the cold rain came.']];
  writeFileSync(join(dir, 'pairs.jsonl'), pairs.map(([w, c, r]) => line({ prompt: `Once upon a time, ${w} went to the park`, chosen: c, rejected: r })).join('\n'));
  writeFileSync(join(dir, 'demos.jsonl'), ['Lily', 'Tom', 'Ben', 'Sue', 'Max', 'Anna'].map((w) => line({ prompt: `Once upon a time, ${w} went to the park`, completion: ` and ${w} smiled.` })).join('\n'));
  await tab('Data');
  const d = panel();
  await d.getByLabel('Import JSONL').setInputFiles(join(dir, 'pairs.jsonl'));
  await d.getByText(/Imported 4 preference pairs/).waitFor();
  await d.getByLabel('Import JSONL').setInputFiles(join(dir, 'demos.jsonl'));
  await d.getByText(/Imported 6 ideal answers/).waitFor();
  const prompts = d.getByLabel('Prompts', { exact: true });
  await prompts.fill('Lily had a\nTom had a');
  await prompts.dispatchEvent('change');

  // The curriculum: by the judges (sentiment), easy first.
  await d.getByLabel('Order pairs by').selectOption('judges');
  await d.getByRole('button', { name: 'Order the pairs' }).click();
  await page.waitForFunction(() => /^Ordered 4 pairs, easy first/.test(document.querySelector('[aria-label="Curriculum status"]')?.textContent ?? ''), null, { timeout: 60_000 });
  const status = await d.getByLabel('Curriculum status').innerText();
  assert.match(status, /1 with a negative margin/, status);
  const firstCells = await d.getByRole('table', { name: 'Preference pairs' }).locator('tbody tr').evaluateAll((rows) => rows.map((r) => r.cells[1].textContent));
  assert.ok(firstCells[3].includes('Ben'), `the mislabelled pair comes last: ${firstCells}`);
  assert.ok(firstCells[0].includes('Lily') || firstCells[0].includes('Sue'), `a clear pair comes first: ${firstCells}`);
  await shot(page, 'curriculum');

  // Three stages from the form.
  await tab('Train');
  const p = panel();
  await p.getByLabel('In order').check();
  await p.getByLabel('Method').selectOption('sft');
  for (const [label, v] of Object.entries({ Steps: 8, 'Learning rate': 0.005, 'Batch size': 2, 'Held out': 0, Rank: 4 })) await setField(p, label, v);
  await p.getByRole('button', { name: 'Add the form as a stage' }).click();
  await p.getByLabel('Method').selectOption('reward');
  await setField(p, 'Learning rate', 0.01);
  await p.getByRole('button', { name: 'Add the form as a stage' }).click();
  await p.getByLabel('Method').selectOption('rl');
  await p.getByLabel('Reward source').selectOption('rm');
  for (const [label, v] of Object.entries({ Steps: 2, 'Max tokens': 8, 'Samples per prompt': 2, 'Prompts per round': 2 })) await setField(p, label, v);
  await p.getByRole('button', { name: 'Add the form as a stage' }).click();
  const stages = await p.getByRole('list', { name: 'Stages' }).locator('li').allInnerTexts();
  assert.equal(stages.length, 3);
  assert.match(stages[0], /^SFT: 8 steps/);
  assert.match(stages[1], /^Reward model: 8 steps, lr 0.01/);
  assert.match(stages[2], /^RLHF: 2 steps, lr 0.01, rewarded by the reward model/);
  const held = p.getByLabel('Pipeline held-out prompts');
  await held.fill('Once upon a time, Zoe went to the park\nOnce upon a time, Leo went to the park');
  await held.dispatchEvent('change');
  await p.getByRole('button', { name: 'Run the pipeline' }).click();
  const table = p.getByRole('table', { name: 'Pipeline' });
  await page.waitForFunction(() => document.querySelectorAll('table[aria-label="Pipeline"] tbody tr').length === 4 && !document.querySelector('[aria-label="Pipeline status"]')?.textContent, null, { timeout: 300_000 });
  const rows = await table.locator('tbody tr').evaluateAll((rs) => rs.map((r) => [...r.cells].map((c) => c.textContent)));
  assert.deepEqual(rows.map((r) => r[0]), ['base model', 'SFT (8 steps)', 'Reward model (8 steps)', 'RLHF (2 steps)']);
  assert.equal(rows[0][2], '0.00', 'the base model against itself');
  assert.ok(Number(rows[1][2]) > 0, `SFT moved the model: ${rows[1]}`);
  assert.equal(rows[2][1], '—', 'a reward stage leaves the policy as it was');
  assert.equal(await table.getByRole('button', { name: 'Download' }).count(), 3, 'a snapshot per stage');
  await shot(page, 'pipeline');

  await page.reload();
  await modelReady(page, 'stories260K.bin');
  await tab('Train');
  assert.equal(await panel().getByRole('list', { name: 'Stages' }).locator('li').count(), 3);
  assert.equal(await panel().getByRole('table', { name: 'Pipeline' }).locator('tbody tr').count(), 4);
  assert.equal(await panel().getByLabel('In order').isChecked(), true);
  assert.deepEqual(errors.filter((e) => !/favicon/.test(e)), []);
});
