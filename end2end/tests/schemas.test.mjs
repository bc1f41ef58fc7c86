// The form's schema registry section in a real Chromium: the settings as
// typed, "Test connection" against a Confluent-compatible registry (a
// stand-in served here, with basic auth), the stored password used when
// editing, a wrong password explained, and the settings view.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { startSluice, launchBrowser, signIn, api } from "./sluice.mjs";

const AVRO = JSON.stringify({ type: "record", name: "Order", fields: [{ name: "id", type: "long" }] });
const SR = "SelfManagedKafkaEventSourceConfig.SchemaRegistryConfig";
const byName = (n) => `[name="${n}"]`;
let s, browser, registry, registryUrl;
const seen = [];

before(async () => {
  registry = http.createServer((req, res) => {
    seen.push(req.url);
    const ok = req.headers.authorization === `Basic ${Buffer.from("sr:right").toString("base64")}`;
    const send = (status, body) => { res.writeHead(status, { "content-type": "application/json" }); res.end(JSON.stringify(body)); };
    if (!ok) return send(401, { error_code: 40101, message: "Unauthorized" });
    if (req.url === "/subjects") return send(200, ["orders-value"]);
    if (req.url === "/subjects/orders-value/versions/latest") return send(200, { subject: "orders-value", version: 3, id: 7, schema: AVRO });
    if (req.url === "/schemas/ids/7") return send(200, { schema: AVRO });
    return send(404, { error_code: 40403, message: "Schema not found" });
  });
  await new Promise((r) => registry.listen(0, "127.0.0.1", r));
  registryUrl = `http://127.0.0.1:${registry.address().port}`;
  s = await startSluice();
  browser = await launchBrowser();
});
after(async () => { await browser?.close(); await s?.stop(); registry?.close(); });

async function hydrated(path) {
  const ctx = await browser.newContext();
  await signIn(ctx, s);
  const page = await ctx.newPage();
  page.on("pageerror", (e) => { throw new Error(`page error: ${e.message}`); });
  await page.goto(s.url + path);
  await page.waitForSelector("body[data-hydrated=true]", { timeout: 20_000 });
  return page;
}

async function testConnection(page) {
  const before = await page.evaluate(() => Number(document.querySelector("[data-registry-test]")?.dataset.attempt || 0));
  await page.click('[data-action="test-registry"]');
  const answer = page.locator(`[data-registry-test][data-attempt="${before + 1}"]:not(:has-text('Connecting'))`);
  await answer.waitFor({ timeout: 15_000 });
  return { kind: await answer.getAttribute("data-registry-test"), text: await answer.textContent() };
}

test("a mapping with a schema registry: Test connection, saved, shown, edited with the stored password", { timeout: 120_000 }, async () => {
  const page = await hydrated("/mappings/new");
  await page.fill(byName("Name"), "avro-orders");
  await page.fill(byName("FunctionName"), "http://127.0.0.1:9/fn");
  await page.fill(byName("Topics"), "orders");
  await page.fill(byName("SelfManagedEventSource.Endpoints.KAFKA_BOOTSTRAP_SERVERS"), "127.0.0.1:9092");
  await page.uncheck(byName("Enabled"));
  await page.fill(byName(`${SR}.SchemaRegistryURI`), registryUrl);
  // The format is required once a registry is named: said as you leave the field.
  await page.locator(byName(`${SR}.SchemaRegistryURI`)).blur();
  await page.click("main button[type=submit]");
  assert.match((await page.locator(`[data-error-for="${SR}.EventRecordFormat"]`).allTextContents()).join(" "), /is required: JSON or SOURCE/);
  assert.match((await page.locator(`[data-error-for="${SR}.SchemaValidationConfigs"]`).allTextContents()).join(" "), /KEY or VALUE/);
  await page.selectOption(byName(`${SR}.EventRecordFormat`), "JSON");
  await page.check(byName("SchemaRegistryValidateValue"));
  await page.fill(byName("SchemaRegistryUsername"), "sr");

  await page.fill(byName("SchemaRegistryPassword"), "wrong");
  const refused = await testConnection(page);
  assert.equal(refused.kind, "error");
  assert.match(refused.text, /refused Sluice's credentials \(401 Unauthorized\)/);

  await page.fill(byName("SchemaRegistryPassword"), "right");
  const ok = await testConnection(page);
  assert.equal(ok.kind, "ok", ok.text);
  assert.match(ok.text, /read subject orders-value version 3 \(AVRO\) and compiled it/);
  await page.fill("#schema-id", "7");
  assert.match((await testConnection(page)).text, /read schema 7 \(AVRO\)/);
  await page.fill("#schema-id", "8");
  assert.match((await testConnection(page)).text, /no schema with id 8/);

  await Promise.all([page.waitForURL(/\/mappings\/[0-9a-f-]{36}$/), page.click("main button[type=submit]")]);
  const uuid = page.url().split("/").pop();
  const shown = await page.textContent('[data-field="SchemaRegistryConfig"]');
  assert.match(shown, new RegExp(`${registryUrl}; decodes the value; delivers JSON; BASIC_AUTH as sr \\(secret stored, never shown\\)`));
  const m = (await api(s.url, "GET", `/api/v1/mappings/${uuid}`)).body;
  assert.equal(m.SelfManagedKafkaEventSourceConfig.SchemaRegistryConfig.AccessConfigs[0].SecretStored, true);
  assert.ok(!JSON.stringify(m).includes("right"), "the password is never answered");

  // Editing: the password is not shown, and Test connection uses the stored one.
  const edit = await hydrated(`/mappings/${uuid}/edit`);
  assert.equal(await edit.inputValue(byName("SchemaRegistryPassword")), "");
  const again = await testConnection(edit);
  assert.equal(again.kind, "ok", again.text);
  // Saved without retyping it, the password stays.
  await edit.selectOption(byName(`${SR}.EventRecordFormat`), "SOURCE");
  await Promise.all([edit.waitForURL(new RegExp(`/mappings/${uuid}$`)), edit.click("main button[type=submit]")]);
  assert.match(await edit.textContent('[data-field="SchemaRegistryConfig"]'), /delivers SOURCE; BASIC_AUTH as sr \(secret stored/);
  await page.context().close();
  await edit.context().close();
});
