// Nothing the user made is lost: a page reloaded (its worker killed) in the middle of training
// finds the last snapshot of the adapter (or of a full fine-tune's weights) restored, and a stored record that cannot be read is kept
// aside and offered for download, never overwritten.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { serve } from './server.mjs';
import { HAVE_TINY, TINY, importJsonl, launch, modelReady, setField, shot } from './lib.mjs';

const skip = HAVE_TINY ? false : 'needs ../shared/models/stories260K (see ../shared/README.md)';

/** The keys of the page's IndexedDB store. */
const keys = (page) => page.evaluate(() => new Promise((ok, fail) => {
  const open = indexedDB.open('alignlab', 1);
  open.onerror = () => fail(open.error);
  open.onsuccess = () => {
    const req = open.result.transaction('kv').objectStore('kv').getAllKeys();
    req.onsuccess = () => { open.result.close(); ok(req.result); };
    req.onerror = () => fail(req.error);
  };
}));

test('snapshots during training and unreadable records kept aside', { skip, timeout: 6 * 60_000 }, async (t) => {
  const { server, base } = await serve();
  const { ctx, page, errors } = await launch();
  t.after(async () => { await ctx.close().catch(() => {}); server.close(); });

  await t.test('a reload in the middle of training restores the last snapshot', async () => {
    await page.goto(`${base}/${TINY}&backend=cpu`);
    await modelReady(page, 'stories260K.bin');
    const rows = ['Lily', 'Tom', 'Ben', 'Sue'].map((who) => ({ prompt: `Once upon a time, ${who} went to the park`, chosen: ' and she was very happy.', rejected: ' and it was sad and dark.' }));
    await importJsonl(page, rows);
    await page.getByRole('tab', { name: 'Train' }).click();
    const p = page.getByRole('tabpanel');
    await setField(p, 'Steps', 2000);
    await p.getByRole('button', { name: 'Train', exact: true }).click();
    // The worker hands its adapter to the page every few seconds; wait for one in the database.
    await page.waitForFunction(() => /^running/.test(document.querySelector('[aria-label="Training status"]')?.textContent ?? ''), null, { timeout: 60_000 });
    // The worker hands its adapter to the page every 5 s of training, and when a run pauses.
    await page.waitForTimeout(6_000);
    await p.getByRole('button', { name: 'Pause' }).click();
    await page.waitForFunction(() => /^paused/.test(document.querySelector('[aria-label="Training status"]')?.textContent ?? ''), null, { timeout: 60_000 });
    await page.waitForTimeout(1_000); // the snapshot's write to IndexedDB
    await page.reload(); // the worker dies with the page, its run unfinished
    await modelReady(page, 'stories260K.bin');
    await page.getByText('Restored your last adapter').waitFor({ timeout: 60_000 });
    await page.getByRole('tab', { name: 'Generate & rank' }).click();
    await page.getByRole('tabpanel').getByText(/^Policy: LoRA r=8/).waitFor({ timeout: 30_000 });
    await shot(page, 'snapshot-restored');
  });

  await t.test('a full fine-tune is kept too, and comes back after a reload', async () => {
    await page.getByRole('tab', { name: 'Train' }).click();
    const p = page.getByRole('tabpanel');
    await p.getByRole('button', { name: 'Reset to base model' }).click();
    await p.getByText(/^Policy: the base model/).waitFor();
    await p.getByLabel('LoRA', { exact: true }).uncheck();
    await setField(p, 'Steps', 3);
    await p.getByRole('button', { name: 'Train', exact: true }).click();
    await page.waitForFunction(() => /^finished/.test(document.querySelector('[aria-label="Training status"]')?.textContent ?? ''), null, { timeout: 120_000 });
    await p.getByText(/^Policy: fully fine-tuned weights after DPO \(3 steps\)/).waitFor({ timeout: 30_000 });
    await page.waitForTimeout(1_000); // the snapshot's write to IndexedDB
    const all = await keys(page);
    assert.ok(all.includes('weights'), `the weights are stored: ${all}`);
    await page.reload();
    await modelReady(page, 'stories260K.bin');
    await page.getByText('Restored your last fine-tuned weights').waitFor({ timeout: 60_000 });
    await page.getByRole('tab', { name: 'Train' }).click();
    await page.getByRole('tabpanel').getByText(/^Policy: fully fine-tuned weights after training in your last session/).waitFor({ timeout: 30_000 });
    // No adapter to export from a full fine-tune; its weights leave as an HF checkpoint.
    const panel = page.getByRole('tabpanel');
    assert.ok(await panel.getByRole('button', { name: 'Export adapter' }).isDisabled(), 'Export adapter is off for a full fine-tune');
    assert.ok(await panel.getByRole('button', { name: 'Export merged model' }).isEnabled());
    await shot(page, 'full-finetune-restored');
    // Back to LoRA for what follows.
    await page.getByRole('tabpanel').getByLabel('LoRA', { exact: true }).check();
  });

  await t.test('a damaged record is kept aside, offered for download, and not overwritten', async () => {
    await page.evaluate(() => new Promise((ok, fail) => {
      const open = indexedDB.open('alignlab', 1);
      open.onsuccess = () => {
        const tx = open.result.transaction('kv', 'readwrite');
        tx.objectStore('kv').put({ version: 2, data: { not: 'a list of pairs' } }, 'pairs');
        tx.oncomplete = () => { open.result.close(); ok(); };
        tx.onerror = () => fail(tx.error);
      };
      open.onerror = () => fail(open.error);
    }));
    await page.reload();
    await modelReady(page, 'stories260K.bin');
    const alert = page.getByRole('alert').filter({ hasText: 'could not be read' });
    await alert.waitFor({ timeout: 30_000 });
    assert.match(await alert.innerText(), /the saved 'pairs' could not be read .* kept aside as 'unreadable:pairs:\d+'/s);
    assert.match(await alert.innerText(), /^A saved record could not be read\s/, 'titled as a read, not a failed save');
    // New work is saved as usual; the damaged copy stays.
    await importJsonl(page, [{ prompt: 'A new prompt', chosen: 'yes', rejected: 'no' }]);
    await page.waitForTimeout(500);
    const all = await keys(page);
    const aside = all.find((k) => k.startsWith('unreadable:pairs:'));
    assert.ok(aside, `kept aside: ${all}`);
    const section = page.getByRole('region', { name: 'Records the lab could not read' });
    await section.waitFor({ timeout: 10_000 });
    const [download] = await Promise.all([page.waitForEvent('download'), section.getByRole('button', { name: `Download ${aside}` }).click()]);
    const saved = JSON.parse(readFileSync(await download.path(), 'utf8'));
    assert.deepEqual(saved, { version: 2, data: { not: 'a list of pairs' } }, 'downloaded exactly as it was stored');
    await shot(page, 'unreadable-kept');
  });

  assert.deepEqual(errors.filter((e) => !/Failed to load resource/.test(e)), [], 'no page errors');
});
