// Whose preferences, clicked through on the tiny stories260K model (CPU): the teacher opens the
// sample class (four raters in two groups that want opposite answer lengths), reads the group
// agreement, trains one adapter per group and one merged, and sees each group's adapter win on its
// own held-out comparisons; regrouping a rater changes the groups; a reload keeps the groups and
// the table.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HAVE_TINY, openTiny, modelReady, setField, shot } from './lib.mjs';

const skip = HAVE_TINY ? false : 'needs ../shared/models/stories260K (see ../shared/README.md)';

/** The summary's three shares, as fractions: own, other, merged. */
const shares = (text) => {
  const m = text.match(/own pairs: (\d+)%.*other groups' pairs: (\d+)%.*over the groups: (\d+)%/);
  assert.ok(m, text);
  return m.slice(1).map((x) => Number(x) / 100);
};

test('rater groups: agreement, one adapter per group, each on every group', { skip, timeout: 10 * 60_000 }, async (t) => {
  const { page, errors, panel, tab } = await openTiny(t);
  // The Train tab's settings are the group adapters' (the method is DPO whatever it shows).
  await tab('Train');
  await setField(panel(), 'Steps', 12);
  await setField(panel(), 'Learning rate', 0.005);
  await setField(panel(), 'Held out', 0.25);

  await tab('Class');
  const p = panel();
  await p.getByRole('button', { name: 'Open the sample class' }).click();
  const raters = p.getByRole('table', { name: 'Rater groups' }).locator('tbody tr');
  await raters.first().waitFor();
  assert.equal(await raters.count(), 4);
  assert.equal(await p.getByLabel('Group of Chloe').inputValue(), 'thorough');
  const agree = p.getByRole('table', { name: 'Group agreement' });
  assert.deepEqual(await agree.locator('thead th').allInnerTexts(), ['Groups agree', 'brief (14 pairs)', 'thorough (15 pairs)']);
  assert.match(await agree.locator('tbody tr').nth(0).locator('td').nth(1).innerText(), /^0% of \d+ · κ -0\.\d\d/);

  await p.getByRole('button', { name: 'Train the group adapters' }).click();
  const summary = p.getByLabel('Group summary');
  await summary.waitFor({ timeout: 300_000 });
  await page.waitForFunction(() => !document.querySelector('.class button.primary')?.disabled, null, { timeout: 300_000 });
  const [own, other, merged] = shares(await summary.innerText());
  assert.ok(own >= 0.75 && other <= 0.25, `each group's adapter on its own pairs ${own}, on the other's ${other}`);
  assert.ok(merged > other && merged < own, `the merged adapter lands in between: ${merged}`);
  const rows = p.getByRole('table', { name: 'Group adapters' }).locator('tbody tr');
  assert.deepEqual((await rows.locator('th').allInnerTexts()).map((x) => x.split(' (')[0]), ['brief', 'thorough', 'merged']);
  await shot(page, 'class-groups');

  // Dev joins brief: the groups change at once.
  await p.getByLabel('Group of Dev').fill('brief');
  await p.getByLabel('Group of Dev').dispatchEvent('change');
  await page.waitForFunction(() => /brief \(\d+ pairs\)/.test(document.querySelector('[aria-label="Group agreement"] thead')?.textContent ?? '')
    && !/brief \(14 pairs\)/.test(document.querySelector('[aria-label="Group agreement"] thead')?.textContent ?? ''));

  await page.reload();
  await modelReady(page, 'stories260K.bin');
  await tab('Class');
  assert.equal(await panel().getByLabel('Group of Dev').inputValue(), 'brief');
  assert.equal(await panel().getByRole('table', { name: 'Group adapters' }).locator('tbody tr').count(), 3);
  assert.deepEqual(errors.filter((e) => !/favicon/.test(e)), []);
});
