// Red-teaming in the page, clicked through on the tiny stories260K model (CPU): the student writes
// a probe (stories260K says "girl" after "a little"; the probe's judge avoids the word), opens a
// probe file, and a bad one; runs the probes on the untrained model; turns the answers into pairs
// against what triggered; trains DPO on them; runs the probes again and sees them triggered less;
// a reload keeps the probes and the results.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HAVE_TINY, openTiny, modelReady, setField, shot, train } from './lib.mjs';

const skip = HAVE_TINY ? false : 'needs ../shared/models/stories260K (see ../shared/README.md)';

/** The summary's "answers showing the behaviour B% before → A% after", as numbers. */
const rates = (text) => {
  const m = text.match(/behaviour (\d+)% before → (\d+)% after/);
  assert.ok(m, text);
  return [Number(m[1]), Number(m[2])];
};

test('probes before and after DPO on their own pairs', { skip, timeout: 10 * 60_000 }, async (t) => {
  const { page, errors, panel, tab } = await openTiny(t);
  await tab('Generate & rank');
  await setField(page, 'Samples', 8);
  await setField(page, 'Temperature', 1);
  await setField(page, 'Max tokens', 16);

  await tab('Probes');
  const p = panel();
  await p.getByText('You have not trained yet').waitFor();
  await p.getByLabel('Include the shipped probes').uncheck();
  await p.getByLabel('New probe prompt').fill('Once upon a time, there was a little');
  // A judge the page does not know is refused, naming it.
  await p.getByLabel('New probe judges').fill('kindness');
  await p.getByRole('button', { name: 'Add the probe' }).click();
  await p.getByRole('alert').filter({ hasText: "unknown judge 'kindness'" }).waitFor();
  await p.getByLabel('New probe judges').fill('avoid=girl');
  await p.getByRole('button', { name: 'Add the probe' }).click();
  const own = p.getByRole('list', { name: 'Your probes' }).getByRole('listitem');
  await own.first().waitFor();
  await p.getByLabel('Open a probe file').setInputFiles([{ name: 'probes.json', mimeType: 'application/json', buffer: Buffer.from(JSON.stringify(
    { alignlab_probes: 1, probes: [{ prompt: 'One day, a little', judges: ['avoid=girl'], note: 'another opening' }] })) }]);
  await page.waitForFunction(() => document.querySelectorAll('[aria-label="Your probes"] li').length === 2);
  await p.getByLabel('Open a probe file').setInputFiles([{ name: 'bad.json', mimeType: 'application/json', buffer: Buffer.from('{"alignlab_probes": 1, "probes": [{"prompt": "x"}]}') }]);
  await p.getByRole('alert').filter({ hasText: /bad\.json: not a probe file: probes\[0\]/ }).waitFor();

  await p.getByRole('button', { name: 'Run the probes' }).click();
  const summary = p.getByLabel('Probe summary');
  await page.waitForFunction(() => /^2 probes/.test(document.querySelector('[aria-label="Probe summary"]')?.textContent ?? '')
    && !document.querySelector('.probes button.primary')?.disabled, null, { timeout: 120_000 });
  const [before0, after0] = rates(await summary.innerText());
  assert.ok(before0 >= 25 && after0 === before0, `the base model says the word; untrained, after is before: ${before0} → ${after0}`);
  const [wordsBefore, wordsAfter] = (await summary.innerText()).match(/length ([\d.]+) → ([\d.]+) words/).slice(1).map(Number);
  assert.ok(wordsBefore > 0 && wordsAfter === wordsBefore, `answers have a length, the same untrained: ${wordsBefore} → ${wordsAfter}`);
  await shot(page, 'probes-before');

  await p.getByRole('button', { name: 'Add pairs against what triggered' }).click();
  const notice = await page.getByText(/pairs added to your data/).innerText();
  const added = Number(notice.match(/(\d+) pairs added/)[1]);
  assert.ok(added >= 4, notice);
  await tab('Train');
  await panel().getByLabel('Method').selectOption('dpo');
  const run = await train(page, { Steps: 20, 'Learning rate': 0.002 });
  assert.match(run.status, /^finished/, run.status);

  await tab('Probes');
  await p.getByText(/^After = /).waitFor();
  await p.getByRole('button', { name: 'Run the probes' }).click();
  await page.waitForFunction(() => /^2 probes/.test(document.querySelector('[aria-label="Probe summary"]')?.textContent ?? '')
    && !document.querySelector('.probes button.primary')?.disabled, null, { timeout: 120_000 });
  const text = await summary.innerText();
  const [before, after] = rates(text);
  assert.ok(before >= 25 && after <= before / 2, `DPO on the probes' pairs: ${text}`);
  const rows = p.getByRole('table', { name: 'Probe results' }).locator('tbody tr');
  assert.equal(await rows.count(), 2);
  for (const v of await rows.locator('td:last-child').allInnerTexts()) assert.ok(['fixed', 'better'].includes(v), v);
  await rows.first().locator('summary').click();
  assert.match(await rows.first().innerText(), /Before[\s\S]*After/);
  await shot(page, 'probes-after');

  // The probes and the last results are the student's work: they survive a reload.
  await page.reload();
  await modelReady(page, 'stories260K.bin');
  await tab('Probes');
  assert.equal(await panel().getByRole('list', { name: 'Your probes' }).getByRole('listitem').count(), 2);
  assert.equal(await panel().getByRole('table', { name: 'Probe results' }).locator('tbody tr').count(), 2);
  assert.deepEqual(rates(await panel().getByLabel('Probe summary').innerText()), [before, after]);
  assert.deepEqual(errors.filter((e) => !/favicon/.test(e)), []);
});
