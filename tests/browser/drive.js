#!/usr/bin/env node
// Drives the test page in headless Chromium for test_browser.py, through playwright-core and
// the system Chromium (no browser downloads). Protocol: one JSON object per line.
//   stdin:  {"id": N, "op": "eval", "expr": "T.something(...)"}   (awaited in the page)
//           {"id": N, "op": "screenshot", "path": "/abs/file.png"}
//           {"id": N, "op": "close"}                               (close the browser, exit)
//   stdout: {"ready": true, "version": "..."} once the page has loaded both libraries, then
//           {"id": N, "ok": value} or {"id": N, "error": "message"} per request.
//   stderr: the page's console, page errors, blocked requests (shown by the test on failure).
// Config comes as one JSON argument: {url, origin, chromium, home, userDataDir, timeoutMs}.
// The browser reaches nothing but the test's own HTTP origin: every other HTTP(S) request is
// aborted (WebSockets are not routed and go to the broker).
'use strict';
const readline = require('readline');
const { chromium } = require('playwright-core');

const cfg = JSON.parse(process.argv[2]);
const out = obj => process.stdout.write(JSON.stringify(obj) + '\n');
const err = text => process.stderr.write(text + '\n');

const ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--disable-dev-shm-usage',
];

async function main() {
  // launchPersistentContext: our own new empty --user-data-dir (Playwright does not allow it
  // in args). HOME is a temporary one whose NSS database trusts the test CA.
  const context = await chromium.launchPersistentContext(cfg.userDataDir, {
    executablePath: cfg.chromium,
    headless: true,
    args: ARGS.concat(cfg.extraArgs || []),
    env: Object.assign({}, process.env, { HOME: cfg.home }),
    viewport: { width: 1200, height: 900 },
    timeout: cfg.timeoutMs,
  });
  const version = context.browser() ? context.browser().version() : 'unknown';
  let closing = false;
  const shutdown = async code => {
    if (closing) return;
    closing = true;
    const t = setTimeout(() => process.exit(code), 5000);
    try { await context.close(); } catch (e) { err('close: ' + e); }
    clearTimeout(t);
    process.exit(code);
  };
  await context.route('**/*', route => {
    const url = route.request().url();
    if (url.startsWith(cfg.origin + '/')) return route.continue();
    err('BLOCKED request to ' + url);
    return route.abort();
  });
  const page = context.pages()[0] || await context.newPage();
  page.on('console', m => err('console.' + m.type() + ': ' + m.text()));
  page.on('pageerror', e => err('pageerror: ' + (e && e.stack || e)));
  page.on('requestfailed', r => err('requestfailed: ' + r.url() + ' ' + (r.failure() || {}).errorText));
  page.on('websocket', ws => {
    ws.on('socketerror', e => err('websocket error ' + ws.url() + ': ' + e));
  });
  await page.goto(cfg.url, { timeout: cfg.timeoutMs });
  await page.waitForFunction(() => window.T && window.T.ready, null, { timeout: cfg.timeoutMs });
  out({ ready: true, version });

  const rl = readline.createInterface({ input: process.stdin });
  rl.on('line', async line => {
    let req;
    try { req = JSON.parse(line); } catch (e) { err('bad request: ' + line); return; }
    try {
      let ok = null;
      if (req.op === 'eval') ok = await page.evaluate(req.expr);
      else if (req.op === 'screenshot') { await page.screenshot({ path: req.path, fullPage: true }); ok = req.path; }
      else if (req.op === 'close') { out({ id: req.id, ok: true }); await shutdown(0); return; }
      else throw new Error('unknown op ' + req.op);
      out({ id: req.id, ok: ok === undefined ? null : ok });
    } catch (e) {
      out({ id: req.id, error: String(e && e.message || e) });
    }
  });
  rl.on('close', () => shutdown(0));
}

main().catch(e => {
  err('drive.js: ' + (e && e.stack || e));
  process.exit(2);
});
