// Assembles the static site in dist/ from wasm-bindgen's output and www/ (scripts/build-web runs
// it; no bundler, no trunk):
//   node scripts/web-dist.mjs STAGE DIST
// STAGE holds app.js, app_bg.wasm (wasm-bindgen --target web) and worker.js, worker_bg.wasm,
// worker_mt.js, worker_mt_bg.wasm (--target no-modules, for classic Web Workers). DIST is
// replaced only once the new copy is whole, so a failed build leaves the previous one:
// - the page's and the engines' code named by its hash (app-<hash>.js, app-<hash>_bg.wasm, style-<hash>.css, and each
//   engine build's worker-<hash>_loader.js, worker-<hash>.js, worker-<hash>_bg.wasm,
//   worker-<hash>_rest_bg.wasm), so a new deploy is never mixed with an old copy a browser kept,
//   nor with the files an open page fetches later (the second module of the engine it runs, its
//   threads' workers, an engine started again). The page learns its engines' names from its
//   loader (`self.alignlabWorkers`), each engine its files' from its own;
// - index.html from www/index.html with the stylesheet, preloads and loader added, each with its
//   integrity hash; the loader is a file, init-<hash>.js, so the Content-Security-Policy can
//   refuse every inline script; it also names each engine build's files;
// - the wasm without the custom sections a browser never reads (function names, producers):
//   about a sixth of the worker. Rust panics still say their file and line; for wasm stack
//   traces with function names, build with ALIGNLAB_KEEP_NAMES=1;
// - refuses a module whose exports re-run the static constructors on every call: wasm-ld wraps
//   every export of a module whose constructors nobody calls explicitly, so each callback from
//   JavaScript re-ran them all and froze the page; src/bin/*.rs call them once instead. The
//   wrappers show in the name section, read here before it is stripped;
// - NAME.gz and NAME.br (brotli) beside each text and wasm asset, for static hosts that serve them
//   as they are (nginx's brotli_static and gzip_static, Caddy's precompressed, the test server).
//   The .gz copies of files up to 4 MB are zopfli's: plain gzip that any client reads, 5 % smaller
//   than zlib's level 9 (the page's wasm: 522 -> 497 KB) for 7 s of build. The workers (11 and
//   31 MB) would take a minute more of every build, so they keep zlib's level 9;
// - _headers for hosts that read one: COOP and COEP, and a year's caching for each hashed file;
// - models/ (the default model, fetched by scripts/setup) and www's labs, service worker and
//   offline script, copied.
import { createHash } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { brotliCompress, constants, gunzipSync, gzip as zlibGzip } from 'node:zlib';
import { promisify } from 'node:util';
import { gzip as zopfli } from '@gfx/zopfli';

const ROOT = resolve(import.meta.dirname, '..');
const WWW = join(ROOT, 'www');
const [stage, target] = process.argv.slice(2);
if (!stage || !target) {
  console.error('usage: node scripts/web-dist.mjs STAGE DIST');
  process.exit(2);
}
const DROP = new Set(process.env.ALIGNLAB_KEEP_NAMES === '1' ? [] : ['name', 'producers', 'target_features', 'external_debug_info', 'sourceMappingURL']);
/** Files copied as they are: from the repository root, and from www/. */
const COPY_ROOT = ['models'];
const COPY_WWW = ['labs', 'library', 'class', 'probes.json', 'sw.js', 'offline.js'];
/** A file named by its content's hash (`app-<hash>.js`, `worker_mt-<hash>_bg.wasm`), and how long it keeps. */
const HASHED = /-[0-9a-f]{16}[._]/;
const IMMUTABLE = 'public, max-age=31536000, immutable';

function fail(message) {
  console.error(`web-dist: ${message}`);
  process.exit(1);
}

function uleb(bytes, at) {
  let value = 0, shift = 0, b;
  do {
    b = bytes[at++];
    value += (b & 0x7f) * 2 ** shift;
    shift += 7;
  } while (b & 0x80);
  return [value, at];
}

/** The module with its debug-only custom sections left out (sections copied byte for byte), and
 * whether its names show export wrappers. */
function strip(bytes, path) {
  if (bytes.length < 8 || bytes.readUInt32LE(0) !== 0x6d736100) fail(`${path} is not a wasm module`);
  const keep = [bytes.subarray(0, 8)];
  let wrapped = false;
  let at = 8;
  while (at < bytes.length) {
    const start = at;
    const id = bytes[at++];
    let size;
    [size, at] = uleb(bytes, at);
    const end = at + size;
    if (end > bytes.length) fail(`${path}: a section runs past the end`);
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
  if (wrapped) fail(`${path} wraps its exports in __wasm_call_ctors (see src/bin/app.rs)`);
  return Buffer.concat(keep);
}

const hash = (...parts) => {
  const h = createHash('sha256');
  parts.forEach((p) => h.update(p));
  return h.digest('hex').slice(0, 16);
};
const sri = (b) => `sha384-${createHash('sha384').update(b).digest('base64')}`;
const read = (dir, f) => {
  const path = join(dir, f);
  if (!existsSync(path)) fail(`${path} is missing (did wasm-bindgen run?)`);
  return readFileSync(path);
};

const dist = `${target}.new`;
rmSync(dist, { recursive: true, force: true });
mkdirSync(dist, { recursive: true });
const put = (name, bytes) => writeFileSync(join(dist, name), bytes);

// The page: hashed names.
const appJs = read(stage, 'app.js');
const appWasm = strip(read(stage, 'app_bg.wasm'), 'app_bg.wasm');
const app = `app-${hash(appJs, appWasm)}`;
put(`${app}.js`, appJs);
put(`${app}_bg.wasm`, appWasm);
const css = read(WWW, 'style.css');
const style = `style-${hash(css)}.css`;
put(style, css);

// The engine's workers, started by the page (src/app/client.rs) through a loader script: the full
// build (with WebGPU, and the CPU on one thread) and the threaded one (the CPU on every core).
// Each loader first starts the download of the model its URL names (`?model=`, set by the page's
// src/app/client.rs), before the engine's wasm is fetched and compiled: from the models' cache
// (the name src/worker/web/fetch.rs opens) or the network. The engine takes the response over
// when its first `Load` names the same URL, and reads it as it reads its own (its size caps,
// progress and cache copy included). The body is pulled ahead only when the server says its size,
// uncompressed, and that fits the page's limit (`&max=`, src/worker/protocol.rs): a hostile link
// must not fill memory before the engine can refuse it.
const early = `const alignlabParams = new URLSearchParams(location.search);
const alignlabModel = alignlabParams.get('model');
if (alignlabModel) {
  self.alignlabEarly = { url: alignlabModel, response: (async () => {
    const cache = self.caches ? await caches.open('alignlab-models-v1').catch(() => null) : null;
    const hit = cache && await cache.match(alignlabModel).catch(() => null);
    if (hit) return { response: hit, cached: true };
    const r = await fetch(alignlabModel);
    const size = Number(r.headers.get('content-length') ?? NaN);
    const fits = size <= Number(alignlabParams.get('max')) && !r.headers.get('content-encoding');
    if (!r.ok || !r.body || !fits) return { response: r, cached: false };
    // A body nobody reads stops downloading once the browser's buffer is full: this one is pulled
    // into a queue at full speed until the engine reads it.
    const body = r.body.pipeThrough(new TransformStream({}, undefined, { highWaterMark: Infinity }));
    return { response: new Response(body, { status: r.status, statusText: r.statusText, headers: r.headers }), cached: false };
  })() };
  self.alignlabEarly.response.catch(() => {});
}
`;
// The WebGPU worker comes in two modules (tools/wasm-split, scripts/build-web): worker_bg.wasm,
// what a WebGPU session runs, and worker_rest_bg.wasm (REST: its name in dist/), the rest, fetched
// the first time one of its functions is called. The primary module imports `split.load`, which
// fetches the rest (a synchronous request: a Web Worker may make one) and instantiates it on the
// primary's exports, which fills the table slots the primary calls through (by index: a rest from
// another build would fill them with the wrong functions, hence the names by hash). The loader hands wasm-bindgen's
// instantiation that import and keeps the primary's exports; `restLoaded` says whether the rest
// was needed (the browser test of the WebGPU path reads it).
const split = `self.alignlabSplit = { exports: null, restLoaded: false };
for (const name of ['instantiate', 'instantiateStreaming']) {
  const original = WebAssembly[name];
  if (typeof original !== 'function') continue;
  WebAssembly[name] = async (source, imports) => {
    const result = await original.call(WebAssembly, source, { ...imports, split: { load: alignlabLoadRest } });
    self.alignlabSplit.exports = (result instanceof WebAssembly.Instance ? result : result.instance).exports;
    return result;
  };
}
function alignlabLoadRest() {
  const xhr = new XMLHttpRequest();
  xhr.open('GET', 'REST', false);
  xhr.responseType = 'arraybuffer';
  try { xhr.send(); } catch { /* a network error: status 0, said below */ }
  // 404: a deploy since this page opened took this build's files away (their names change with
  // it). The page knows these words (APP_UPDATED, src/worker/protocol.rs) and offers a reload.
  if (xhr.status === 404) throw new Error('the rest of the engine (REST) is gone: the app was updated since this page opened; reload the page');
  if (xhr.status !== 200) throw new Error(\`could not fetch REST, the rest of the engine (\${xhr.status ? 'HTTP ' + xhr.status : 'network error'}): reload the page once the network is back\`);
  new WebAssembly.Instance(new WebAssembly.Module(xhr.response), { primary: self.alignlabSplit.exports });
  self.alignlabSplit.restLoaded = true;
}
`;
// The products' fused multiply-add (www/fused.js): each engine's instance, and each thread's,
// puts the kernel into its own function table once instantiated; the engine's turns it on.
const FUSED = read(WWW, 'fused.js').toString('utf8');
// One thread of the threaded build's pool (src/worker/web/threads.rs): the module and memory of
// the worker that started it (JS: its bindings). An error is thrown outside the promise so that it
// reaches the starting worker's onerror.
const THREAD = `importScripts('JS');
${FUSED}
self.onmessage = ({ data: [module, memory] }) => {
  self.onmessage = null;
  wasm_bindgen({ module_or_path: module, memory }).then((wasm) => {
    alignlabFuse(wasm, false);
    postMessage('ready');
    wasm_bindgen.alignlab_thread();
  }, (e) => setTimeout(() => { throw e; }));
};
`;
/** Writes one engine build's files, named by the hash of all of them, and returns their paths,
 * the loader's first (the page starts it). */
function engine(w) {
  const js = read(stage, `${w}.js`);
  const wasm = strip(read(stage, `${w}_bg.wasm`), `${w}_bg.wasm`);
  const rest = w === 'worker' ? strip(read(stage, 'worker_rest_bg.wasm'), 'worker_rest_bg.wasm') : null;
  const name = `${w}-${hash(early, split, FUSED, THREAD, js, wasm, rest ?? '')}`;
  const files = { [`${name}.js`]: js, [`${name}_bg.wasm`]: wasm };
  let prelude = early + FUSED;
  if (rest) {
    files[`${name}_rest_bg.wasm`] = rest;
    prelude += split.replaceAll('REST', `./${name}_rest_bg.wasm`);
  } else {
    // One thread of its pool (src/worker/web/threads.rs reads the name here).
    files[`${name}_thread.js`] = Buffer.from(THREAD.replace('JS', `./${name}.js`));
    prelude += `self.alignlabThread = './${name}_thread.js';\n`;
  }
  // A module the browser refuses (no shared memory, out of memory) throws outside the promise, to
  // the page's onerror: the page says so, or starts another build, instead of waiting forever.
  const loader = `${prelude}importScripts('./${name}.js');\nwasm_bindgen({ module_or_path: './${name}_bg.wasm' }).then((wasm) => alignlabFuse(wasm, true)).catch((e) => setTimeout(() => { throw e; }));\n`;
  for (const [f, bytes] of Object.entries(files)) put(f, bytes);
  put(`${name}_loader.js`, loader);
  return [`./${name}_loader.js`, ...Object.keys(files).map((f) => `./${f}`)];
}
const workers = { full: engine('worker'), threads: engine('worker_mt') };
// The page's loader: the engines' names first (the page reads them as it starts one, and
// www/offline.js keeps their files), then the page, once www/offline.js lets it start (a first
// visit to a host that cannot isolate the page reloads first).
const init = Buffer.from(`self.alignlabWorkers = ${JSON.stringify(workers)};
import init from './${app}.js';
await self.alignlabStart;
await init({ module_or_path: './${app}_bg.wasm' });
`);
const initName = `init-${hash(init)}.js`;
put(initName, init);

// index.html: what the page loads, each with its integrity hash (crossorigin so that the preloads
// are the very requests the loader makes).
const tags = [
  `<link rel="stylesheet" href="./${style}" integrity="${sri(css)}">`,
  `<link rel="modulepreload" href="./${app}.js" crossorigin="anonymous" integrity="${sri(appJs)}">`,
  `<link rel="preload" href="./${app}_bg.wasm" as="fetch" type="application/wasm" crossorigin="anonymous" integrity="${sri(appWasm)}">`,
  `<script type="module" src="./${initName}" crossorigin="anonymous" integrity="${sri(init)}"></script>`,
];
let html = read(WWW, 'index.html').toString('utf8');
if (!html.includes('</head>')) fail('www/index.html has no </head>');
html = html.replace('</head>', `  ${tags.join('\n  ')}\n</head>`);
if (/<script(?![^>]*\ssrc=)[^>]*>/.test(html)) fail('www/index.html has an inline script, which the page\'s CSP refuses');
put('index.html', html);

// _headers, for hosts that read one (Netlify, Cloudflare Pages; the test server too): every
// response cross-origin isolated, so the engine runs on every core from the first visit, and each
// file named by its hash kept a year without asking. A returning visit then gets the response the
// browser kept, and with it the optimized code V8 kept for the engine: Chrome's code cache checks
// an entry against the response's time, which a revalidation (304) changes (docs/results.md, stop 63).
const hashed = readdirSync(dist).filter((f) => HASHED.test(f)).sort();
put('_headers', [
  '# Written by scripts/web-dist.mjs: see its comment.',
  '/*', '  Cross-Origin-Opener-Policy: same-origin', '  Cross-Origin-Embedder-Policy: require-corp',
  ...hashed.flatMap((f) => [`/${f}`, `  Cache-Control: ${IMMUTABLE}`]),
  '',
].join('\n'));

for (const f of COPY_ROOT) cpSync(join(ROOT, f), join(dist, f), { recursive: true });
for (const f of COPY_WWW) cpSync(join(WWW, f), join(dist, f), { recursive: true });

// Precompressed copies of what a first visit downloads (the models are compressed already).
// Files over this keep the faster settings: zlib's gzip, brotli at quality 9 (the workers).
const BIG = 4e6;
const walk = (d) => readdirSync(d).flatMap((f) => (statSync(join(d, f)).isDirectory() ? (f === 'models' ? [] : walk(join(d, f))) : [join(d, f)]));
// Every file at once: zlib's gzip and brotli run on libuv's threads, so the workers' copies take
// both cores (zopfli runs on this thread meanwhile).
const gzip = promisify(zlibGzip), brotli = promisify(brotliCompress);
await Promise.all(walk(dist).filter((p) => /\.(wasm|js|css|html|json|svg|md)$/.test(p)).map(async (path) => {
  const raw = readFileSync(path);
  const [gz, br] = await Promise.all([
    raw.length <= BIG
      ? new Promise((ok, err) => zopfli(raw, { numiterations: 5 }, (e, out) => (e ? err(e) : ok(Buffer.from(out)))))
      : gzip(raw, { level: 9 }),
    brotli(raw, { params: { [constants.BROTLI_PARAM_QUALITY]: raw.length > BIG ? 9 : 11, [constants.BROTLI_PARAM_SIZE_HINT]: raw.length } }),
  ]);
  if (!gunzipSync(gz).equals(raw)) fail(`${path}.gz does not decompress to the file`);
  writeFileSync(`${path}.gz`, gz);
  writeFileSync(`${path}.br`, br);
}));

rmSync(target, { recursive: true, force: true });
renameSync(dist, target);
