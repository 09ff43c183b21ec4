// Browser test of the unseen console: drives Debian's chromium through playwright-core against
// a running `unseen serve --api` and checks the console end to end as a responder would use it.
//
//   UNSEEN_API=http://127.0.0.1:9465 UNSEEN_TOKEN=<responder or admin token> \
//     node crates/api/tests/browser/console.mjs
//
// Environment: UNSEEN_API (base URL, required), UNSEEN_TOKEN (required), CHROMIUM (browser
// binary, default /usr/bin/chromium), SCREENSHOTS (folder for the PNGs, default docs/console
// at the repository's root). The run acknowledges one incident and creates one suppression
// rule (expiring in an hour): point it at a test server, not at production.
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const RUN_TIMEOUT_MS = 120_000;
const STEP_TIMEOUT_MS = 15_000;

const here = path.dirname(fileURLToPath(import.meta.url));
const API = (process.env.UNSEEN_API || '').replace(/\/+$/, '');
const TOKEN = process.env.UNSEEN_TOKEN || '';
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SHOTS = process.env.SCREENSHOTS ? path.resolve(process.env.SCREENSHOTS) : path.resolve(here, '../../../../docs/console');

let passed = 0;
let browser = null;

function fail(msg) {
  throw new Error(msg);
}

async function check(name, fn) {
  try {
    await fn();
  } catch (e) {
    e.message = `${name}: ${e.message}`;
    throw e;
  }
  passed++;
  console.log(`ok ${passed} - ${name}`);
}

async function finish(code, err) {
  if (err) {
    console.error(`FAIL - ${err.message.split('\n')[0]}`);
    if (err.stack && process.env.VERBOSE) console.error(err.stack);
  }
  try {
    if (browser) await browser.close();
  } catch (e) {
    // the browser is gone already
  }
  console.log(`console test: ${passed} passed, ${code === 0 ? 0 : 1} failed`);
  process.exit(code);
}

const watchdog = setTimeout(() => {
  finish(1, new Error(`the whole run took more than ${RUN_TIMEOUT_MS / 1000} s`));
}, RUN_TIMEOUT_MS);

const apiPath = (p) => (url) => {
  const u = new URL(url.url ? url.url() : url);
  return u.pathname === p;
};

async function main() {
  if (!API) fail('UNSEEN_API is not set (e.g. http://127.0.0.1:9465)');
  if (!TOKEN) fail('UNSEEN_TOKEN is not set (a responder or admin token)');
  mkdirSync(SHOTS, { recursive: true });

  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
  const context = await browser.newContext({ viewport: { width: 1366, height: 768 } });
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_TIMEOUT_MS);
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(`uncaught: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' && /Content Security Policy|Refused to/i.test(m.text())) pageErrors.push(`CSP: ${m.text()}`);
  });
  const shot = (name) => page.screenshot({ path: path.join(SHOTS, name) });
  const tid = (id) => page.getByTestId(id);
  const ready = (view) => page.locator(`main[data-state="ready"][data-view="${view}"]`).waitFor();
  const alertText = async () => ((await tid('alert').textContent()) || '').trim();

  // ---- login
  await check('the login page shows at load', async () => {
    const r = await page.goto(API + '/');
    if (!r || !r.ok()) fail(`GET / answered ${r ? r.status() : 'nothing'}`);
    await tid('login-form').waitFor();
    await tid('login-token').waitFor();
  });
  await shot('login.png');

  await check('a wrong token is refused with a visible error', async () => {
    await tid('login-token').fill('not-a-token-' + Date.now());
    const resp = page.waitForResponse((r) => apiPath('/api/v1/session')(r) && r.request().method() === 'POST');
    await tid('login-submit').click();
    const r = await resp;
    if (r.status() !== 401) fail(`POST /api/v1/session with a bad token answered ${r.status()}, expected 401`);
    await page.locator('[data-testid="alert"]:not(:empty)').waitFor();
  });

  let session;
  await check('logging in with UNSEEN_TOKEN shows the user in the header', async () => {
    await tid('login-token').fill(TOKEN);
    const resp = page.waitForResponse((r) => apiPath('/api/v1/session')(r) && r.request().method() === 'POST');
    await tid('login-submit').click();
    const r = await resp;
    if (r.status() !== 200) fail(`POST /api/v1/session answered ${r.status()}: ${await r.text()}`);
    session = await r.json();
    if (!['responder', 'admin'].includes(session.role)) fail(`UNSEEN_TOKEN has role ${session.role}; the test needs responder or admin`);
    await page.locator('[data-testid="session-user"]', { hasText: session.name }).waitFor();
    const who = await tid('session-user').textContent();
    if (!who.includes(session.role)) fail(`the header says "${who}", not the role ${session.role}`);
  });

  // ---- incident queue
  const rows = page.getByTestId('incident-row');
  await check('the incident queue is not empty', async () => {
    await ready('incidents');
    const n = await rows.count();
    if (n === 0) fail('no incident row: the server has no incidents (or the queue did not render)');
    if (n > 50) fail(`${n} rows rendered: more than one page of 50`);
  });
  await shot('incidents.png');

  // Filter on scope=fleet together with status=new (an incident still "new" with members is
  // acknowledged below); when the first page has no such fleet incident, on the scope of the
  // newest "new" incident with members.
  const candidates = [];
  for (const row of await rows.all()) {
    if ((await row.getAttribute('data-status')) === 'new' && Number(await row.getAttribute('data-findings')) > 0) {
      candidates.push(((await row.getByTestId('incident-scope').textContent()) || '').trim());
    }
  }
  const scope = candidates.includes('fleet') || candidates.length === 0 ? 'fleet' : candidates.find((x) => ['node', 'cluster'].includes(x)) || 'fleet';

  await check(`filtering on scope=${scope} and status=new shows only such incidents`, async () => {
    await tid('filter-scope').selectOption(scope);
    await tid('filter-status').selectOption('new');
    const resp = page.waitForResponse((r) => {
      if (!apiPath('/api/v1/incidents')(r)) return false;
      const q = new URL(r.url()).searchParams;
      return q.get('scope') === scope && q.get('status') === 'new';
    });
    await tid('filter-apply').click();
    const r = await resp;
    if (r.status() !== 200) fail(`GET incidents answered ${r.status()}`);
    await ready('incidents');
    if (!page.url().includes(`scope=${scope}`)) fail(`the filter is not in the URL: ${page.url()}`);
    const scopes = await page.getByTestId('incident-scope').allTextContents();
    const statuses = await page.getByTestId('incident-status').allTextContents();
    if (scopes.length === 0) fail(`no incident of scope ${scope} with status new to work on`);
    const bad = scopes.map((s) => s.trim()).filter((s) => s !== scope);
    if (bad.length) fail(`${bad.length} rows of another scope: ${bad.slice(0, 3).join(', ')}`);
    const badSt = statuses.map((s) => s.trim()).filter((s) => s !== 'new');
    if (badSt.length) fail(`${badSt.length} rows of another status: ${badSt.slice(0, 3).join(', ')}`);
  });

  await check('the pager pages forward and back when there is a next page', async () => {
    const next = tid('page-next');
    if (await next.isDisabled()) return; // a single page: nothing to page through
    const first = await page.getByTestId('incident-row').first().getAttribute('data-id');
    const resp = page.waitForResponse((r) => apiPath('/api/v1/incidents')(r) && new URL(r.url()).searchParams.has('cursor'));
    await next.click();
    await resp;
    await ready('incidents');
    if ((await tid('page-number').textContent()).indexOf('Page 2') < 0) fail('the page number did not become 2');
    const second = await page.getByTestId('incident-row').first().getAttribute('data-id');
    if (second === first) fail('page 2 starts with the same incident as page 1');
    const back = page.waitForResponse((r) => apiPath('/api/v1/incidents')(r));
    await tid('page-prev').click();
    await back;
    await ready('incidents');
    const again = await page.getByTestId('incident-row').first().getAttribute('data-id');
    if (again !== first) fail('Previous did not come back to page 1');
  });

  // ---- one incident
  let incidentId;
  await check('an incident opens from the queue', async () => {
    const row = page.locator('[data-testid="incident-row"][data-status="new"]:not([data-findings="0"])').first();
    await row.waitFor();
    incidentId = await row.getAttribute('data-id');
    await row.getByTestId('incident-link').click();
    await ready('incident');
    const title = ((await tid('incident-title').textContent()) || '').trim();
    if (!title) fail('the incident page has no title');
    if (!page.url().includes(encodeURIComponent(incidentId))) fail(`the URL ${page.url()} does not name ${incidentId}`);
    if ((await page.getByTestId('member-row').count()) === 0) fail('the incident page lists no member');
  });
  await shot('incident.png');

  const note = `console test ${new Date().toISOString()}`;
  await check('acknowledging with a note shows status "acknowledged"', async () => {
    await tid('incident-ack').click();
    await tid('workflow-dialog').waitFor();
    await tid('workflow-note').fill(note);
    const resp = page.waitForResponse((r) => apiPath(`/api/v1/incidents/${incidentId}/ack`)(r));
    await tid('workflow-submit').click();
    const r = await resp;
    if (r.status() !== 200) fail(`POST ack answered ${r.status()}: ${await r.text()}`);
    if (r.request().headers()['x-csrf-token'] !== session.csrf) fail('the POST did not carry the session\'s X-CSRF-Token');
    await page.locator('[data-testid="workflow-status"]', { hasText: 'acknowledged' }).waitFor();
    await page.locator('[data-testid="workflow-note-text"]', { hasText: note }).waitFor();
    const by = ((await tid('workflow-by').textContent()) || '').trim();
    if (by !== session.name) fail(`"by" is ${by}, not ${session.name}`);
  });

  let ruleName;
  await check('"Suppress like this" prefills a form from the finding', async () => {
    const resp = page.waitForResponse((r) => /\/api\/v1\/findings\/[^/]+\/suppression$/.test(new URL(r.url()).pathname));
    await page.getByTestId('member-suppress').first().click();
    const r = await resp;
    if (r.status() !== 200) fail(`GET …/suppression answered ${r.status()}`);
    await tid('suppress-form').waitFor();
    const n = await page.getByTestId('suppress-matcher').count();
    if (n === 0) fail('the form shows no matcher');
    const values = await page.getByTestId('suppress-matcher').evaluateAll((els) => els.map((e) => e.value));
    if (values.every((v) => !v)) fail('every matcher is empty');
  });
  await check('submitting the form creates an active suppression rule', async () => {
    const stamp = new Date().toISOString().replace(/[-:.TZ]/g, '').slice(0, 14);
    const wanted = `console-test-${stamp}`;
    const expires = new Date(Date.now() + 3600e3).toISOString().replace(/\.\d{3}Z$/, 'Z');
    await tid('suppress-name').fill(wanted);
    await tid('suppress-reason').fill(`created by the console browser test at ${stamp}`);
    await tid('suppress-expires').fill(expires);
    await shot('suppress.png');
    const resp = page.waitForResponse((r) => apiPath('/api/v1/suppressions')(r) && r.request().method() === 'POST');
    await tid('suppress-submit').click();
    const r = await resp;
    if (r.status() !== 201) fail(`POST /api/v1/suppressions answered ${r.status()}: ${await r.text()}`);
    const rule = await r.json();
    ruleName = rule.name || wanted;
    await tid('suppress-dialog').waitFor({ state: 'detached' });
    await page.locator('[data-testid="created-rule"]', { hasText: ruleName }).waitFor();
    // What the server now lists, read with the page's own session (cookie).
    const found = await page.evaluate(async (name) => {
      let cursor = null;
      for (let i = 0; i < 100; i++) {
        const res = await fetch('/api/v1/suppressions' + (cursor ? '?cursor=' + encodeURIComponent(cursor) : ''), { credentials: 'same-origin' });
        if (!res.ok) return { error: `GET /api/v1/suppressions answered ${res.status}` };
        const body = await res.json();
        const hit = (body.items || []).find((x) => x.name === name);
        if (hit) return { rule: hit };
        if (!body.next) return { rule: null };
        cursor = body.next;
      }
      return { rule: null };
    }, ruleName);
    if (found.error) fail(found.error);
    if (!found.rule) fail(`GET /api/v1/suppressions does not list the rule ${ruleName}`);
    if (found.rule.active !== true) fail(`the rule ${ruleName} is listed but not active`);
    if (!found.rule.matchers || Object.keys(found.rule.matchers).length === 0) fail(`the rule ${ruleName} has no matchers`);
  });

  // ---- timeline
  await check('the timeline draws points', async () => {
    const resp = page.waitForResponse((r) => apiPath('/api/v1/timeline')(r));
    await tid('nav-timeline').click();
    const r = await resp;
    if (r.status() !== 200) fail(`GET /api/v1/timeline answered ${r.status()}`);
    await ready('timeline');
    await tid('timeline-svg').waitFor();
    const pts = await page.getByTestId('timeline-point').count();
    if (pts === 0) fail('the SVG has no point (no finding in the default range?)');
    const bars = await page.getByTestId('timeline-bar').count();
    if (bars === 0) fail('the SVG has no bar of findings per hour');
  });
  await shot('timeline.png');

  // ---- inventory
  let query;
  await check('the image inventory lists images and searches them', async () => {
    await tid('nav-images').click();
    await ready('images');
    const first = page.getByTestId('image-row').first();
    await first.waitFor();
    const image = await first.getAttribute('data-image');
    const tail = image.split('/').pop();
    query = tail.length > 3 ? tail.slice(0, Math.max(3, tail.length - 1)) : tail;
    await tid('images-q').fill(query);
    const resp = page.waitForResponse((r) => apiPath('/api/v1/images')(r) && new URL(r.url()).searchParams.get('q') === query);
    await tid('filter-apply').click();
    const r = await resp;
    if (r.status() !== 200) fail(`GET /api/v1/images?q= answered ${r.status()}`);
    await ready('images');
    const names = await page.getByTestId('image-row').evaluateAll((els) => els.map((e) => e.getAttribute('data-image')));
    if (!names.length) fail(`searching "${query}" (part of ${image}) found nothing`);
    const bad = names.filter((n) => !n.includes(query));
    if (bad.length) fail(`the search "${query}" lists ${bad.join(', ')}`);
  });
  await shot('images.png');

  await check('an image page tells since when and where the image is known', async () => {
    const first = page.getByTestId('image-row').first();
    const image = await first.getAttribute('data-image');
    const resp = page.waitForResponse((r) => new URL(r.url()).pathname.startsWith('/api/v1/images/'));
    await first.getByTestId('image-link').click();
    const r = await resp;
    if (r.status() !== 200) fail(`GET ${new URL(r.url()).pathname} answered ${r.status()}`);
    await ready('image');
    const summary = ((await tid('image-summary').textContent()) || '').trim();
    if (!/^Known since /.test(summary) || !/ nodes? in clusters? /.test(summary)) fail(`unexpected summary: "${summary}"`);
    const title = ((await tid('image-title').textContent()) || '').trim();
    if (title !== image) fail(`the page is titled ${title}, not ${image}`);
    const href = await tid('image-findings-link').getAttribute('href');
    if (!href || !href.startsWith('#/findings?') || new URLSearchParams(href.split('?')[1]).get('image') !== image) fail(`the findings link is ${href}`);
  });
  await shot('image.png');

  await check('the image\'s findings link lists only findings of that image', async () => {
    const image = ((await tid('image-title').textContent()) || '').trim();
    const resp = page.waitForResponse((r) => apiPath('/api/v1/findings')(r));
    await tid('image-findings-link').click();
    const r = await resp;
    if (r.status() !== 200) fail(`GET /api/v1/findings answered ${r.status()}`);
    await ready('findings');
    const imgs = await page.getByTestId('finding-image').allTextContents();
    const bad = imgs.filter((x) => !x.includes(image));
    if (bad.length) fail(`findings of other images listed: ${bad.slice(0, 3).join(', ')}`);
  });

  await check('an unknown image says "not known"', async () => {
    const resp = page.waitForResponse((r) => new URL(r.url()).pathname.startsWith('/api/v1/images/'));
    await page.goto(`${API}/#/images/${encodeURIComponent('example.invalid/no/such-image-' + Date.now())}`);
    const r = await resp;
    if (r.status() !== 404) fail(`GET of an unknown image answered ${r.status()}, expected 404`);
    await ready('image');
    const summary = ((await tid('image-summary').textContent()) || '').trim();
    if (!/not known/.test(summary)) fail(`unexpected text: "${summary}"`);
  });

  await check('no uncaught error and no Content-Security-Policy violation', async () => {
    const msg = await alertText();
    if (msg) fail(`the alert region shows "${msg}"`);
    if (pageErrors.length) fail(pageErrors.join(' | '));
  });

  await check('logging out returns to the login page', async () => {
    const resp = page.waitForResponse((r) => apiPath('/api/v1/session')(r) && r.request().method() === 'DELETE');
    await tid('logout').click();
    const r = await resp;
    if (!r.ok()) fail(`DELETE /api/v1/session answered ${r.status()}`);
    await tid('login-form').waitFor();
    const again = await page.evaluate(async () => (await fetch('/api/v1/session', { credentials: 'same-origin' })).status);
    if (again !== 401) fail(`GET /api/v1/session after logout answered ${again}, expected 401`);
  });
}

main().then(
  () => {
    clearTimeout(watchdog);
    return finish(0);
  },
  (err) => {
    clearTimeout(watchdog);
    return finish(1, err);
  }
);
