// Registers the service worker (sw.js) that lets the lab open without a network after the first
// visit, and keeps this visit's files at once (they were fetched before the service worker ran).
// A file of its own: the page's Content-Security-Policy forbids inline scripts.
if ('serviceWorker' in navigator && 'caches' in window) {
  navigator.serviceWorker.register('sw.js').catch((e) => console.warn('alignlab: no offline copy:', e));
  // After the engine has loaded its model (or half a minute, if it never does), so these
  // downloads do not compete with the engine's own on the way to a ready model.
  const started = new Promise((ok) => {
    window.addEventListener('alignlab-model-ready', ok, { once: true });
    setTimeout(ok, 30_000);
  });
  window.addEventListener('load', async () => {
    await started;
    const own = (u) => new URL(u, location.href).origin === location.origin && !/\.(gguf|bin|safetensors)$/.test(new URL(u, location.href).pathname);
    const loaded = performance.getEntriesByType('resource').map((e) => e.name).filter(own);
    // The engine's worker loads its own files; the page does not see them in its timeline. The
    // threaded CPU build is kept where the page can share memory, the full one where WebGPU can run
    // or the page cannot share memory (it is the CPU path on one thread): any page can continue on
    // the CPU.
    const workers = [...(self.crossOriginIsolated ? ['worker_mt'] : []), ...('gpu' in navigator || !self.crossOriginIsolated ? ['worker'] : [])];
    // The sample files the tabs fetch when first opened (src/app/samples.rs), kept even if this
    // visit never opened them.
    const library = await fetch('library/index.json').then((r) => r.json()).then((i) => i.files.map((f) => `library/${f}`)).catch(() => []);
    const samples = ['library/index.json', 'library/facts.json', 'probes.json', 'class/answers.json', ...library];
    // The full build's second module (worker_rest_bg.wasm: what no profiled WebGPU session ran, the
    // TRL hand-off's zip writer among it) is fetched by the engine only when first needed; kept
    // now, so that need can come with no network.
    const modules = (w) => [`${w}_loader.js`, `${w}.js`, `${w}_bg.wasm`, ...(w === 'worker' ? ['worker_rest_bg.wasm'] : [])];
    const urls = [location.pathname, ...workers.flatMap(modules), ...samples, ...loaded];
    if (self.crossOriginIsolated) urls.push('worker_mt_thread.js');
    const cache = await caches.open('alignlab-app-v1');
    await Promise.all(urls.map(async (u) => { if (!(await cache.match(u))) await cache.add(u).catch(() => {}); }));
  });
}
