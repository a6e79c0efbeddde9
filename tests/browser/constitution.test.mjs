// Self-alignment, clicked through on the tiny stories260K model (CPU): the student rewrites the
// constitution, judges the model's answers to the Generate tab's prompt (P(yes) per principle,
// self-score, judges), the best-vs-worst pairs land in the data, and a reload keeps the principles
// and the judgements.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HAVE_TINY, openTiny, modelReady, setField, shot } from './lib.mjs';

const skip = HAVE_TINY ? false : 'needs ../shared/models/stories260K (see ../shared/README.md)';

test('a constitution: the model judges its own answers and labels pairs', { skip, timeout: 10 * 60_000 }, async (t) => {
  const { page, errors, panel, tab } = await openTiny(t);
  await tab('Generate & rank');
  await panel().getByLabel('Prompt', { exact: true }).fill('Once upon a time, Lily went to the park');
  await setField(page, 'Samples', 4);
  await setField(page, 'Temperature', 1);
  await setField(page, 'Max tokens', 16);

  await tab('Constitution');
  const p = panel();
  assert.equal(await p.getByLabel('Principle 1', { exact: true }).inputValue(), 'Was that rude?');
  await p.getByLabel('Principle 2', { exact: true }).fill('Was that sad?');
  await p.getByLabel('Principle 2', { exact: true }).dispatchEvent('change');
  await p.getByRole('button', { name: '+ principle' }).click();
  await p.getByLabel('Principle 3', { exact: true }).fill('Was that boring?');
  await p.getByLabel('Principle 3', { exact: true }).dispatchEvent('change');
  await p.getByText(/Prompt: the Generate tab's, "Once upon a time, Lily went to the park"/).waitFor();
  await p.getByRole('button', { name: 'Judge and label' }).click();
  const summary = p.getByLabel('Self-judgement summary');
  await page.waitForFunction(() => /^4 answers: mean self-score/.test(document.querySelector('[aria-label="Self-judgement summary"]')?.textContent ?? ''), null, { timeout: 120_000 });
  const table = p.getByRole('table', { name: 'Self-judgements' });
  assert.deepEqual((await table.locator('thead th').allInnerTexts()).slice(2), ['Was that rude?', 'Was that sad?', 'Was that boring?', 'Self-score', 'Judges']);
  const rows = table.locator('tbody tr');
  assert.equal(await rows.count(), 4);
  // Each row: three P(yes) in [0, 1] and a self-score of 1 minus their mean.
  for (let r = 0; r < 4; r++) {
    const cells = (await rows.nth(r).locator('td').allInnerTexts()).slice(2).map(Number);
    assert.ok(cells.slice(0, 3).every((x) => x >= 0 && x <= 1), `${cells}`);
    assert.ok(Math.abs(cells[3] - (1 - (cells[0] + cells[1] + cells[2]) / 3)) <= 0.011, `${cells}`);
  }
  const status = await p.getByRole('status', { name: 'Self-alignment status' }).innerText();
  const added = Number(status.match(/(\d+) pairs added/)[1]);
  assert.ok(added >= 1 && added <= 2, status);
  await shot(page, 'constitution');
  await tab('Data');
  await page.getByText(/Once upon a time, Lily went to the park/).first().waitFor();

  await page.reload();
  await modelReady(page, 'stories260K.bin');
  await tab('Constitution');
  assert.equal(await panel().getByLabel('Principle 3', { exact: true }).inputValue(), 'Was that boring?');
  assert.equal(await panel().getByRole('table', { name: 'Self-judgements' }).locator('tbody tr').count(), 4);
  assert.deepEqual(errors.filter((e) => !/favicon/.test(e)), []);
});
