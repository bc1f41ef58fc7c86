// No script injection: markup that closes <textarea>, <title> and <script>,
// or breaks out of an attribute, is put into every field a user can set and
// every query parameter a page reads; each page is loaded in Chromium (with
// JavaScript, hydrated, and without) and must run none of it, show it as
// typed, and report no Content-Security-Policy violation (which would mean
// either an injection the CSP caught, or a script of ours it blocks).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startSluice, launchBrowser, api, validMapping, signIn } from "./sluice.mjs";

let s, browser, id;
// Each breaker calls top.__x(n) if it ever runs.
const P = (n) => `</title></textarea></script>"'><svg onload=top.__x(${n})><img src=x onerror=top.__x(${n})><script>top.__x(${n})</script>`;
const PATTERN = JSON.stringify({ value: { kind: [P(6)] } });
const PEM = `-----BEGIN CERTIFICATE-----\n${P(7)}\n-----END CERTIFICATE-----`;

before(async () => {
  s = await startSluice();
  browser = await launchBrowser();
  const created = await api(s.url, "POST", "/api/v1/mappings", validMapping({
    Name: P(1),
    Description: P(2),
    FunctionName: `http://127.0.0.1:9/fn?a="><svg/onload=top.__x(3)>`,
    Enabled: false,
    FilterCriteria: { Filters: [{ Pattern: PATTERN }] },
    SourceAccessConfigurations: [
      { Type: "BASIC_AUTH", Username: `u"'><svg onload=top.__x(5)>`, Password: "a-password-1234" },
      { Type: "SERVER_ROOT_CA_CERTIFICATE", Certificate: PEM },
    ],
  }));
  assert.equal(created.status, 201, JSON.stringify(created.body));
  id = created.body.UUID;
  // An edit, so the audit log's diff carries the markup too.
  const edited = await api(s.url, "PATCH", `/api/v1/mappings/${id}`, { Description: P(8) });
  assert.equal(edited.status, 200, JSON.stringify(edited.body));
});
after(async () => { await browser?.close(); await s?.stop(); });

const q = (o) => new URLSearchParams(o).toString();

function pages() {
  return [
    ["/", null],
    [`/mappings/${id}`, { title: P(1) }],
    [`/mappings/${id}?${q({ position_changed: P(9), at: P(10) })}`, null],
    [`/mappings/${id}/edit`, { title: P(1), fields: { Name: P(1), Description: P(8), FilterCriteria: PATTERN } }],
    [`/mappings/${id}/reset?${q({ Strategy: P(11), Timestamp: P(12), TimeZone: P(13) })}`, { title: P(1) }],
    [`/mappings/${id}/filters`, { title: P(1), fields: { patterns: PATTERN } }],
    [`/mappings/${id}/filters?${q({ patterns: P(14), values: P(15), sent: "1" })}`, { fields: { patterns: P(14), values: P(15) } }],
    ["/audit", null],
    ["/nodes", null],
    [`/nowhere/${encodeURIComponent(P(16))}`, null],
  ];
}

async function visit(ctx, path, js) {
  const page = await ctx.newPage();
  await page.addInitScript(() => {
    window.__hits = [];
    window.__x = (n) => window.__hits.push(n);
    window.__violations = [];
    document.addEventListener("securitypolicyviolation", (e) => window.__violations.push(`${e.violatedDirective} ${e.blockedURI} ${e.sample}`));
  });
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  await page.goto(s.url + path);
  if (js) await page.waitForSelector("body[data-hydrated=true]", { timeout: 20_000 });
  await page.waitForTimeout(300);
  return { page, errors };
}

// What the document holds that only an injection could have put there.
async function injected(page) {
  return page.evaluate(() => {
    const found = [];
    for (const el of document.querySelectorAll("[onload], [onerror]")) found.push(el.outerHTML);
    // Leptos's own data script holds the text too, inside a JS string.
    for (const sc of document.scripts) if (sc.textContent.trim().startsWith("top.__x(")) found.push(sc.outerHTML);
    return found;
  });
}

for (const js of [true, false]) {
  const mode = js ? "hydrated" : "without JavaScript";

  test(`${mode}: no page runs markup from a field or a query parameter, and each shows it as typed`, async () => {
    const ctx = await browser.newContext({ javaScriptEnabled: js });
    await signIn(ctx, s);
    for (const [path, want] of pages()) {
      const { page, errors } = await visit(ctx, path, js);
      assert.deepEqual(await injected(page), [], `${path}: injected elements`);
      if (js) {
        assert.deepEqual(await page.evaluate(() => window.__hits), [], `${path}: an injected script ran`);
        assert.deepEqual(await page.evaluate(() => window.__violations), [], `${path}: CSP violations`);
        assert.deepEqual(errors, [], `${path}: page errors`);
      }
      if (want?.title) assert.ok((await page.title()).includes(want.title), `${path}: the title is not as typed: ${await page.title()}`);
      for (const [name, value] of Object.entries(want?.fields ?? {})) {
        assert.equal(await page.locator(`[name="${name}"]`).inputValue(), value, `${path}: ${name} is not as typed`);
      }
      await page.close();
    }
    // The settings view shows the name and the CA certificate as text.
    const { page } = await visit(ctx, `/mappings/${id}`, js);
    assert.ok((await page.locator("body").innerText()).includes(P(1)), "the name is shown as text");
    await ctx.close();
  });

  test(`${mode}: the sign-in page shows its query parameters only as text`, async () => {
    const ctx = await browser.newContext({ javaScriptEnabled: js });
    const { page, errors } = await visit(ctx, `/login?${q({ next: P(20), username: P(21), error: P(22) })}`, js);
    assert.deepEqual(await injected(page), []);
    if (js) {
      assert.deepEqual(await page.evaluate(() => window.__hits), []);
      assert.deepEqual(await page.evaluate(() => window.__violations), []);
      assert.deepEqual(errors, []);
    }
    assert.equal(await page.locator('[name="username"]').inputValue(), P(21));
    // An unknown error code shows Sluice's words, not the link's.
    const text = await page.locator("body").innerText();
    assert.ok(text.includes("Sign-in failed.") && !text.includes("top.__x(22)"), text);
    await ctx.close();
  });
}
