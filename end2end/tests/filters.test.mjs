// The console's filter tester on `sluice demo`: typed values and the
// topic's newest records, each with its verdict and what decided it; live
// as you type when hydrated, by form submit without JavaScript.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startSluice, launchBrowser, signIn } from "./sluice.mjs";

const DEMO = "51cede70-0000-4000-8000-000000000001";
let s, browser;
before(async () => { s = await startSluice("demo"); browser = await launchBrowser(); });
after(async () => { await browser?.close(); await s?.stop(); });

const verdicts = (page, table) =>
  page.$$eval(`[data-results="${table}"] tbody tr`, (rs, col) => rs.map((r) => ({
    value: r.cells[col].textContent,
    verdict: r.querySelector("[data-verdict]").dataset.verdict,
    decided: r.querySelector("[data-verdict] + td").textContent,
  })), table === "values" ? 0 : 2);

test("typed values get their verdict as you type, with the deciding filter or field", async () => {
  const page = await browser.newPage();
  await signIn(page.context(), s);
  page.on("pageerror", (e) => { throw new Error(`page error: ${e.message}`); });
  await page.goto(`${s.url}/mappings/${DEMO}`);
  await page.waitForSelector("body[data-hydrated=true]");
  await Promise.all([page.waitForURL(/\/filters$/), page.click("text=Test filters")]);
  await page.waitForSelector("body[data-hydrated=true]");
  await page.fill("#patterns", '{"value": {"type": ["refund"]}}\n{"value": {"amount": [{"numeric": [">", 400]}]}}');
  await page.fill("#values", '{"type": "refund", "amount": 5}\n{"type": "order", "amount": 450}\n{"type": "order", "amount": 20}\nnot json');
  await page.waitForFunction(() => document.querySelectorAll('[data-results="values"] tbody tr').length === 4);
  const v = await verdicts(page, "values");
  assert.deepEqual(v.map((r) => r.verdict), ["invoked", "invoked", "filtered", "filtered"]);
  assert.match(v[0].decided, /filter 1/);
  assert.match(v[1].decided, /filter 2/);
  assert.match(v[2].decided, /value\.type/, "the field that failed the first filter");

  // A bad pattern is shown with its reason, as the form would refuse it.
  await page.fill("#patterns", '{"value": {"type": "refund"}}');
  await page.waitForSelector('[data-error-for="patterns"]');
  assert.match(await page.textContent('[data-error-for="patterns"]'), /Filter 1 \(line 1\): Event pattern is not valid/);
});

test("the topic's newest records are loaded and judged as the mapping would, without JavaScript too", async () => {
  const ctx = await browser.newContext({ javaScriptEnabled: false });
  await signIn(ctx, s);
  const page = await ctx.newPage();
  await page.goto(`${s.url}/mappings/${DEMO}/filters`);
  await page.fill("#patterns", '{"value": {"type": ["refund"]}}');
  await Promise.all([page.waitForURL(/load=20/), page.click('button[name="load"]')]);
  const rows = await verdicts(page, "records");
  assert.ok(rows.length >= 10, `${rows.length} records`);
  for (const r of rows) {
    const refund = JSON.parse(r.value).type === "refund";
    assert.equal(r.verdict, refund ? "invoked" : "filtered", r.value);
  }
  assert.equal(await page.inputValue("#patterns"), '{"value": {"type": ["refund"]}}', "the patterns stay");
  await ctx.close();
});
