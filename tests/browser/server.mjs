// A static file server for the tests: dist/ at /, and the tiny test models from ../shared at
// /test-models/ (never copied into the repo). Listens on 127.0.0.1 on a free port, and keeps the
// Host header and path of every request, for the tests to check. Like a deployment should, it makes the
// page cross-origin isolated (COOP and COEP), so the engine may run on every core; `isolated:
// false` serves it as a host that cannot set headers would. It caches as dist/_headers says, with
// an ETag on every file (see cachingRules).
import { createServer } from 'node:http';
import { createReadStream, existsSync, readFileSync, statSync } from 'node:fs';
import { extname, join, normalize, resolve } from 'node:path';

const ROOT = resolve(import.meta.dirname, '../..');
export const DIST = join(ROOT, 'dist');
export const SHARED_MODELS = resolve(ROOT, '../shared/models/stories260K');
/** The headers that make the page cross-origin isolated (threads), when the test wants them. */
const isolation = (isolated) => (isolated ? { 'cross-origin-opener-policy': 'same-origin', 'cross-origin-embedder-policy': 'require-corp' } : {});
/** Each content encoding's precompressed copy, as scripts/web-dist.mjs names it. */
const SUFFIX = { br: 'br', gzip: 'gz' };
const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.wasm': 'application/wasm', '.css': 'text/css', '.json': 'application/json' };

/** `encodings`: the precompressed copies this host serves, when the browser takes them (a host
 * with gzip_static and no brotli: `['gzip']`). `missing`: paths answered 404, as a host answers
 * for files a deploy since took away. `rules: false` ignores dist/_headers: every file 'no-cache',
 * asked after on every visit, as a host without such a file asks once its own short max-age ran
 * out (GitHub Pages: ten minutes). */
export function serve({ isolated = true, override = {}, encodings = ['br', 'gzip'], missing = [], rules = true } = {}) {
  const hosts = [], paths = [];
  // `/huge-model.gguf`: a file the server says is 3 GiB, of which it sends the first MiB and then
  // waits; whether the browser hung up, for the tests of a download the page must refuse.
  const huge = { closed: false };
  const caching = rules ? cachingRules() : new Map();
  const server = createServer((req, res) => {
    hosts.push(req.headers.host);
    const url = new URL(req.url, 'http://x');
    paths.push(url.pathname);
    if (url.pathname === '/huge-model.gguf') {
      sendHuge(res, huge, isolated);
      return;
    }
    // `override`: path -> body, served in place of dist's file (a host serving something else).
    if (url.pathname in override) {
      res.writeHead(200, { 'content-type': TYPES[extname(url.pathname)] ?? 'application/octet-stream', 'content-length': Buffer.byteLength(override[url.pathname]) }).end(override[url.pathname]);
      return;
    }
    let base = DIST, path = decodeURIComponent(url.pathname);
    if (path.startsWith('/test-models/')) { base = SHARED_MODELS; path = path.slice('/test-models'.length); }
    if (path.endsWith('/')) path += 'index.html';
    const file = join(base, normalize(path));
    if (missing.includes(path) || !file.startsWith(base) || !existsSync(file) || !statSync(file).isFile()) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end(`not found: ${path}`);
      return;
    }
    // The precompressed copy scripts/web-dist.mjs wrote, when the browser takes it.
    const accepts = String(req.headers['accept-encoding'] ?? '');
    const [encoding, body] = encodings.map((e) => [e, `${file}.${SUFFIX[e]}`]).find(([e, f]) => accepts.includes(e) && existsSync(f)) ?? [null, file];
    const { size, mtimeMs } = statSync(body);
    const etag = `"${size.toString(16)}-${Math.round(mtimeMs).toString(16)}"`;
    const headers = {
      vary: 'accept-encoding',
      'cache-control': caching.get(path) ?? 'no-cache',
      etag,
      // Lets the tests load a model "from another site" (localhost vs 127.0.0.1).
      'access-control-allow-origin': '*',
      ...isolation(isolated),
    };
    if (req.headers['if-none-match'] === etag) {
      res.writeHead(304, headers).end();
      return;
    }
    res.writeHead(200, { ...headers, ...(encoding ? { 'content-encoding': encoding } : {}), 'content-type': TYPES[extname(file)] ?? 'application/octet-stream', 'content-length': size });
    createReadStream(body).pipe(res);
  });
  return new Promise((ok) => server.listen(0, '127.0.0.1', () => ok({ server, hosts, paths, huge, base: `http://127.0.0.1:${server.address().port}` })));
}

/** The Cache-Control dist/_headers (scripts/web-dist.mjs) gives each path, as a host that reads it
 * (Netlify, Cloudflare Pages) sends it: a year, without asking, for each file named by its hash.
 * The rest (index.html, the service worker, models) gets 'no-cache': asked after on every visit,
 * and answered 304 while unchanged. */
function cachingRules() {
  const rules = new Map();
  const file = join(DIST, '_headers');
  if (!existsSync(file)) return rules;
  let path = null;
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    if (line.startsWith('/')) path = line.trim();
    const value = /^\s+cache-control:\s*(.*)$/i.exec(line)?.[1];
    if (path && value) rules.set(path, value);
  }
  return rules;
}

/** A response that says it is 3 GiB, sends 1 MiB of it and then stalls until the client hangs up.
 * The stall makes the test independent of timing: a page that waited for the body would never
 * answer, and one that refused it must cancel or the connection stays open. */
function sendHuge(res, huge, isolated) {
  res.writeHead(200, {
    'content-type': 'application/octet-stream',
    'content-length': 3 * 2 ** 30,
    ...isolation(isolated),
  });
  res.on('close', () => { huge.closed = true; });
  res.write(Buffer.alloc(1 << 20));
}

if (process.argv[1] === import.meta.filename) {
  const port = Number(process.env.PORT ?? 8080);
  const { server } = await serve();
  server.close();
  server.listen(port, '127.0.0.1', () => console.log(`serving dist/ on http://127.0.0.1:${port}`));
}
