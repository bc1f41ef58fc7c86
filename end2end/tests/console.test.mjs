// The console in a real Chromium, with JavaScript (hydrated) and without.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startSluice, launchBrowser, api, validMapping, waitState, signIn, ADMIN_PASSWORD } from "./sluice.mjs";

let s, browser;
before(async () => { s = await startSluice(); browser = await launchBrowser(); });
after(async () => { await browser?.close(); await s?.stop(); });

const SERVERS = "SelfManagedEventSource.Endpoints.KAFKA_BOOTSTRAP_SERVERS";
const GROUP = "SelfManagedKafkaEventSourceConfig.ConsumerGroupId";
const byName = (n) => `[name="${n}"]`;
const errorsFor = async (page, field) => page.locator(`[data-error-for="${field}"]`).allTextContents();

async function newPage({ js }) {
  const ctx = await browser.newContext({ javaScriptEnabled: js });
  await signIn(ctx, s);
  const page = await ctx.newPage();
  page.on("pageerror", (e) => { throw new Error(`page error: ${e.message}`); });
  return page;
}

async function open(page, path, { js }) {
  const r = await page.goto(s.url + path);
  if (js) await page.waitForSelector("body[data-hydrated=true]", { timeout: 20_000 });
  return r;
}

async function fillValid(page, name) {
  await page.fill(byName("Name"), name);
  await page.fill(byName("FunctionName"), "http://127.0.0.1:9/fn");
  await page.fill(byName("Topics"), "orders");
  await page.fill(byName(SERVERS), "127.0.0.1:9092");
}

// Every error case the issue lists, entered in the form.
const BAD = [
  ["BatchSize 0", "BatchSize", async (p) => p.fill(byName("BatchSize"), "0"), /between 1 and 10000/],
  ["a window of 301 s", "MaximumBatchingWindowInSeconds", async (p) => p.fill(byName("MaximumBatchingWindowInSeconds"), "301"), /0 and 300/],
  ["a malformed host:port", SERVERS, async (p) => p.fill(byName(SERVERS), "broker-1"), /not host:port/],
  ["a topic with a space", "Topics", async (p) => p.fill(byName("Topics"), "my orders"), /not a valid topic name/],
  ["eleven filters", "FilterCriteria", async (p) => p.fill(byName("FilterCriteria"), Array(11).fill('{"value":{"a":[1]}}').join("\n")), /at most 10 filters/],
  ["AT_TIMESTAMP without a timestamp", "StartingPositionTimestamp", async (p) => p.selectOption(byName("StartingPosition"), "AT_TIMESTAMP"), /required when StartingPosition is AT_TIMESTAMP/],
  ["AT_TIMESTAMP in the future", "StartingPositionTimestamp", async (p) => {
    await p.selectOption(byName("StartingPosition"), "AT_TIMESTAMP");
    await p.fill(byName("StartingPositionTimestamp"), new Date(Date.now() + 86400_000).toISOString());
  }, /must not be in the future/],
];

for (const js of [false, true]) {
  const mode = js ? "hydrated" : "without JavaScript";

  for (const [what, field, enter, message] of BAD) {
    test(`${mode}: the form refuses ${what} under its field and keeps what was typed`, async () => {
      const page = await newPage({ js });
      await open(page, "/mappings/new", { js });
      await fillValid(page, `bad-${what}`);
      await enter(page);
      const before = (await api(s.url, "GET", "/api/v1/mappings")).body.EventSourceMappings.length;
      if (js) {
        // Leaving the field shows its error before any submit.
        await page.focus(byName(field));
        await page.locator(byName(field)).blur();
        await page.locator(`[data-error-for="${field}"]`).first().waitFor();
        assert.match((await errorsFor(page, field)).join(" "), message);
        await page.click("main button[type=submit]");
        assert.match(page.url(), /\/mappings\/new$/, "the submit was blocked");
      } else {
        const [resp] = await Promise.all([page.waitForNavigation(), page.click("main button[type=submit]")]);
        assert.equal(resp.status(), 422);
        assert.match((await errorsFor(page, field)).join(" "), message);
        assert.equal(await page.inputValue(byName("Name")), `bad-${what}`, "typed values are kept");
        assert.equal(await page.getAttribute(byName(field), "aria-invalid"), "true");
      }
      assert.ok(await page.locator(".error-banner").isVisible() || js);
      // Only the bad field is marked.
      assert.deepEqual(await errorsFor(page, "FunctionName"), []);
      assert.equal((await api(s.url, "GET", "/api/v1/mappings")).body.EventSourceMappings.length, before, "nothing stored");
      await page.context().close();
    });
  }

  test(`${mode}: create a mapping, see it in the list and on its own page`, async () => {
    const page = await newPage({ js });
    await open(page, "/", { js });
    await page.click("text=Create mapping");
    if (js) await page.waitForURL(/\/mappings\/new$/);
    await page.waitForSelector(byName("FunctionName"));
    await fillValid(page, `created-${mode}`);
    await page.fill(byName("BatchSize"), "250");
    await Promise.all([page.waitForURL(/\/mappings\/[0-9a-f-]{36}$/), page.click("main button[type=submit]")]);
    const uuid = page.url().split("/").pop();
    assert.equal(await page.textContent("h1"), `created-${mode}`);
    assert.equal(await page.textContent('[data-field="BatchSize"]'), "250");
    assert.equal(await page.textContent('[data-field="UUID"]'), uuid);
    assert.equal(await page.textContent('[data-field="ConsumerGroupId"]'), uuid);
    await open(page, "/", { js });
    assert.ok(await page.locator(`tr[data-uuid="${uuid}"]`).isVisible());
    await page.context().close();
  });

  test(`${mode}: edit every field of a mapping`, async () => {
    const m = (await api(s.url, "POST", "/api/v1/mappings", validMapping({ Name: `edit-${mode}` }))).body;
    const page = await newPage({ js });
    await open(page, `/mappings/${m.UUID}/edit`, { js });
    assert.equal(await page.inputValue(byName("Name")), `edit-${mode}`, "the form opens with the saved values");
    const hourAgo = Math.floor(Date.now() / 1000) - 3600;
    const values = {
      Name: `edited-${mode}`, Description: "now with every field", FunctionName: "arn:aws:lambda:us-east-1:123456789012:function:fn:prod",
      Topics: "payments", [SERVERS]: "10.0.0.1:9092, [::1]:9093", [GROUP]: `group-${js}`, BatchSize: "7",
      MaximumBatchingWindowInSeconds: "0", StartingPositionTimestamp: new Date(hourAgo * 1000).toISOString(),
      FilterCriteria: '{"value":{"kind":["a"]}}\n{"value":{"kind":[{"prefix":"b"}]}}', "DestinationConfig.OnFailure.Destination": "kafka://payments-dlq",
      MaximumRetryAttempts: "5", MaximumRecordAgeInSeconds: "600",
      "ProvisionedPollerConfig.MinimumPollers": "2", "ProvisionedPollerConfig.MaximumPollers": "4",
    };
    for (const [k, v] of Object.entries(values)) await page.fill(byName(k), v);
    await page.selectOption(byName("StartingPosition"), "AT_TIMESTAMP");
    await page.check(byName("BisectBatchOnFunctionError"));
    await page.check(byName("FunctionResponseTypes"));
    await page.check(byName("FilterOnRecordMetadata"));
    await page.uncheck(byName("Enabled"));
    // A changed starting position: the mapping's page offers the reset that moves the group.
    await Promise.all([page.waitForURL(new RegExp(`/mappings/${m.UUID}\\?position_changed=AT_TIMESTAMP`)), page.click("main button[type=submit]")]);
    assert.equal(await page.textContent("h1"), `edited-${mode}`);
    const offer = await page.getAttribute('[data-notice="position-changed"] a', "href");
    assert.match(offer, new RegExp(`/mappings/${m.UUID}/reset\\?from=edit&Strategy=AT_TIMESTAMP&Timestamp=`));

    const saved = (await api(s.url, "GET", `/api/v1/mappings/${m.UUID}`)).body;
    assert.equal(saved.Name, `edited-${mode}`);
    assert.equal(saved.Description, "now with every field");
    assert.equal(saved.FunctionName, "arn:aws:lambda:us-east-1:123456789012:function:fn:prod");
    assert.deepEqual(saved.Topics, ["payments"]);
    assert.deepEqual(saved.SelfManagedEventSource.Endpoints.KAFKA_BOOTSTRAP_SERVERS, ["10.0.0.1:9092", "[::1]:9093"]);
    assert.equal(saved.SelfManagedKafkaEventSourceConfig.ConsumerGroupId, `group-${js}`);
    assert.equal(saved.BatchSize, 7);
    assert.equal(saved.MaximumBatchingWindowInSeconds, 0);
    assert.equal(saved.StartingPosition, "AT_TIMESTAMP");
    assert.equal(saved.StartingPositionTimestamp, hourAgo);
    assert.deepEqual(saved.FilterCriteria.Filters.map((f) => f.Pattern), values.FilterCriteria.split("\n"));
    assert.equal(saved.DestinationConfig.OnFailure.Destination, "kafka://payments-dlq");
    assert.equal(saved.MaximumRetryAttempts, 5);
    assert.equal(saved.MaximumRecordAgeInSeconds, 600);
    assert.equal(saved.BisectBatchOnFunctionError, true);
    assert.deepEqual(saved.FunctionResponseTypes, ["ReportBatchItemFailures"]);
    assert.equal(saved.FilterOnRecordMetadata, true);
    assert.deepEqual(saved.ProvisionedPollerConfig, { MinimumPollers: 2, MaximumPollers: 4 });
    assert.equal(saved.Enabled, false);
    await waitState(s.url, m.UUID, "Disabled");
    await page.context().close();
  });

  test(`${mode}: enable, disable, and delete after confirming`, async () => {
    const m = (await api(s.url, "POST", "/api/v1/mappings", validMapping({ Name: `toggle-${mode}` }))).body;
    const page = await newPage({ js });
    await waitState(s.url, m.UUID, "Enabled");
    await open(page, `/mappings/${m.UUID}`, { js });
    assert.equal(await page.textContent('[data-field="State"]'), "Enabled");
    await Promise.all([page.waitForNavigation(), page.click("button:has-text('Disable')")]);
    assert.match(await page.textContent('[data-field="State"]'), /^Disabl(ing|ed)$/);
    // Hydrated, the page follows the engine by itself.
    if (js) await page.waitForSelector('[data-field="State"]:text-is("Disabled")', { timeout: 5000 });
    await waitState(s.url, m.UUID, "Disabled");
    await open(page, `/mappings/${m.UUID}`, { js });
    assert.equal(await page.textContent('[data-field="State"]'), "Disabled");
    await Promise.all([page.waitForNavigation(), page.click("button:has-text('Enable')")]);
    assert.match(await page.textContent('[data-field="State"]'), /^Enabl(ing|ed)$/);

    const confirm = page.locator("button:has-text('Yes, delete this mapping')");
    assert.equal(await confirm.isVisible(), false, "delete asks first");
    await page.click("summary:has-text('Delete')");
    await Promise.all([page.waitForURL(s.url + "/"), confirm.click()]);
    assert.equal(await page.locator(`tr[data-uuid="${m.UUID}"]`).count(), 0);
    assert.equal((await api(s.url, "GET", `/api/v1/mappings/${m.UUID}`)).status, 404);
    await page.context().close();
  });
}

test("pages render on the server: the list and a mapping's page are complete HTML", async () => {
  const m = (await api(s.url, "POST", "/api/v1/mappings", validMapping({ Name: "<b>ssr</b>" }))).body;
  const list = await (await fetch(s.url + "/", { headers: s.auth })).text();
  assert.ok(list.includes(m.UUID));
  assert.ok(list.includes("&lt;b&gt;ssr&lt;/b&gt;"), "names are escaped");
  const r = await fetch(`${s.url}/mappings/${m.UUID}`, { headers: s.auth });
  assert.equal(r.status, 200);
  assert.match(await r.text(), /data-field="BatchSize">100</);
  assert.equal((await fetch(`${s.url}/mappings/00000000-0000-4000-8000-000000000000`, { headers: s.auth })).status, 404);
  assert.equal((await fetch(`${s.url}/no/such/page`, { headers: s.auth })).status, 404);
});

test("the Nodes page lists this node, its role and the pollers it runs; /readyz says it takes traffic", async () => {
  const created = await api(s.url, "POST", "/api/v1/mappings", validMapping({ Name: "nodes-page" }));
  assert.equal(created.status, 201);
  const id = created.body.UUID;
  // The heartbeat (every 2 s, at once when pollers change) reports the poller.
  let me;
  for (let i = 0; i < 50; i++) {
    const nodes = (await api(s.url, "GET", "/api/v1/nodes")).body;
    me = nodes.Nodes.find((n) => n.Id === nodes.ThisNode);
    if (me?.Leader && me.Pollers[id] >= 1) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  assert.ok(me?.Alive && me.Leader, `this node alive and the leader: ${JSON.stringify(me)}`);
  assert.ok(me.Pollers[id] >= 1, "it runs the new mapping's poller");

  const ready = await fetch(`${s.url}/readyz`);
  assert.equal(ready.status, 200);
  assert.equal((await ready.json()).Node, me.Id);

  const page = await newPage({ js: true });
  await open(page, "/nodes", { js: true });
  const row = page.locator(`tr[data-node="${me.Id}"]`);
  await row.waitFor();
  assert.match(await row.textContent(), /this node/);
  assert.equal(await row.locator("[data-role]").getAttribute("data-role"), "leader");
  assert.ok(Number(await row.locator("[data-pollers]").getAttribute("data-pollers")) >= 1);
  assert.match(await page.locator("footer.system").textContent(), new RegExp(`node ${me.Id}`));
  await page.context().close();
  await api(s.url, "DELETE", `/api/v1/mappings/${id}`);
});

for (const js of [true, false]) {
  test(`sign-in (${js ? "hydrated" : "no JavaScript"}): a page asks for it, a wrong password says so, the right one opens the page asked for; a viewer cannot change anything; sign-out ends the session`, async () => {
    const ctx = await browser.newContext({ javaScriptEnabled: js });
    const page = await ctx.newPage();
    const created = await api(s.url, "POST", "/api/v1/mappings", validMapping({ Name: `signin-${js}`, Enabled: false }));
    const id = created.body.UUID;
    await page.goto(`${s.url}/mappings/${id}`);
    assert.match(page.url(), /\/login\?next=\/mappings\//);
    await page.fill("#username", "admin");
    await page.fill("#password", "not-the-password");
    await page.click("main button[type=submit]");
    assert.match(await page.locator(".error-banner").textContent(), /Wrong user name or password/);
    await page.fill("#password", ADMIN_PASSWORD);
    await page.click("main button[type=submit]");
    await page.waitForURL(`${s.url}/mappings/${id}`);
    assert.equal(await page.locator('header [data-field="user"]').textContent(), "admin");

    // The admin is offered every action on the mapping and in the list.
    const actions = ["Edit", "Reset position…", "Test filters", "Enable", "Delete…"];
    const offered = async (p) => (await p.locator("main .actions").innerText()).split("\n").map((t) => t.trim());
    for (const a of actions) assert.ok((await offered(page)).includes(a), `admin offered ${a}`);
    // A viewer sees the mapping but is offered nothing that changes it (the
    // server would refuse it), and a post made anyway is refused.
    const user = `view${js ? 1 : 0}`;
    assert.equal((await api(s.url, "POST", "/api/v1/users", { Username: user, Password: "viewer-password-1", Role: "viewer" })).status, 201);
    const vctx = await browser.newContext({ javaScriptEnabled: js });
    await signIn(vctx, s, user, "viewer-password-1");
    const vpage = await vctx.newPage();
    await vpage.goto(`${s.url}/mappings/${id}`);
    assert.equal(await vpage.locator('header [data-field="role"]').textContent(), "viewer");
    assert.equal(await vpage.locator('[data-field="State"]').textContent(), "Disabled");
    for (const a of actions) assert.ok(!(await offered(vpage)).includes(a), `viewer not offered ${a}`);
    assert.equal(await vpage.locator('main form[method="post"]').count(), 0);
    assert.ok((await offered(vpage)).includes("JSON"));
    await vpage.goto(`${s.url}/`);
    assert.equal(await vpage.locator("text=Create mapping").count(), 0);
    const csrf = await vpage.locator('meta[name="csrf-token"]').getAttribute("content");
    const resp = await vctx.request.post(`${s.url}/mappings/${id}/enable`, { form: { csrf }, maxRedirects: 0 });
    assert.equal(resp.status(), 403);
    assert.match(await resp.text(), /viewer role; this needs operator/);
    assert.equal((await api(s.url, "GET", `/api/v1/mappings/${id}`)).body.State, "Disabled");
    await vctx.close();

    // Signing out ends the session: the next page asks to sign in again.
    await page.click('header form.who button[type=submit]');
    await page.waitForURL(/\/login/);
    await page.goto(`${s.url}/`);
    assert.match(page.url(), /\/login/);
    await ctx.close();
    await api(s.url, "DELETE", `/api/v1/mappings/${id}`);
  });
}
