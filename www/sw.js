// The lab's service worker: after the first visit the app opens with no network, since classroom
// networks fail. Network first, so a new deploy is picked up whenever the server answers; the last
// good copy of each of the app's files otherwise. Models are not kept here: the engine's worker
// keeps them in its own cache (alignlab-models-v1), and a second copy would double the storage.
const CACHE = 'alignlab-app-v1';
const MODEL = /\.(gguf|bin|safetensors)$/;
// The names scripts/web-dist.mjs gives each file by its build's hash (www/offline.js drops an
// earlier deploy's by the same pattern). Such a file never changes.
const HASHED = /\/[a-z_]+-[0-9a-f]{16}[._]/;

self.addEventListener('install', () => self.skipWaiting());
self.addEventListener('activate', (e) => e.waitUntil(self.clients.claim()));

// A host that cannot set headers (GitHub Pages, a plain file server) still gets a cross-origin
// isolated page (from the first visit, which reloads once for it: www/offline.js): the app's own
// responses get COOP and COEP here, so the engine may run on every core (src/app/client.rs then
// starts its threaded build). Not the wasm: a same-origin module needs neither, and Chrome gives
// V8 the optimized code it kept for a module only with the response the service worker passed
// through as it came, never with one built here.
function isolated(res, path) {
  if (res.status !== 200 || res.headers.has('cross-origin-embedder-policy') || path.endsWith('.wasm')) return res;
  const headers = new Headers(res.headers);
  headers.set('cross-origin-opener-policy', 'same-origin');
  headers.set('cross-origin-embedder-policy', 'require-corp');
  return new Response(res.body, { status: res.status, statusText: res.statusText, headers });
}

self.addEventListener('fetch', (e) => {
  const req = e.request;
  const url = new URL(req.url);
  if (req.method !== 'GET' || url.origin !== self.location.origin || MODEL.test(url.pathname) || req.headers.has('range')) return;
  const hashed = HASHED.test(url.pathname);
  e.respondWith((async () => {
    const cache = await caches.open(CACHE);
    try {
      // A hashed file kept once is kept for good: its name changes with its contents.
      const kept = hashed ? await cache.match(req) : undefined;
      const res = await fetch(req, hashed ? { cache: hashedMode(kept) } : {});
      // Kept in the background: the page gets the response as it streams.
      if (res.ok && !kept) e.waitUntil(cache.put(req, res.clone()));
      return isolated(res, url.pathname);
    } catch (err) {
      // A page opened by a link (?lab=..., ?model=...) is the same page: match without the query.
      const kept = await cache.match(req, { ignoreSearch: req.mode === 'navigate' });
      if (kept) return isolated(kept, url.pathname);
      throw err;
    }
  })());
});

// How to fetch a hashed file. A host that said `immutable` for it (dist/_headers) has the
// browser's HTTP cache answer without asking: left alone. Otherwise (GitHub Pages: ten minutes,
// a plain server: none) the browser would revalidate a copy that cannot have changed, and a
// revalidated response loses the optimized code V8 kept with it (docs/results.md, stop 64): the
// HTTP cache's copy is taken however old. `kept`: this worker's copy, which says what the host said.
function hashedMode(kept) {
  return kept && !/immutable/.test(kept.headers.get('cache-control') ?? '') ? 'force-cache' : 'default';
}
