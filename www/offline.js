// Registers the service worker (sw.js) that lets the lab open without a network after the first
// visit, and keeps this visit's files at once (they were fetched before the service worker ran).
// A file of its own: the page's Content-Security-Policy forbids inline scripts.
if ('serviceWorker' in navigator && 'caches' in window) {
  const registered = navigator.serviceWorker.register('sw.js');
  registered.catch((e) => console.warn('alignlab: no offline copy:', e));
  isolateFirstVisit(registered);
  // Every open page of the lab holds this lock, shared, while it lives (the browser lets it go
  // when the page closes): a visit drops an earlier deploy's files only when no other page is
  // open, since a tab left open from before that deploy may still need its engine's files offline.
  const OPEN = 'alignlab-open-page';
  navigator.locks?.request(OPEN, { mode: 'shared' }, () => new Promise(() => {}));
  const alone = async () => !navigator.locks || (await navigator.locks.query()).held.filter((l) => l.name === OPEN).length <= 1;
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
    // threaded CPU build is always kept (the CPU path, on one thread where the page is not
    // isolated), the full one where WebGPU can run or the page is not isolated (there a browser
    // may refuse the threaded build's memory, and the full one runs the CPU path instead): any page
    // can continue on the CPU. Each build's files are listed by the page's loader
    // (scripts/web-dist.mjs), the full build's second module among them: the engine fetches it
    // only when first needed, and it is kept now so that need can come with no network.
    const builds = self.alignlabWorkers ?? {};
    const engines = [builds.threads, ...('gpu' in navigator || !self.crossOriginIsolated ? [builds.full] : [])];
    // The sample files the tabs fetch when first opened (src/app/samples.rs), kept even if this
    // visit never opened them.
    const library = await fetch('library/index.json').then((r) => r.json()).then((i) => i.files.map((f) => `library/${f}`)).catch(() => []);
    const samples = ['library/index.json', 'library/facts.json', 'probes.json', 'class/answers.json', ...library];
    const urls = [location.pathname, ...engines.flat().filter(Boolean), ...samples, ...loaded];
    const cache = await caches.open('alignlab-app-v1');
    await Promise.all(urls.map(async (u) => { if (!(await cache.match(u))) await cache.add(u).catch(() => {}); }));
    // Files named by their hash that this deploy no longer names are an earlier deploy's: dropped,
    // so the copy does not grow with every deploy (an engine is tens of MB); kept while another
    // page of the lab is open, for a later visit to drop. What was done is left in
    // `alignlabOfflineCopy` (the browser tests read it).
    if (!(await alone())) {
      self.alignlabOfflineCopy = 'kept; earlier deploys left: another page of the lab is open';
      return;
    }
    const current = new Set([...urls, ...Object.values(builds).flat()].map((u) => new URL(u, location.href).pathname));
    const hashed = /\/[a-z_]+-[0-9a-f]{16}[._]/;
    for (const req of await cache.keys()) {
      const path = new URL(req.url).pathname;
      if (hashed.test(path) && !current.has(path)) await cache.delete(req);
    }
    self.alignlabOfflineCopy = 'kept; earlier deploys dropped';
  });
}

// A host that cannot send COOP and COEP (GitHub Pages): the service worker adds them, but only to
// pages it serves, and a first visit's page came from the network. So that visit reloads once, as
// soon as the service worker is active and before the engine starts, and runs on every core from
// the start (one thread otherwise: about 28 s for six DPO steps on SmolLM2 against 16, a 2-core
// VM; docs/results.md, stop 64). `alignlabStart`, which the page's loader (scripts/web-dist.mjs)
// awaits, holds the page back meanwhile. Once a tab: a browser that still does not isolate the
// page goes on as it is; so does one whose service worker is refused or slow.
function isolateFirstVisit(registered) {
  const RELOADED = 'alignlab-reloaded-to-isolate';
  // Whether this tab may still reload for it (marked as done if so). No storage, no reload:
  // nothing would stop a second one.
  const mayReload = () => {
    try {
      if (sessionStorage.getItem(RELOADED)) return false;
      sessionStorage.setItem(RELOADED, '1');
      return true;
    } catch {
      return false;
    }
  };
  if (self.crossOriginIsolated || navigator.serviceWorker.controller) return;
  self.alignlabStart = new Promise((start) => {
    let started = false;
    const go = () => { started = true; start(); };
    setTimeout(go, 3000);
    registered.then(() => navigator.serviceWorker.ready).then(() => {
      if (started) return;
      if (mayReload()) location.reload();
      else go();
    }, go);
  });
}
