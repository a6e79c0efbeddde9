// The lab's service worker: after the first visit the app opens with no network, since classroom
// networks fail. Network first, so a new deploy is picked up whenever the server answers; the last
// good copy of each of the app's files otherwise. Models are not kept here: the engine's worker
// keeps them in its own cache (alignlab-models-v1), and a second copy would double the storage.
const CACHE = 'alignlab-app-v1';
const MODEL = /\.(gguf|bin|safetensors)$/;

self.addEventListener('install', () => self.skipWaiting());
self.addEventListener('activate', (e) => e.waitUntil(self.clients.claim()));

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
      return res;
    } catch (err) {
      // A page opened by a link (?lab=..., ?model=...) is the same page: match without the query.
      const kept = await cache.match(req, { ignoreSearch: req.mode === 'navigate' });
      if (kept) return kept;
      throw err;
    }
  })());
});
