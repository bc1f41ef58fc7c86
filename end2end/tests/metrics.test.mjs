// The live console on `sluice demo`: charts that move without a reload, a
// lag line per partition, a health verdict that follows an outage, an
// advisor that names a hot partition, and a page that survives a restart.
import { test } from "node:test";
import assert from "node:assert/strict";
import { startSluice, api, launchBrowser, signIn } from "./sluice.mjs";

const DEMO = "51cede70-0000-4000-8000-000000000001";
const num = (s) => Number(String(s).replace(/[^\d.-]/g, ""));

test("the mapping page charts live metrics, follows an outage and survives a restart", async () => {
  // Most records on one key: a skewed producer for the advisor.
  const s = await startSluice("demo", ["--hot-key-share", "0.9"]);
  const browser = await launchBrowser();
  try {
    // Retry until success, so a stopped function holds records back (lag).
    const patched = await api(s.url, "PATCH", `/api/v1/mappings/${DEMO}`, { MaximumRetryAttempts: -1, BisectBatchOnFunctionError: false });
    assert.equal(patched.status, 200, JSON.stringify(patched.body));

    const p = await browser.newPage();
    await signIn(p.context(), s);
    await p.goto(`${s.url}/mappings/${DEMO}`);
    await p.waitForSelector("body[data-hydrated=true]");
    await p.waitForSelector("p.live[data-live=true]", { timeout: 10_000 });

    // Every chart the issue names is there, with units.
    const charts = await p.$$eval("figure.chart", (fs) => fs.map((f) => f.dataset.chart));
    for (const c of ["offset-lag", "invocations", "duration", "errors", "throttles", "concurrency"]) assert.ok(charts.includes(c), c);
    assert.match(await p.textContent('[data-chart="offset-lag"] .unit'), /records/);
    assert.match(await p.textContent('[data-chart="duration"] .unit'), /milliseconds/);

    // The Invocations series grows without a reload.
    const before = num(await p.getAttribute('[data-chart="invocations"]', "data-points"));
    await p.waitForFunction(
      (n) => Number(document.querySelector('[data-chart="invocations"]').dataset.points) > n + 1, before, { timeout: 15_000 });

    // Offset lag: one series per partition of the topic, and the total.
    await p.waitForFunction(() => document.querySelectorAll('[data-chart="offset-lag"] li[data-series]').length === 7, null, { timeout: 15_000 });
    const names = await p.$$eval('[data-chart="offset-lag"] li[data-series]', (ls) => ls.map((l) => l.dataset.series));
    assert.deepEqual(names, ["Partition 0", "Partition 1", "Partition 2", "Partition 3", "Partition 4", "Partition 5", "Total"]);

    // The advisor names the partition that carries most records.
    const advice = await p.waitForSelector('[data-advice="skewed-records"]', { timeout: 30_000 });
    const named = Number((await advice.textContent()).match(/^Partition (\d+) carries/)[1]);
    const rates = await p.$$eval("table.partitions tbody tr", (rs) => rs.map((r) => [Number(r.dataset.partition), parseFloat(r.cells[1].textContent)]));
    const top = rates.reduce((a, b) => (b[1] > a[1] ? b : a));
    assert.equal(named, top[0], JSON.stringify(rates));

    // Health is OK while the function works.
    await p.waitForSelector('.verdict [data-health="OK"]', { timeout: 20_000 });
    const lagBefore = num(await p.textContent('[data-chart="offset-lag"] li[data-series="Total"] .last'));

    // The function stops: lag rises on the chart and the verdict changes.
    await api(s.url, "POST", "/demo/outage?on=true");
    try {
      await p.waitForFunction(
        (n) => Number(document.querySelector('[data-chart="offset-lag"] li[data-series="Total"] .last').dataset.last) > n + 100,
        lagBefore, { timeout: 30_000 });
      const verdict = await p.waitForSelector('.verdict [data-health="Failing"]', { timeout: 30_000 });
      assert.ok(verdict);
      assert.match(await p.textContent('[data-field="HealthReason"]'), /invocations .*failed/);
      // The overview says so too.
      const row = (await api(s.url, "GET", "/api/v1/overview")).body.Mappings.find((m) => m.UUID === DEMO);
      assert.equal(row.Health, "Failing", JSON.stringify(row));
    } finally {
      await api(s.url, "POST", "/demo/outage?on=false");
    }

    // A server restart: the open page reconnects by itself and moves on.
    const restartedAt = Date.now();
    await s.restart();
    await p.waitForFunction((t) => Number(document.querySelector(".charts").dataset.end) > t + 1000, restartedAt, { timeout: 20_000 });
    assert.equal(await p.getAttribute("p.live", "data-live"), "true");

    // History survives the restart: points from before it are served.
    const h = (await api(s.url, "GET", `/api/v1/mappings/${DEMO}/metrics?Range=1h`)).body.History;
    assert.ok(h.Points.some((pt) => pt.Time - pt.PeriodMs < restartedAt - 1000 && pt.Invocations > 0), JSON.stringify(h.Points.map((pt) => [pt.Time, pt.PeriodMs, pt.Invocations])));
    assert.equal(h.Range, "1h");
  } finally {
    await browser.close();
    await s.stop();
  }
});

test("the overview shows each mapping's health, lag sparkline and rates", async () => {
  const s = await startSluice("demo");
  const browser = await launchBrowser();
  try {
    const p = await browser.newPage();
    await signIn(p.context(), s);
    await p.goto(`${s.url}/`);
    await p.waitForSelector("body[data-hydrated=true]");
    const row = `tr[data-uuid="${DEMO}"]`;
    await p.waitForSelector(`${row} [data-health="OK"]`, { timeout: 20_000 });
    await p.waitForSelector(`${row} td.spark svg polyline`);
    await p.waitForFunction((r) => Number(document.querySelector(`${r} [data-live="records-per-s"]`).textContent) > 0, row, { timeout: 15_000 });

    // Prometheus sees the same mapping, per partition.
    const prom = await (await fetch(`${s.url}/metrics`, { headers: s.auth })).text();
    assert.match(prom, new RegExp(`sluice_invocations_total\\{mapping="${DEMO}"`));
    assert.match(prom, new RegExp(`sluice_pollers\\{mapping="${DEMO}"[^}]*\\} [1-6]\n`));
    for (let part = 0; part < 6; part++) assert.match(prom, new RegExp(`sluice_offset_lag\\{mapping="${DEMO}".*partition="${part}"\\} \\d+`));

    // The API refuses a range it does not know, by name.
    const bad = await api(s.url, "GET", `/api/v1/mappings/${DEMO}/metrics?Range=2w`);
    assert.equal(bad.status, 400);
    assert.equal(bad.body.Errors[0].Field, "Range");
  } finally {
    await browser.close();
    await s.stop();
  }
});
