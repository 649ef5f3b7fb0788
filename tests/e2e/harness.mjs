// What the browser tests and the browser benchmark share: the static server, and Chromium with
// WebGPU on SwiftShader (or without WebGPU), each run in a fresh profile.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const DIST = path.resolve(process.env.ADCANVAS_DIST || path.join(REPO, 'dist'));
export const CHROMIUM = process.env.ADCANVAS_CHROMIUM || '/usr/bin/chromium';

// Flags for WebGPU on SwiftShader (Vulkan) in headless Chromium.
const BASE_FLAGS = [
  '--headless=new',
  '--no-sandbox',
  '--enable-features=Vulkan',
  '--use-angle=swiftshader',
  '--use-vulkan=swiftshader',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--force-color-profile=srgb',
];
export const WEBGPU_ON = ['--enable-unsafe-webgpu', ...BASE_FLAGS];
// WebGPU off. Verified on Chromium 156 (Debian, headless, no hardware GPU): without
// --enable-unsafe-webgpu, requestAdapter() resolves to null (the SwiftShader adapter is blocked).
// --disable-gpu additionally takes any hardware GPU away, so on a machine with a real GPU only the
// blocked SwiftShader adapter is left. (--disable-features=WebGPU, --disable-blink-features=WebGPU
// and --disable-webgpu do NOT remove navigator.gpu or the adapter in this build.) The test checks
// this precondition in the page itself, so a Chromium that behaves differently fails loudly.
export const WEBGPU_OFF = [...BASE_FLAGS, '--disable-gpu'];

/** Serves `dir` with scripts/serve.py on `port` (0: a free one): { proc, url, requests }; with
 * `verbose`, `requests` collects the server's log of every request it answered. */
export function startServer(dir, port = 0, { verbose = false } = {}) {
  return new Promise((resolve, reject) => {
    const args = [path.join(REPO, 'scripts', 'serve.py'), '--dir', dir, '--port', String(port), ...(verbose ? ['-v'] : [])];
    const proc = spawn('python3', args, {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    const requests = [];
    proc.stderr.on('data', (d) => {
      stderr += d;
      if (verbose) requests.push(...String(d).split('\n').filter((l) => l.includes('"')));
    });
    const timer = setTimeout(() => {
      proc.kill();
      reject(new Error(`serve.py printed no URL within 15 s. stderr:\n${stderr}`));
    }, 15_000);
    proc.on('error', (err) => { clearTimeout(timer); reject(err); });
    proc.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`serve.py exited early (code ${code}). stderr:\n${stderr}`));
    });
    const lines = readline.createInterface({ input: proc.stdout });
    lines.once('line', (line) => {
      clearTimeout(timer);
      const m = /^serving (http:\/\/\S+\/)$/.exec(line.trim());
      if (!m) {
        proc.kill();
        reject(new Error(`unexpected first line from serve.py: ${JSON.stringify(line)}`));
        return;
      }
      resolve({ proc, url: m[1], requests });
    });
  });
}

export /** Launch Chromium with a fresh profile; returns { context, page, pageErrors, consoleLines, close, userDataDir }. */
async function launch(args) {
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'adcanvas-e2e-'));
  // headless:false so Playwright does not add its own --headless; '--headless=new' is in args.
  // (Playwright refuses --user-data-dir in args; launchPersistentContext passes it for us.)
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: false,
    args,
    deviceScaleFactor: 1,
    viewport: { width: 1280, height: 1000 },
    acceptDownloads: true,
  });
  const page = context.pages()[0] ?? (await context.newPage());
  const pageErrors = [];
  const consoleLines = [];
  page.on('pageerror', (err) => pageErrors.push(err));
  page.on('console', (msg) => consoleLines.push(`[${msg.type()}] ${msg.text()}`));
  page.on('crash', () => pageErrors.push(new Error('page crashed')));
  const close = async () => {
    await context.close().catch(() => {});
    fs.rmSync(userDataDir, { recursive: true, force: true });
  };
  return { context, page, pageErrors, consoleLines, close, userDataDir };
}
