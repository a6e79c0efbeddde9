// Distillation and weak-to-strong, clicked through on the tiny stories260K model (CPU): prompts
// imported on the Data tab; the model's own best of 4 by the judges teaches it by SFT, and the
// held-out prompts show the student before, after and the teacher, with the gap recovered; a second
// model file loaded as teacher, whose log-probability of the answers is shown too; a weak critic's
// picks among samples scored by the judges, its pairs added to the data; a reload keeps it all.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { SHARED_MODELS } from './server.mjs';
import { HAVE_TINY, openTiny, modelReady, setField, shot } from './lib.mjs';

const skip = HAVE_TINY ? false : 'needs ../shared/models/stories260K (see ../shared/README.md)';

/** The table's rows as { name: [cells as numbers or text] }. */
async function rowsOf(table) {
  const out = {};
  for (const r of await table.locator('tbody tr').allInnerTexts()) {
    const [name, ...cells] = r.split('\t');
    out[name] = cells;
  }
  return out;
}

test('a student learns from a teacher, and a weak critic picks for a strong model', { skip, timeout: 12 * 60_000 }, async (t) => {
  const { page, errors, panel, tab } = await openTiny(t);
  await tab('Data');
  const prompts = panel().getByLabel('Prompts', { exact: true });
  await prompts.fill(['Lily', 'Tom', 'Ben', 'Sue', 'Max', 'Anna'].map((n) => `Once upon a time, ${n} went to the park`).join('\n'));
  await prompts.dispatchEvent('change');
  await tab('Generate & rank');
  await setField(page, 'Samples', 4);
  await setField(page, 'Temperature', 1);
  await setField(page, 'Max tokens', 16);
  await tab('Train');
  for (const [label, v] of Object.entries({ Steps: 6, 'Learning rate': 0.005, 'Batch size': 2, 'Held out': 0 })) await setField(panel(), label, v);

  await tab('Distill');
  const p = panel();
  await p.getByText(/Prompts taught on: the Data tab's 6/).waitFor();
  await setField(p, 'N', 4);
  const held = p.getByLabel('Held-out prompts');
  await held.fill('Once upon a time, Zoe went to the park\nOnce upon a time, Leo went to the park');
  await held.dispatchEvent('change');
  await p.getByRole('button', { name: 'Distill', exact: true }).click();
  const table = p.getByRole('table', { name: 'Distillation' });
  await table.waitFor({ timeout: 300_000 });
  const r = await rowsOf(table);
  const [before, after, teacher] = r["Judges' mean score"].slice(0, 3).map(Number);
  assert.ok(teacher > before, `the best of 4 by the judges beats one sample: ${r["Judges' mean score"]}`);
  const gap = r["Judges' mean score"][3];
  assert.ok(Math.abs(Number(gap.replace('%', '')) / 100 - (after - before) / (teacher - before)) <= 0.02, `gap recovered ${gap} of ${before} ${after} ${teacher}`);
  assert.equal(r["Teacher's log-prob per token"], undefined, 'no teacher model: no log-prob row');
  await p.getByText(/learnt from 6 of the teacher's answers/).waitFor();
  await shot(page, 'distill');
  await tab('Data');
  assert.equal(await panel().getByRole('table', { name: 'Ideal answers' }).locator('tbody tr').count(), 6);

  // A second model as the teacher (here the same file: it proves the path, not a gap).
  await tab('Distill');
  await p.getByLabel('Teacher', { exact: true }).selectOption('model');
  await p.getByLabel('Teacher model').setInputFiles([join(SHARED_MODELS, 'stories260K.bin'), join(SHARED_MODELS, 'tok512.bin')]);
  await p.getByText(/stories260K\.bin \(0\.\d+M parameters\)/).waitFor({ timeout: 60_000 });
  await p.getByRole('button', { name: 'Distill', exact: true }).click();
  await page.waitForFunction(() => [...document.querySelectorAll('table[aria-label="Distillation"] th')].some((th) => th.textContent.includes('log-prob per token')), null, { timeout: 300_000 });
  const lp = (await rowsOf(table))["Teacher's log-prob per token"].slice(0, 3).map(Number);
  assert.ok(lp.every((x) => x < 0), `log-probabilities: ${lp}`);

  // Weak-to-strong.
  const weak = p.getByLabel('Weak critic');
  await weak.fill('include=happy+smiled+fun');
  await weak.dispatchEvent('change');
  await p.getByRole('button', { name: 'Rerank with the weak critic' }).click();
  const w2s = p.getByRole('table', { name: 'Weak-to-strong' });
  await p.getByLabel('Weak-to-strong summary').waitFor({ timeout: 300_000 });
  await page.waitForFunction(() => !document.querySelector('[aria-label="Distillation status"]')?.textContent, null, { timeout: 300_000 });
  const w = await rowsOf(w2s);
  const [random, byWeak, byTruth] = ['No critic (the first sample)', "The weak critic's", "The judges' own"].map((k) => Number(w[k][0]));
  assert.ok(byTruth >= byWeak && byTruth >= random, `the judges' own pick is the ceiling: ${JSON.stringify(w)}`);
  await shot(page, 'weak-to-strong');
  await p.getByRole('button', { name: 'Add its pairs to the data' }).click();
  await page.getByText(/pairs labelled by the weak critic added/).waitFor();

  await page.reload();
  await modelReady(page, 'stories260K.bin');
  await tab('Distill');
  await panel().getByRole('table', { name: 'Distillation' }).waitFor();
  await panel().getByRole('table', { name: 'Weak-to-strong' }).waitFor();
  assert.equal(await panel().getByLabel('Weak critic').inputValue(), 'include=happy+smiled+fun');
  assert.deepEqual(errors.filter((e) => !/favicon/.test(e)), []);
});
