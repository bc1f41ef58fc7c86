// Offset resets on `sluice demo`: the API's dry run and errors, and the
// wizard in a browser (preview numbers, apply, audit entry). Delivery after
// a reset is checked against a real broker in server/tests/reset.rs.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startSluice, api, launchBrowser, signIn } from "./sluice.mjs";

const DEMO = "51cede70-0000-4000-8000-000000000001";
let s, browser;
before(async () => { s = await startSluice("demo"); browser = await launchBrowser(); });
after(async () => { await browser?.close(); await s?.stop(); });

const reset = (body) => api(s.url, "POST", `/api/v1/mappings/${DEMO}/reset`, body);

test("a dry run previews per partition and changes nothing", async () => {
  // Let the demo commit something first, on both partitions previewed
  // (a partition still at 0 would be clamped, not shifted).
  for (let i = 0; i < 150; i++) {
    const r = (await reset({ Strategy: "SHIFT_BY", ShiftBy: -5, Partitions: [0, 2], DryRun: true })).body;
    if (r.Partitions?.length === 2 && r.Partitions.every((p) => p.Before > 10)) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  const r = await reset({ Strategy: "SHIFT_BY", ShiftBy: -5, Partitions: [0, 2], DryRun: true });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.equal(r.body.Applied, false);
  assert.deepEqual(r.body.Partitions.map((p) => p.Partition), [0, 2]);
  for (const p of r.body.Partitions) {
    assert.equal(p.After, p.Before - 5, JSON.stringify(p));
    assert.equal(p.Delta, -5);
    assert.equal(p.Reprocessed, 5);
  }
  const latest = (await reset({ Strategy: "LATEST", DryRun: true })).body;
  assert.equal(latest.Partitions.length, 6, "all partitions by default");
  for (const p of latest.Partitions) assert.equal(p.After, p.EndOffset);
  assert.deepEqual((await api(s.url, "GET", `/api/v1/mappings/${DEMO}/resets`)).body.Resets, [], "no audit entry for a dry run");
});

test("bad reset requests name their field", async () => {
  const cases = [
    [{ Strategy: "SHIFT_BY" }, "ShiftBy", /required/],
    [{ Strategy: "AT_TIMESTAMP" }, "Timestamp", /required/],
    [{ Strategy: "LATEST", ShiftBy: 3 }, "ShiftBy", /only applies to SHIFT_BY/],
    [{ Strategy: "LATEST", Partitions: [42], DryRun: true }, "Partitions", /partition 42 does not exist/],
    [{ Strategy: "OFFSETS", Offsets: { "0": -1 } }, "Offsets.0", /negative/],
    [{ Strategy: "SIDEWAYS" }, "Strategy", /unknown variant/],
  ];
  for (const [body, field, message] of cases) {
    const r = await reset(body);
    assert.equal(r.status, 400, JSON.stringify(body));
    assert.equal(r.body.Errors[0].Field, field, JSON.stringify(r.body));
    assert.match(r.body.Errors[0].Message, message);
  }
  const missing = await api(s.url, "POST", "/api/v1/mappings/00000000-0000-4000-8000-000000000000/reset", { Strategy: "LATEST" });
  assert.equal(missing.status, 404);
});

test("the wizard previews, applies and logs a reset", async () => {
  const page = await browser.newPage();
  await signIn(page.context(), s);
  page.on("pageerror", (e) => { throw new Error(`page error: ${e.message}`); });
  await page.goto(`${s.url}/mappings/${DEMO}`);
  await page.waitForSelector("body[data-hydrated=true]");
  await Promise.all([page.waitForURL(/\/reset$/), page.click("text=Reset position…")]);
  await page.waitForSelector("body[data-hydrated=true]");

  await page.check('input[name=Strategy][value=SHIFT_BY]');
  await page.fill("#ShiftBy", "-7");
  await page.check('input[name=Scope][value=some]');
  await page.check('input[name=Partitions][value="1"]');
  await page.check('input[name=Partitions][value="3"]');
  await page.click("button[value=preview]");
  await page.waitForSelector("[data-preview=true]");
  const rows = await page.$$eval("[data-preview] tr[data-partition]", (rs) => rs.map((r) => ({
    p: Number(r.dataset.partition),
    before: Number(r.querySelector('[data-col="Before"]').textContent),
    after: Number(r.querySelector('[data-col="After"]').textContent),
    delta: r.querySelector('[data-col="Delta"]').textContent,
    again: Number(r.querySelector('[data-col="Reprocessed"]').textContent),
  })));
  assert.deepEqual(rows.map((r) => r.p), [1, 3]);
  for (const r of rows) {
    assert.equal(r.after, Math.max(0, r.before - 7), JSON.stringify(r));
    assert.equal(r.again, r.before - r.after);
  }
  assert.match(await page.textContent('[data-field="Summary"]'), /2 partition\(s\): \d+ record\(s\) will be processed again, 0 will be skipped/);

  await page.click("button[value=apply]");
  await page.waitForSelector("[data-applied=true]", { timeout: 60_000 });
  const applied = await page.$$eval("[data-applied] tr[data-partition]", (rs) => rs.map((r) => Number(r.dataset.partition)));
  assert.deepEqual(applied, [1, 3]);

  // The audit log, on the mapping's page: who, what, and the offsets.
  const log = (await api(s.url, "GET", `/api/v1/mappings/${DEMO}/resets`)).body.Resets;
  assert.equal(log.length, 1);
  assert.equal(log[0].Actor, "admin (console)");
  assert.equal(log[0].Request.ShiftBy, -7);
  await page.goto(`${s.url}/mappings/${DEMO}`);
  const entry = await page.textContent(`tr[data-audit="${log[0].Id}"]`);
  assert.match(entry, /console/);
  assert.match(entry, /SHIFT_BY -7/);
  for (const p of log[0].Partitions) assert.ok(entry.includes(`${p.Partition}: ${p.Before} → ${p.After}`), entry);

  // The mapping runs again after the reset.
  const m = (await api(s.url, "GET", `/api/v1/mappings/${DEMO}`)).body;
  assert.ok(["Enabled", "Updating"].includes(m.State), m.State);
});

test("a bad wizard entry is shown at its field, without JavaScript too", async () => {
  const ctx = await browser.newContext({ javaScriptEnabled: false });
  await signIn(ctx, s);
  const page = await ctx.newPage();
  await page.goto(`${s.url}/mappings/${DEMO}/reset`);
  await page.check('input[name=Strategy][value=AT_TIMESTAMP]');
  await page.fill("#Timestamp", "yesterday-ish");
  const [r] = await Promise.all([page.waitForResponse((r) => r.request().method() === "POST"), page.click("button[value=preview]")]);
  assert.equal(r.status(), 422);
  assert.match(await page.textContent('[data-error-for="Timestamp"]'), /is not a time/);
  assert.equal(await page.inputValue("#Timestamp"), "yesterday-ish", "what was typed stays");
  await ctx.close();
});
