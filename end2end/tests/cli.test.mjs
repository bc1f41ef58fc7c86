// The binary as a user meets it: its help, and `sluice demo`.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { startSluice, api, launchBrowser, signIn } from "./sluice.mjs";

const help = (...args) => execFileSync(process.env.SLUICE_BIN, [...args, "--help"], { encoding: "utf8" });

test("sluice --help lists serve and demo", () => {
  const out = help();
  assert.match(out, /Usage: sluice <COMMAND>/);
  assert.match(out, /serve/);
  assert.match(out, /demo/);
});

test("serve and demo take --listen, --database-url and --data-dir, with their environment variables", () => {
  for (const cmd of ["serve", "demo"]) {
    const out = help(cmd);
    for (const [flag, env] of [["--listen", "SLUICE_LISTEN"], ["--database-url", "SLUICE_DATABASE_URL"], ["--data-dir", "SLUICE_DATA_DIR"]]) {
      assert.ok(out.includes(flag), `${cmd} ${flag}`);
      assert.ok(out.includes(env), `${cmd} ${env}`);
    }
  }
});

test("a database URL that cannot be opened is a clear error, not a panic", () => {
  let err;
  try {
    execFileSync(process.env.SLUICE_BIN, ["serve", "--listen", "127.0.0.1:0", "--database-url", "sqlite:///nonexistent-dir/x.db"], { encoding: "utf8", stdio: "pipe" });
  } catch (e) { err = e; }
  assert.ok(err, "sluice must exit");
  assert.equal(err.status, 1);
  assert.match(err.stderr, /cannot open the database at sqlite:\/\/\/nonexistent-dir\/x.db/);
});

test("sluice demo serves the console with the demo mapping and a demo function", async () => {
  const s = await startSluice("demo");
  try {
    const list = (await api(s.url, "GET", "/api/v1/mappings")).body.EventSourceMappings;
    assert.equal(list.length, 1);
    const m = list[0];
    assert.deepEqual(m.Topics, ["demo-orders"]);
    assert.equal(m.FunctionName, `${s.url}/demo/function`);
    assert.match(s.output(), /topic demo-orders \(6 partitions\)/);

    // The demo function mostly succeeds, sometimes fails or throttles.
    const event = { eventSource: "SelfManagedKafka", bootstrapServers: "x:1", records: { "demo-orders-0": [] } };
    const statuses = {};
    for (let i = 0; i < 300; i++) {
      const r = await fetch(m.FunctionName, { method: "POST", body: JSON.stringify(event) });
      statuses[r.status] = (statuses[r.status] || 0) + 1;
      await r.text();
    }
    assert.ok(statuses[200] > 250, JSON.stringify(statuses));
    assert.ok((statuses[500] || 0) + (statuses[429] || 0) > 0, JSON.stringify(statuses));

    const page = await (await fetch(`${s.url}/`, { headers: s.auth })).text();
    assert.ok(page.includes("demo-orders"));

    // The engine runs the demo mapping: records flow and are committed.
    const t = Date.now();
    let c;
    while (Date.now() - t < 30000) {
      c = (await api(s.url, "GET", `/api/v1/mappings/${m.UUID}/metrics`)).body;
      if (c.Running && c.Counters.CommittedEventCount > 50) break;
      await new Promise((r) => setTimeout(r, 250));
    }
    assert.ok(c.Counters.CommittedEventCount > 50, JSON.stringify(c));
    assert.ok(c.Counters.Invocations > 0);

    // The mapping's page shows the counts moving, without a reload.
    const browser = await launchBrowser();
    try {
      const p = await browser.newPage();
      await signIn(p.context(), s);
      await p.goto(`${s.url}/mappings/${m.UUID}`);
      await p.waitForSelector("body[data-hydrated=true]");
      const before = Number(await p.textContent('[data-counter="CommittedEventCount"]'));
      await p.waitForFunction((n) => Number(document.querySelector('[data-counter="CommittedEventCount"]').textContent) > n, before, { timeout: 15000 });
      // The list shows each mapping's lag and invocations, moving too.
      await p.goto(`${s.url}/`);
      await p.waitForSelector("body[data-hydrated=true]");
      const inv = Number(await p.textContent('[data-live="invocations"]'));
      assert.ok(Number.isFinite(inv) && inv > 0, `invocations cell: ${inv}`);
      assert.match(await p.textContent('[data-live="lag"]'), /^\d+$/);
      await p.waitForFunction((n) => Number(document.querySelector('[data-live="invocations"]').textContent) > n, inv, { timeout: 15000 });
    } finally {
      await browser.close();
    }
  } finally {
    await s.stop();
  }
});
