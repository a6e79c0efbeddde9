// Reward-model ensembles, clicked through on the tiny stories260K model (CPU): pairs imported on
// the Data tab, three reward models trained from three seeds on the Ensemble tab (each member's and
// each combination's held-out accuracy), answers unlike the pairs scored by every member (mean and
// spread are the members' mean and standard deviation), RLHF with the ensemble's minimum as its
// reward, and a reload that keeps the report and says the members must be trained again.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { HAVE_TINY, modelReady, openTiny, setField, shot, tempDir, train } from './lib.mjs';

const skip = HAVE_TINY ? false : 'needs ../shared/models/stories260K (see ../shared/README.md)';

const endings = [[' and she was very happy.', ' and it was sad and dark.'], [' and all was bright and warm.', ' and then the cold rain came.'],
  [' and they played all day.', ' and he cried all night.']];
const names = ['Lily', 'Tom', 'Ben', 'Sue', 'Max', 'Anna', 'Mia', 'Sam', 'Zoe', 'Leo', 'Ava', 'Jack', 'Tim', 'Kim', 'Pat', 'Ned'];

test('an ensemble of reward models: accuracy, disagreement and RLHF on its minimum', { skip, timeout: 10 * 60_000 }, async (t) => {
  const { page, errors, panel, tab } = await openTiny(t);
  const dir = tempDir('alab-ens-');
  const file = join(dir, 'pairs.jsonl');
  writeFileSync(file, names.map((n, i) => JSON.stringify({ prompt: `Once upon a time, ${n} went to the park`, chosen: endings[i % 3][0], rejected: endings[i % 3][1] })).join('\n'));
  await tab('Data');
  await panel().getByLabel('Import JSONL').setInputFiles(file);
  await panel().getByText(/Imported 16 preference pairs/).first().waitFor();
  await tab('Generate & rank');
  await panel().getByLabel('Prompt', { exact: true }).fill('Once upon a time, Ned went to the park');
  await tab('Train');
  for (const [label, v] of Object.entries({ Steps: 12, 'Learning rate': 0.01, 'Batch size': 4, 'Held out': 0.25, Rank: 4 })) await setField(panel(), label, v);

  await tab('Ensemble');
  const p = panel();
  await setField(p, 'Members', 3);
  await p.getByRole('button', { name: 'Train the ensemble' }).click();
  const acc = p.getByRole('table', { name: 'Ensemble accuracy' });
  await acc.waitFor({ timeout: 300_000 });
  const rows = await acc.locator('tbody tr').allInnerTexts();
  assert.deepEqual(rows.map((r) => r.split('\t')[0]), ['member 1', 'member 2', 'member 3', 'ensemble: mean', 'ensemble: min', 'ensemble: mean − spread']);
  const percents = rows.map((r) => Number(r.split('\t')[1].replace('%', '')));
  assert.ok(percents.every((x) => x >= 75), `every member and combination learnt the held-out pairs: ${rows}`);
  const heldSpread = Number((await p.getByLabel('Held-out spread').innerText()).match(/([\d.]+)\.$/)[1]);

  const odd = ['7 + 12 = 19; 19 * 3 = 57.', 'SELECT name FROM users WHERE id = 4;', 'Zxq vrb kklm pwwt ghjj.', '}}{{ ## ;; <> ~~ %%'];
  const box = p.getByLabel('Answers to score');
  await box.fill(odd.join('\n'));
  await box.dispatchEvent('change');
  await p.getByRole('button', { name: 'Score the answers' }).click();
  const scored = p.getByRole('table', { name: 'Ensemble scores' });
  await scored.waitFor({ timeout: 60_000 });
  const lines = await scored.locator('tbody tr').all();
  assert.equal(lines.length, 4);
  for (const row of lines) {
    const cells = (await row.locator('td').allInnerTexts()).slice(1).map(Number);
    const m = cells.slice(0, 3);
    const mean = m.reduce((a, b) => a + b) / 3;
    const sd = Math.sqrt(m.reduce((a, b) => a + (b - mean) ** 2, 0) / 2);
    assert.ok(Math.abs(cells[3] - mean) <= 0.011 && Math.abs(cells[4] - sd) <= 0.011, `mean and spread of ${cells}`);
  }
  const summary = await p.getByLabel("Answers' spread").innerText();
  const oddSpread = Number(summary.match(/these answers: ([\d.]+)/)[1]);
  assert.ok(oddSpread > heldSpread, `the members disagree more on answers unlike the pairs: ${summary}`);
  await shot(page, 'ensemble');

  // RLHF rewarded by the ensemble's most pessimistic member.
  await tab('Train');
  await panel().getByLabel('Method').selectOption('rl');
  await panel().getByLabel('Reward source').selectOption('ensemble');
  await panel().getByLabel('Combine').selectOption('min');
  const run = await train(page, { Steps: 2, 'Max tokens': 8, 'Samples per prompt': 2, 'Prompts per round': 2 });
  assert.match(run.status, /^finished/, run.status);
  await shot(page, 'ensemble-rlhf');

  await page.reload();
  await modelReady(page, 'stories260K.bin');
  await tab('Ensemble');
  assert.equal(await panel().getByRole('table', { name: 'Ensemble accuracy' }).locator('tbody tr').count(), 6);
  await panel().getByText('train them again after a reload').waitFor();
  assert.equal(await panel().getByRole('button', { name: 'Score the answers' }).isDisabled(), true);
  assert.deepEqual(errors.filter((e) => !/favicon/.test(e)), []);
});
