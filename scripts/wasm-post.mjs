// After trunk: the built wasm without what only a debugger reads, and every text and wasm asset
// precompressed for static hosts that serve .br/.gz as they are (nginx's brotli_static and
// gzip_static, Caddy's precompressed, our test server).
//   node scripts/wasm-post.mjs dist
// - Strips the custom sections a browser never reads (function names, producers): about a sixth
//   of the worker. Rust panics still say their file and line; for wasm stack traces with
//   function names, build with ALIGNLAB_KEEP_NAMES=1. The post-build hook reads the names first.
// - Puts the new hashes into index.html's integrity attributes (subresource integrity).
// - Writes NAME.gz (gzip -9) and NAME.br (brotli, best) beside each asset; prints the sizes.
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

// The module with its debug-only custom sections left out; sections are copied byte for byte.
function strip(bytes) {
  if (bytes.readUInt32LE(0) !== 0x6d736100) throw new Error('not a wasm module');
  const keep = [bytes.subarray(0, 8)];
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
      drop = DROP.has(bytes.subarray(p, p + len).toString('utf8'));
    }
    if (!drop) keep.push(bytes.subarray(start, end));
    at = end;
  }
  return Buffer.concat(keep);
}

const sri = (b) => `sha384-${createHash('sha384').update(b).digest('base64')}`;
const mb = (n) => (n / 1e6).toFixed(2).padStart(6);

const htmlPath = join(dir, 'index.html');
let html = readFileSync(htmlPath, 'utf8');
for (const f of readdirSync(dir).filter((f) => f.endsWith('.wasm'))) {
  const path = join(dir, f);
  const before = readFileSync(path);
  const after = strip(before);
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
  if (path.endsWith('.wasm')) console.log(`wasm-post: ${path.slice(dir.length + 1).padEnd(30)} ${mb(raw.length)} MB raw, ${mb(gz.length)} MB gzip, ${mb(br.length)} MB brotli`);
}
