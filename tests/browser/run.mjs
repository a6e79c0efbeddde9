// Runs the browser tests two files at a time (200 s instead of 268 one at a time on 2 cores; each
// file has its own server and browser) and ends with the line CI counts. ALIGNLAB_BROWSER_JOBS=1
// runs them one at a time, to read one file's log alone.
import { run } from 'node:test';
import { spec } from 'node:test/reporters';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';

const only = process.argv.slice(2);
const files = readdirSync(import.meta.dirname)
  .filter((f) => f.endsWith('.test.mjs') && (only.length === 0 || only.some((o) => f.includes(o))))
  .map((f) => join(import.meta.dirname, f));
let passed = 0, failed = 0, skipped = 0;
const stream = run({ files, concurrency: Number(process.env.ALIGNLAB_BROWSER_JOBS ?? 2), timeout: 30 * 60_000 });
stream.on('test:pass', (d) => { if (d.details?.type !== 'suite' && d.nesting === 0) { if (d.skip) skipped++; else passed++; } });
stream.on('test:fail', (d) => { if (d.details?.type !== 'suite' && d.nesting === 0) failed++; });
stream.compose(new spec()).pipe(process.stdout);
stream.on('end', () => {
  console.log(`browser: ${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
  // A test skipped for want of ../shared says why above; running nothing at all is a failure.
  process.exitCode = failed || (!passed && !skipped) ? 1 : 0;
});
