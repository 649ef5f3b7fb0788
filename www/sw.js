// The studio's service worker (served from the site's root as sw.js; scripts/build-web.sh puts it
// there): a second visit, and a visit without network, load the app, its wasm module and the model
// pack from the Cache API instead of downloading them again.
//
// - Model files (a pack's safetensors and tokenizer, named in its manifest.json with their sha256):
//   from the cache when the cached bytes still hash to the manifest's sha256; a file that does not
//   (a corrupt or outdated cache entry) is dropped and fetched again. While one downloads, the page
//   hears its bytes (`{ type: 'download', file, loaded, total }` messages).
// - The wasm module: from the cache while pkg/SOURCE_HASH (the sources it was built from) is
//   unchanged; fetched again when the app was rebuilt.
// - Everything else of this site (the page, its scripts, manifest.json, SOURCE_HASH): from the
//   network when there is one, so an updated app is seen at once, and from the cache without one.

const CACHE = 'adcanvas-v1';
const HASH_HEADER = 'x-adcanvas-sha256';
const SOURCE_HEADER = 'x-adcanvas-source-hash';

// What the page loaded before this worker controlled it (the first visit's page and its modules),
// fetched again on install; the rest passes through `fetch` below and is kept as it goes.
const SHELL = ['./', 'www/style.css', 'www/app.js', 'www/common.js', 'www/studio.js', 'www/mask-editor.js',
  'www/studio-worker.js', 'pkg/adcanvas.js', 'pkg/SOURCE_HASH'];

self.addEventListener('install', (event) => {
  event.waitUntil((async () => {
    const cache = await caches.open(CACHE);
    // One file that cannot be fetched does not stop the others (or the worker) from installing.
    await Promise.all(SHELL.map(async (path) => {
      const url = new URL(path, self.registration.scope).href;
      try {
        const response = await fetch(url, { cache: 'no-cache' });
        if (response.ok) await cache.put(url, response);
      } catch { /* kept when next fetched */ }
    }));
    await self.skipWaiting();
  })());
});
self.addEventListener('activate', (event) => event.waitUntil(self.clients.claim()));

self.addEventListener('fetch', (event) => {
  const request = event.request;
  const url = new URL(request.url);
  if (request.method !== 'GET' || url.origin !== self.location.origin || request.headers.has('range')) return;
  if (url.pathname.endsWith('/pkg/adcanvas_bg.wasm')) {
    event.respondWith(wasmModule(request, url));
  } else if (/\/models\/.+\.(safetensors|json)$/.test(url.pathname) && !url.pathname.endsWith('/manifest.json')) {
    event.respondWith(modelFile(request, url));
  } else {
    event.respondWith(networkFirst(request));
  }
});

/** The network's answer (kept for later), or the cached one when the network fails. */
async function networkFirst(request) {
  const cache = await caches.open(CACHE);
  try {
    const response = await fetch(request, { cache: 'no-cache' });
    if (response.ok) await cache.put(request, response.clone());
    return response;
  } catch (err) {
    const cached = await cache.match(request, { ignoreSearch: true });
    if (cached) return cached;
    throw err;
  }
}

/** A text file through networkFirst, or null. */
async function text(url) {
  try {
    const response = await networkFirst(new Request(url));
    return response.ok ? await response.text() : null;
  } catch {
    return null;
  }
}

async function wasmModule(request, url) {
  const cache = await caches.open(CACHE);
  const source = (await text(new URL('SOURCE_HASH', url)))?.trim() ?? null;
  const cached = await cache.match(url.href);
  if (cached && source && cached.headers.get(SOURCE_HEADER) === source) return cached;
  const { bytes, response } = await download(request, 'the app', null);
  if (source) await cache.put(url.href, withHeader(response, bytes, SOURCE_HEADER, source));
  return withHeader(response, bytes, SOURCE_HEADER, source ?? '');
}

async function modelFile(request, url) {
  const cache = await caches.open(CACHE);
  const name = url.pathname.split('/').pop();
  const manifest = await text(new URL('manifest.json', url));
  let entry = null;
  try {
    entry = Object.values(JSON.parse(manifest ?? 'null')?.files ?? {}).find((f) => f.file === name) ?? null;
  } catch { /* not a pack's manifest: no hash to check against */ }
  const cached = await cache.match(url.href);
  if (cached && entry) {
    const bytes = await cached.arrayBuffer();
    if ((await sha256(bytes)) === entry.sha256) return withHeader(cached, bytes, HASH_HEADER, entry.sha256);
    await cache.delete(url.href); // corrupt or from another pack: fetched again below
  }
  // Two workers asking at once (the studio's and its helper's, both cutting out the same busy
  // photo) share one download.
  let pending = downloading.get(url.href);
  if (!pending) {
    pending = (async () => {
      const { bytes, response } = await download(request, name, entry?.bytes ?? null);
      const hash = await sha256(bytes);
      // Only what the manifest vouches for is kept; anything else is passed on as it came (the
      // studio's own check then names the file).
      if (response.ok && entry && hash === entry.sha256) await cache.put(url.href, withHeader(response, bytes, HASH_HEADER, hash));
      return { bytes, response, hash };
    })().finally(() => downloading.delete(url.href));
    downloading.set(url.href, pending);
  }
  const { bytes, response, hash } = await pending;
  return withHeader(response, bytes, HASH_HEADER, hash);
}

/** Model files being downloaded: URL → the download's promise. */
const downloading = new Map();

/** Fetches the whole body, telling the page how many bytes have arrived. */
async function download(request, file, total) {
  const response = await fetch(request, { cache: 'no-cache' });
  if (!response.body) return { response, bytes: await response.arrayBuffer() };
  total ??= Number(response.headers.get('content-length')) || null;
  const reader = response.body.getReader();
  const chunks = [];
  let loaded = 0;
  let told = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    loaded += value.byteLength;
    if (loaded - told >= 1 << 20) {
      told = loaded;
      tell({ type: 'download', file, loaded, total });
    }
  }
  tell({ type: 'download', file, loaded, total: total ?? loaded, done: true });
  const bytes = new Uint8Array(loaded);
  let at = 0;
  for (const c of chunks) {
    bytes.set(c, at);
    at += c.byteLength;
  }
  return { response, bytes: bytes.buffer };
}

async function tell(message) {
  for (const client of await self.clients.matchAll({ type: 'window' })) client.postMessage(message);
}

function withHeader(response, bytes, name, value) {
  const headers = new Headers(response.headers);
  headers.set(name, value);
  // The body is stored decoded: it must not be announced as gzip any more.
  headers.delete('content-encoding');
  headers.set('content-length', String(bytes.byteLength));
  return new Response(bytes, { status: response.status, statusText: response.statusText, headers });
}

async function sha256(bytes) {
  const digest = await crypto.subtle.digest('SHA-256', bytes);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, '0')).join('');
}
