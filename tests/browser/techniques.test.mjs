// Alignment without training, clicked through on the tiny stories260K model (CPU): the Prompting
// tab (edit the starter variants, add an example, type a reference answer, try them side by side,
// still there after a reload) and the Documents tab (ask with and without the sample documents,
// add your own file, a refused file, the fact set's table and shares, kept after a reload; a
// damaged sample file beside the page named, the student's own files still answering).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { serve } from './server.mjs';
import { HAVE_TINY, launch, openTiny, modelReady, setField, shot, TINY } from './lib.mjs';

const skip = HAVE_TINY ? false : 'needs ../shared/models/stories260K (see ../shared/README.md)';

test('prompt variants and answers from documents', { skip, timeout: 15 * 60_000 }, async (t) => {
  const { page, errors, panel, tab } = await openTiny(t);
  // Short answers keep the tiny model quick; greedy so reruns agree.
  await tab('Generate & rank');
  await setField(page, 'Max tokens', 12);
  await setField(page, 'Temperature', 0);

  await t.test('one question under four variants, an edited one and a reference answer', async () => {
    await tab('Prompting');
    const p = panel();
    assert.equal(await p.getByRole('group', { name: /^Variant \d$/ }).count(), 4, 'four starter variants');
    await p.getByLabel('Question', { exact: true }).fill('Who went to the park?');
    await p.getByLabel('Reference answer').fill('Lily went to the park with her mom.');
    // The student makes the second variant their own and gives the fourth an example.
    const second = p.getByRole('group', { name: 'Variant 2' });
    await second.getByLabel('Variant name').fill('storyteller');
    await second.getByLabel('System prompt').fill('Tell it like a bedtime story.');
    const fourth = p.getByRole('group', { name: 'Variant 4' });
    await fourth.getByRole('button', { name: '+ example' }).click();
    await fourth.getByLabel('Example question').fill('Who went to the shop?');
    await fourth.getByLabel('Example answer').fill('Lily went to the shop with her mom.');
    await p.getByRole('button', { name: 'Try the variants' }).click();
    const cards = p.getByRole('list', { name: 'Variant answers' }).getByRole('article');
    await page.waitForFunction(() => document.querySelectorAll('[aria-label="Variant answers"] .score').length === 4
      && [...document.querySelectorAll('[aria-label="Variant answers"] .score')].every((s) => /nats\/token/.test(s.textContent)), null, { timeout: 120_000 });
    const scores = await cards.locator('.score').allInnerTexts();
    const lps = scores.map((s) => Number(s.match(/reference answer (-?[\d.]+) nats\/token/)[1]));
    assert.ok(lps.every((x) => Number.isFinite(x) && x < 0), `log-probs: ${scores}`);
    assert.ok(new Set(lps).size > 1, `each prompt gives the reference another log-prob: ${lps}`);
    assert.match(await cards.nth(1).innerText(), /storyteller/);
    const tokens = (await cards.locator('header .muted').allInnerTexts()).map((s) => Number(s.match(/(\d+) prompt tokens/)[1]));
    assert.ok(tokens[3] > tokens[0], `an example lengthens the prompt: ${tokens}`);
    await shot(page, 'prompting-variants');
    // The variants are the student's work: they survive a reload.
    await page.reload();
    await modelReady(page, 'stories260K.bin');
    await tab('Prompting');
    assert.equal(await panel().getByRole('group', { name: 'Variant 2' }).getByLabel('System prompt').inputValue(), 'Tell it like a bedtime story.');
    assert.equal(await panel().getByRole('group', { name: 'Variant 4' }).getByLabel('Example answer').inputValue(), 'Lily went to the shop with her mom.');
  });

  await t.test('answers with and without the documents, a student file, and the fact set', async () => {
    await tab('Documents');
    const p = panel();
    await p.getByLabel('Document question').fill('What year was the Quenby lighthouse first lit?');
    await p.getByRole('button', { name: 'Ask', exact: true }).click();
    const passages = p.getByRole('list', { name: 'Retrieved passages' });
    await passages.waitFor({ timeout: 60_000 });
    assert.match(await passages.getByRole('listitem').first().innerText(), /lighthouse\.md[\s\S]*1887/);
    assert.equal(await p.getByRole('article', { name: 'Without documents' }).count(), 1);
    assert.equal(await p.getByRole('article', { name: 'With documents' }).count(), 1);
    await shot(page, 'documents-ask');

    // A file of the student's own, and one that is not text.
    await p.getByLabel('Add documents').setInputFiles([
      { name: 'pets.md', mimeType: 'text/markdown', buffer: Buffer.from('# Pets\n\nOur cat Pumpernickel sleeps on the blue sofa.\n') },
      { name: 'photo.md', mimeType: 'text/markdown', buffer: Buffer.from([0xff, 0xfe, 0x00, 0x81]) },
    ]);
    await p.getByRole('alert').filter({ hasText: 'photo.md is not UTF-8 text' }).waitFor();
    await p.getByRole('list', { name: 'Your documents' }).getByText(/pets\.md/).waitFor();
    await p.getByLabel('Document question').fill('Where does the cat sleep?');
    await p.getByRole('button', { name: 'Ask', exact: true }).click();
    await page.waitForFunction(() => /pets\.md/.test(document.querySelector('[aria-label="Retrieved passages"] li')?.textContent ?? ''), null, { timeout: 60_000 });

    await p.getByRole('button', { name: 'Check the facts' }).click();
    const summary = p.getByLabel('Fact summary');
    await page.waitForFunction(() => /^20 of 20 questions/.test(document.querySelector('[aria-label="Fact summary"]')?.textContent ?? ''), null, { timeout: 300_000 });
    const text = await summary.innerText();
    assert.match(text, /retrieved for 100%/, text);
    assert.equal(await p.getByRole('table', { name: 'Fact checks' }).locator('tbody tr').count(), 20);
    await shot(page, 'documents-facts');

    // Without the sample set the fact questions find nothing of theirs: retrieval drops.
    await p.getByLabel('Include the sample documents').uncheck();
    await p.getByRole('button', { name: 'Check the facts' }).click();
    await page.waitForFunction(() => /^20 of 20 questions.*retrieved for 0%/.test(document.querySelector('[aria-label="Fact summary"]')?.textContent ?? ''), null, { timeout: 300_000 });
    await page.reload();
    await modelReady(page, 'stories260K.bin');
    await tab('Documents');
    await panel().getByRole('list', { name: 'Your documents' }).getByText(/pets\.md/).waitFor();
    assert.equal(await panel().getByLabel('Include the sample documents').isChecked(), false);
  });

  await t.test('a damaged sample file beside the page is named, and the student\'s own documents still answer', async () => {
    // The sample library, fact set, probes and class are fetched beside the page, not built in.
    const odd = await serve({ override: { '/library/facts.json': JSON.stringify({ alignlab_facts: 1, facts: [] }) } });
    const { ctx, page: other } = await launch();
    try {
      await other.goto(`${odd.base}/${TINY}&backend=cpu`);
      await modelReady(other, 'stories260K.bin');
      await other.getByRole('tab', { name: 'Documents', exact: true }).click();
      const p = other.getByRole('tabpanel');
      const alert = p.getByRole('alert').filter({ hasText: 'library/facts.json' });
      await alert.waitFor({ timeout: 30_000 });
      assert.match(await alert.innerText(), /sample files beside the page did not load \(library\/facts\.json: a fact file holds 1 to \d+ questions; this one has 0\): reload the page, or untick/);
      await p.getByLabel('Include the sample documents').uncheck();
      await p.getByLabel('Add documents').setInputFiles([
        { name: 'pets.md', mimeType: 'text/markdown', buffer: Buffer.from('# Pets\n\nOur cat Pumpernickel sleeps on the blue sofa.\n') },
      ]);
      await p.getByLabel('Document question').fill('Where does the cat sleep?');
      await p.getByRole('button', { name: 'Ask', exact: true }).click();
      await p.getByRole('list', { name: 'Retrieved passages' }).getByText(/pets\.md/).waitFor({ timeout: 60_000 });
      await shot(other, 'documents-samples-damaged');
    } finally {
      await ctx.close();
      odd.server.close();
    }
  });

  assert.deepEqual(errors.filter((e) => !/favicon/.test(e)), []);
});
