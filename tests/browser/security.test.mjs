// The page as a hostile world meets it: its Content-Security-Policy is in force (an injected
// inline script does not run), a link that names a model on another site asks first (and
// declining downloads nothing), and imported text is shown as text, never as HTML.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { serve } from './server.mjs';
import { HAVE_TINY, TINY, importJsonl, launch, modelReady, shot } from './lib.mjs';

const skip = HAVE_TINY ? false : 'needs ../shared/models/stories260K (see ../shared/README.md)';

test('CSP, cross-origin model links and imported text', { skip, timeout: 10 * 60_000 }, async (t) => {
  const { server, hosts, base } = await serve();
  const { ctx, page, errors } = await launch();
  t.after(async () => { await ctx.close().catch(() => {}); server.close(); });

  await t.test('the CSP refuses an inline script and the app still runs', async () => {
    const violations = [];
    await page.exposeFunction('reportViolation', (d) => violations.push(d));
    await page.addInitScript(() => document.addEventListener('securitypolicyviolation', (e) => window.reportViolation(e.violatedDirective)));
    await page.goto(`${base}/${TINY}&backend=cpu`);
    await modelReady(page, 'stories260K.bin');
    const csp = await page.locator('meta[http-equiv="Content-Security-Policy"]').getAttribute('content');
    assert.match(csp, /script-src 'self' 'wasm-unsafe-eval'/);
    assert.doesNotMatch(csp, /unsafe-inline'[^;]*;?\s*$|script-src[^;]*unsafe-inline/);
    assert.equal(await page.locator('script:not([src])').count(), 0, 'no inline script in the page');
    const ran = await page.evaluate(() => {
      const s = document.createElement('script');
      s.textContent = 'window.__inlineRan = true';
      document.body.appendChild(s);
      return window.__inlineRan === true;
    });
    assert.equal(ran, false, 'an injected inline script must not run');
    await page.waitForTimeout(200);
    assert.ok(violations.some((d) => d.startsWith('script-src')), `a violation is reported: ${violations}`);
  });

  await t.test('a model on another site loads only after the page asks', async () => {
    const other = base.replace('127.0.0.1', 'localhost');
    const link = `${base}/?model=${other}/test-models/stories260K.bin&tokenizer=${other}/test-models/tok512.bin&backend=cpu`;
    const asked = [];
    page.once('dialog', (d) => { asked.push(d.message()); d.dismiss(); });
    hosts.length = 0;
    await page.goto(link);
    // Declining is a choice, not a failure: a neutral notice, no error.
    const notice = page.locator('.banner.info', { hasText: 'you declined, so nothing was downloaded' });
    await notice.waitFor({ timeout: 30_000 });
    assert.match(asked[0] ?? '', /download a model from http:\/\/localhost:\d+, a site other than this one/);
    assert.equal(await page.getByRole('alert').count(), 0, 'no error banner for a declined download');
    assert.ok(!hosts.some((h) => h.startsWith('localhost')), `nothing was fetched from the other site: ${hosts}`);
    await shot(page, 'cross-origin-declined');

    page.once('dialog', (d) => { asked.push(d.message()); d.accept(); });
    await page.goto(link);
    await modelReady(page, 'stories260K.bin');
    assert.equal(asked.length, 2);
    assert.ok(hosts.some((h) => h.startsWith('localhost')), 'accepted: the model came from the other site');
  });

  await t.test('imported text is shown as text, never run as HTML', async () => {
    const evil = '<img src=x onerror="window.__xss=1"><b>bold</b>';
    await importJsonl(page, [{ prompt: evil, chosen: 'fine', rejected: '<script>window.__xss=2</script>' }]);
    const table = page.getByRole('table', { name: 'Preference pairs' });
    await table.getByText(evil, { exact: false }).first().waitFor({ timeout: 10_000 });
    assert.equal(await table.locator('img, b, script').count(), 0, 'no element made from imported text');
    assert.equal(await page.evaluate(() => window.__xss), undefined);
    await shot(page, 'imported-text');
  });

  assert.deepEqual(errors.filter((e) => !/Failed to load resource|Content Security Policy|Content-Security-Policy/.test(e)), [], 'no page errors');
});
