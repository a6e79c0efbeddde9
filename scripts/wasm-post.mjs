// After trunk: the built wasm without what only a debugger reads, and every text and wasm asset
// precompressed for static hosts that serve .br/.gz as they are (nginx's brotli_static and
// gzip_static, Caddy's precompressed, our test server).
//   node scripts/wasm-post.mjs dist
// - Refuses a module whose exports re-run the static constructors on every call: wasm-ld wraps
//   every export of a module whose constructors nobody calls explicitly, so each callback from
//   JavaScript re-ran them all and froze the page; src/bin/*.rs call them once instead. The
//   wrappers show in the name section, read here before it is stripped.
// - Strips the custom sections a browser never reads (function names, producers): about a sixth
//   of the worker. Rust panics still say their file and line; for wasm stack traces with
//   function names, build with ALIGNLAB_KEEP_NAMES=1.
// - Puts the new hashes into index.html's integrity attributes (subresource integrity).
// - Writes NAME.gz (gzip -9) and NAME.br (brotli) beside each asset (scripts/build-web prints
//   the wasm's sizes).
import { createHash } from 'node:crypto';
import { readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { brotliCompressSync, constants, gzipSync } from 'node:zlib';

const dir = process.argv[2] ?? 'dist';
const DROP = new Set(process.env.ALIGNLAB_KEEP_NAMES === '1' ? [] : ['name', 'producers', 'target_features', 'external_debug_info', 'sourceMappingURL']);

function uleb(bytes, at) {
  let value = 0, shift = 0, b;
  do {
    b = bytes[at++];
    value += (b & 0x7f) * 2 ** shift;
    shift += 7;
  } while (b & 0x80);
  return [value, at];
}

// The module with its debug-only custom sections left out (sections copied byte for byte), and
// whether its names show export wrappers.
function strip(bytes) {
  if (bytes.readUInt32LE(0) !== 0x6d736100) throw new Error('not a wasm module');
  const keep = [bytes.subarray(0, 8)];
  let wrapped = false;
  let at = 8;
  while (at < bytes.length) {
    const start = at;
    const id = bytes[at++];
    let size;
    [size, at] = uleb(bytes, at);
    const end = at + size;
    if (end > bytes.length) throw new Error('truncated section');
    let drop = false;
    if (id === 0) {
      const [len, p] = uleb(bytes, at);
      const name = bytes.subarray(p, p + len).toString('utf8');
      wrapped ||= name === 'name' && bytes.subarray(p + len, end).includes('command_export');
      drop = DROP.has(name);
    }
    if (!drop) keep.push(bytes.subarray(start, end));
    at = end;
  }
  return { stripped: Buffer.concat(keep), wrapped };
}

const sri = (b) => `sha384-${createHash('sha384').update(b).digest('base64')}`;

const htmlPath = join(dir, 'index.html');
let html = readFileSync(htmlPath, 'utf8');
for (const f of readdirSync(dir).filter((f) => f.endsWith('.wasm'))) {
  const path = join(dir, f);
  const before = readFileSync(path);
  const { stripped: after, wrapped } = strip(before);
  if (wrapped) {
    console.error(`wasm-post: ${path} wraps its exports in __wasm_call_ctors (see src/bin/app.rs)`);
    process.exit(1);
  }
  if (after.length === before.length) continue;
  writeFileSync(path, after);
  html = html.replaceAll(sri(before), sri(after));
}
writeFileSync(htmlPath, html);

// Precompressed copies of what a first visit downloads (the models are compressed already).
const walk = (d) => readdirSync(d).flatMap((f) => (statSync(join(d, f)).isDirectory() ? (f === 'models' ? [] : walk(join(d, f))) : [join(d, f)]));
for (const path of walk(dir).filter((p) => /\.(wasm|js|css|html|json|svg)$/.test(p))) {
  const raw = readFileSync(path);
  const gz = gzipSync(raw, { level: 9 });
  const br = brotliCompressSync(raw, { params: { [constants.BROTLI_PARAM_QUALITY]: raw.length > 4e6 ? 9 : 11, [constants.BROTLI_PARAM_SIZE_HINT]: raw.length } });
  writeFileSync(`${path}.gz`, gz);
  writeFileSync(`${path}.br`, br);
}
