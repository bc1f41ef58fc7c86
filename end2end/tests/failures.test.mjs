// The "Failed records" tab in a real Chromium, on `sluice demo`'s broker: a
// mapping whose function (served here) fails every record gives up on
// them; the tab lists them with their condition and error, shows a record
// read from the topic, and redrives a selection once the function is fixed,
// the progress and the new state appearing without a reload. The API's
// list, filters and errors too.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { startSluice, launchBrowser, signIn, api } from "./sluice.mjs";

const DEMO = "51cede70-0000-4000-8000-000000000001";
let s, browser, fn, fnUrl, mapping;
let failing = true;
const delivered = [];

before(async () => {
  fn = http.createServer((req, res) => {
    let body = "";
    req.on("data", (c) => (body += c));
    req.on("end", () => {
      if (failing) { res.writeHead(500); return res.end('{"errorMessage":"the test function is broken"}'); }
      const event = JSON.parse(body);
      for (const recs of Object.values(event.records)) for (const r of recs) delivered.push(`${r.partition}-${r.offset}`);
      res.writeHead(200); res.end("{}");
    });
  });
  await new Promise((r) => fn.listen(0, "127.0.0.1", r));
  fnUrl = `http://127.0.0.1:${fn.address().port}/fn`;
  s = await startSluice("demo");
  browser = await launchBrowser();
  const demo = (await api(s.url, "GET", `/api/v1/mappings/${DEMO}`)).body;
  const created = await api(s.url, "POST", "/api/v1/mappings", {
    FunctionName: fnUrl,
    Topics: demo.Topics,
    SelfManagedEventSource: demo.SelfManagedEventSource,
    SelfManagedKafkaEventSourceConfig: { ConsumerGroupId: "failures-e2e" },
    StartingPosition: "LATEST",
    MaximumRetryAttempts: 0,
    BatchSize: 5,
    Name: "breaks-on-everything",
  });
  assert.equal(created.status, 201, JSON.stringify(created.body));
  mapping = created.body.UUID;
  // Let a few dozen records fail, then stop taking more.
  for (let i = 0; i < 200; i++) {
    const page = (await api(s.url, "GET", `/api/v1/mappings/${mapping}/failures?MaxItems=1`)).body;
    if (page.Total >= 20) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  await api(s.url, "POST", `/api/v1/mappings/${mapping}/disable`);
  await new Promise((r) => setTimeout(r, 1500));
});
after(async () => { await browser?.close(); await s?.stop(); fn?.close(); });

test("the API lists failed records newest first, filtered and paged", async () => {
  const all = (await api(s.url, "GET", `/api/v1/mappings/${mapping}/failures?MaxItems=1000`)).body;
  assert.ok(all.Total >= 20, JSON.stringify(all).slice(0, 300));
  const f = all.Failures[0];
  assert.equal(f.Condition, "RetryAttemptsExhausted");
  assert.equal(f.Destination, "dropped");
  assert.equal(f.Attempts, 1);
  assert.match(f.Error, /500/);
  for (const key of ["Partition", "Offset", "Key", "Timestamp", "FailedAt"]) assert.ok(key in f, key);
  for (let i = 1; i < all.Failures.length; i++) assert.ok(all.Failures[i - 1].FailedAt >= all.Failures[i].FailedAt, "newest first");
  const p = all.Failures[0].Partition;
  const one = (await api(s.url, "GET", `/api/v1/mappings/${mapping}/failures?Partition=${p}&MaxItems=2`)).body;
  assert.ok(one.Failures.every((r) => r.Partition === p));
  if (one.Total > 2) {
    const next = (await api(s.url, "GET", `/api/v1/mappings/${mapping}/failures?Partition=${p}&MaxItems=2&Marker=${one.NextMarker}`)).body;
    assert.ok(next.Failures.every((r) => !one.Failures.some((o) => o.Offset === r.Offset)), "no record on two pages");
  }
  const bad = await api(s.url, "GET", `/api/v1/mappings/${mapping}/failures?Condition=Oops`);
  assert.equal(bad.status, 400);
  assert.equal(bad.body.Errors[0].Field, "Condition");
  const none = await api(s.url, "POST", `/api/v1/mappings/${mapping}/failures/redrive`, {});
  assert.equal(none.status, 400);
  assert.equal(none.body.Errors[0].Field, "All");
  const unknown = await api(s.url, "POST", `/api/v1/mappings/${mapping}/failures/redrive`, { Records: [{ Partition: 0, Offset: 999999999 }] });
  assert.equal(unknown.status, 400);
  assert.match(unknown.body.Message, /not a failed record/);
  // The overview and Prometheus count them.
  const overview = (await api(s.url, "GET", "/api/v1/overview")).body.Mappings.find((m) => m.UUID === mapping);
  assert.equal(overview.FailedRecords, all.Total);
  const prom = await api(s.url, "GET", "/metrics");
  assert.match(prom.body, new RegExp(`sluice_failed_records\\{mapping="${mapping}"[^}]*\\} ${all.Total}\\b`));
});

test("the tab lists the failures and redrives a selection without a reload", async () => {
  const ctx = await browser.newContext();
  await signIn(ctx, s);
  const page = await ctx.newPage();
  page.on("pageerror", (e) => { throw new Error(`page error: ${e.message}`); });
  // The mapping page opens on the verdict and the lag chart, with the tab.
  await page.goto(`${s.url}/mappings/${mapping}`);
  await page.waitForSelector("body[data-hydrated=true]", { timeout: 20_000 });
  const order = await page.evaluate(() => {
    const at = (sel) => { const el = document.querySelector(sel); return el ? el.getBoundingClientRect().top + window.scrollY : -1; };
    return { verdict: at("[data-health]"), lag: at('[data-chart="offset-lag"]'), settings: at("section.settings") };
  });
  assert.ok(order.verdict >= 0 && order.verdict < order.lag && order.lag < order.settings, JSON.stringify(order));
  await page.click('a[data-tab="failures"]');
  await page.waitForSelector("tr[data-record]");
  await page.waitForSelector("body[data-hydrated=true]", { timeout: 20_000 });
  await page.evaluate(() => { window.__stillHere = true; });

  const rows = await page.$$eval("tr[data-record]", (trs) => trs.map((tr) => ({
    id: tr.dataset.record, condition: tr.dataset.condition, redrive: tr.dataset.redrive, text: tr.textContent,
  })));
  assert.ok(rows.length >= 20, `${rows.length} rows`);
  assert.ok(rows.every((r) => r.condition === "RetryAttemptsExhausted" && r.redrive === "None"));
  assert.match(rows[0].text, /the test function is broken|500/);
  // A record, read from the topic on demand.
  const first = rows[0].id;
  await page.click(`tr[data-record="${first}"] [data-action="show-record"]`);
  const shown = await page.waitForSelector(`tr[data-shown="${first}"]`);
  assert.match(await shown.textContent(), /Value/);
  // The function is fixed; redrive two of them.
  failing = false;
  const chosen = rows.slice(0, 2).map((r) => r.id);
  for (const id of chosen) await page.check(`tr[data-record="${id}"] input[type=checkbox]`);
  await page.click('[data-action="redrive-selected"]');
  await page.waitForSelector('section.redrive[data-state="Done"]', { timeout: 30_000 });
  assert.match(await page.textContent("section.redrive"), /2 of 2 records: 2 succeeded, 0 failed, 0 gone/);
  const succeeded = (await api(s.url, "GET", `/api/v1/mappings/${mapping}/failures?Redrive=Succeeded`)).body;
  assert.deepEqual(succeeded.Failures.map((r) => `${r.Partition}-${r.Offset}`).sort(), [...chosen].sort(), "the ledger says so");
  for (const id of chosen) {
    await page.waitForSelector(`tr[data-record="${id}"][data-redrive="Succeeded"]`, { timeout: 10_000 });
  }
  assert.equal(await page.evaluate(() => window.__stillHere), true, "no reload");
  assert.deepEqual([...delivered].sort(), [...chosen].sort(), "each redriven record reached the function once");
  // The audit log names the redrive.
  const audit = (await api(s.url, "GET", "/api/v1/audit")).body;
  const entries = (audit.Entries || audit).filter((e) => e.Action?.includes("/failures/redrive") || e.action?.includes("/failures/redrive"));
  assert.ok(entries.length >= 1, JSON.stringify(audit).slice(0, 500));
  assert.match(JSON.stringify(entries[0]), /redrive .* of 2 failed records/);
  await ctx.close();
});

test("without JavaScript the redrive form posts and the job's page follows it", async () => {
  failing = false;
  const ctx = await browser.newContext({ javaScriptEnabled: false });
  await signIn(ctx, s);
  const page = await ctx.newPage();
  await page.goto(`${s.url}/mappings/${mapping}/failures?redrive=None`);
  const ids = await page.$$eval('tr[data-redrive="None"]', (trs) => trs.slice(0, 3).map((tr) => tr.dataset.record));
  assert.equal(ids.length, 3);
  for (const id of ids) await page.check(`tr[data-record="${id}"] input[type=checkbox]`);
  await page.click('[data-action="redrive-selected"]');
  assert.match(page.url(), /\/failures\?job=/);
  let text = "";
  for (let i = 0; i < 50; i++) {
    text = await page.textContent("section.redrive");
    if (/3 of 3 records/.test(text)) break;
    await new Promise((r) => setTimeout(r, 200));
    await page.reload();
  }
  assert.match(text, /3 of 3 records: 3 succeeded/);
  const audit = JSON.stringify((await api(s.url, "GET", "/api/v1/audit")).body);
  assert.match(audit, /redrive [^"]* of 3 failed records/);
  await ctx.close();
});
