// The lab's service worker: after the first visit the app opens with no network, since classroom
// networks fail. Network first, so a new deploy is picked up whenever the server answers; the last
// good copy of each of the app's files otherwise. Models are not kept here: the engine's worker
// keeps them in its own cache (alignlab-models-v1), and a second copy would double the storage.
const CACHE = 'alignlab-app-v1';
const MODEL = /\.(gguf|bin|safetensors)$/;

self.addEventListener('install', () => self.skipWaiting());
self.addEventListener('activate', (e) => e.waitUntil(self.clients.claim()));

// A host that cannot set headers (GitHub Pages, a plain file server) still gets a cross-origin
// isolated page from the second visit on: the app's own responses get COOP and COEP here, so the
// engine may run on every core (src/app/client.rs then starts its threaded build).
function isolated(res) {
  if (res.status !== 200 || res.headers.has('cross-origin-embedder-policy')) return res;
  const headers = new Headers(res.headers);
  headers.set('cross-origin-opener-policy', 'same-origin');
  headers.set('cross-origin-embedder-policy', 'require-corp');
  return new Response(res.body, { status: res.status, statusText: res.statusText, headers });
}

self.addEventListener('fetch', (e) => {
  const req = e.request;
  const url = new URL(req.url);
  if (req.method !== 'GET' || url.origin !== self.location.origin || MODEL.test(url.pathname) || req.headers.has('range')) return;
  e.respondWith((async () => {
    const cache = await caches.open(CACHE);
    try {
      const res = await fetch(req);
      // Kept in the background: the page gets the response as it streams.
      if (res.ok) e.waitUntil(cache.put(req, res.clone()));
      return isolated(res);
    } catch (err) {
      // A page opened by a link (?lab=..., ?model=...) is the same page: match without the query.
      const kept = await cache.match(req, { ignoreSearch: req.mode === 'navigate' });
      if (kept) return isolated(kept);
      throw err;
    }
  })());
});
