// Secrets stay secret: a mapping's SASL password and TLS private key are
// accepted, used, and then appear in no API answer, no page, no metrics
// line and no log line of the server.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startSluice, api, validMapping, launchBrowser, signIn } from "./sluice.mjs";

let s, browser;
before(async () => { s = await startSluice(); browser = await launchBrowser(); });
after(async () => { await browser?.close(); await s?.stop(); });

const PASSWORD = "pw-that-must-never-show-7Q";
const KEY = "-----BEGIN PRIVATE KEY-----\nMIIsecretkeymaterial-never-shown-9Z\n-----END PRIVATE KEY-----";

test("a mapping's SASL password and TLS key are in no answer, page or log line", async () => {
  const m = validMapping({
    Name: "secret-holder",
    // A closed port: the pollers try, fail, and report it.
    SelfManagedEventSource: { Endpoints: { KAFKA_BOOTSTRAP_SERVERS: ["127.0.0.1:9"] } },
    SourceAccessConfigurations: [
      { Type: "SASL_SCRAM_512_AUTH", Username: "alice", Password: PASSWORD },
      { Type: "CLIENT_CERTIFICATE_TLS_AUTH", Certificate: "-----BEGIN CERTIFICATE-----\nMIIpublic\n-----END CERTIFICATE-----", PrivateKey: KEY },
    ],
  });
  const created = await api(s.url, "POST", "/api/v1/mappings", m);
  assert.equal(created.status, 201, JSON.stringify(created.body));
  const id = created.body.UUID;
  assert.deepEqual(created.body.SourceAccessConfigurations.map((c) => [c.Type, c.Username ?? null, c.SecretStored]),
    [["SASL_SCRAM_512_AUTH", "alice", true], ["CLIENT_CERTIFICATE_TLS_AUTH", null, true]]);

  // It runs (and fails to connect) for a while, so errors get logged.
  for (let i = 0; i < 40; i++) {
    const v = (await api(s.url, "GET", `/api/v1/mappings/${id}`)).body;
    if (v.LastProcessingResult.startsWith("PROBLEM")) break;
    await new Promise((r) => setTimeout(r, 250));
  }
  // An edit sent back as shown keeps the secrets (SecretStored stays true).
  const shown = (await api(s.url, "GET", `/api/v1/mappings/${id}`)).body;
  const put = await api(s.url, "PUT", `/api/v1/mappings/${id}`, { ...shown, BatchSize: 9 });
  assert.equal(put.status, 200, JSON.stringify(put.body));
  assert.ok(put.body.SourceAccessConfigurations.every((c) => c.SecretStored));

  let seen = "";
  for (const path of ["/api/v1/mappings", `/api/v1/mappings/${id}`, `/api/v1/mappings/${id}/metrics`, "/api/v1/audit", "/api/v1/overview", "/metrics"]) {
    seen += JSON.stringify((await api(s.url, "GET", path)).body);
  }
  const ctx = await browser.newContext();
  await signIn(ctx, s);
  const page = await ctx.newPage();
  for (const path of ["/", `/mappings/${id}`, `/mappings/${id}/edit`, `/mappings/${id}/reset`, "/audit"]) {
    await page.goto(s.url + path);
    seen += await page.content();
  }
  await ctx.close();
  assert.ok(seen.includes("secret-holder") && seen.includes("alice"), "the answers were about the mapping");
  for (const secret of [PASSWORD, "MIIsecretkeymaterial-never-shown-9Z"]) {
    assert.ok(!seen.includes(secret), "an answer or page shows a secret");
    assert.ok(!s.output().includes(secret), "the server's log shows a secret");
  }
  await api(s.url, "DELETE", `/api/v1/mappings/${id}`);
});

test("an edit that sends a stored secret elsewhere (brokers, protocol, cluster) must give it again", async () => {
  const created = await api(s.url, "POST", "/api/v1/mappings", validMapping({
    Name: "moving-secret",
    Enabled: false,
    SelfManagedEventSource: { Endpoints: { KAFKA_BOOTSTRAP_SERVERS: ["127.0.0.1:9"] } },
    SourceAccessConfigurations: [{ Type: "SASL_SCRAM_512_AUTH", Username: "alice", Password: PASSWORD }],
  }));
  assert.equal(created.status, 201, JSON.stringify(created.body));
  const id = created.body.UUID;
  const shown = (await api(s.url, "GET", `/api/v1/mappings/${id}`)).body;
  const moves = [
    { SelfManagedEventSource: { Endpoints: { KAFKA_BOOTSTRAP_SERVERS: ["evil.example:9092"] } } },
    { SelfManagedKafkaEventSourceConfig: { ...shown.SelfManagedKafkaEventSourceConfig, SecurityProtocol: "SASL_PLAINTEXT" } },
    { EventSourceArn: "arn:aws:kafka:us-east-1:123456789012:cluster/other/abc" },
  ];
  for (const move of moves) {
    const r = await api(s.url, "PUT", `/api/v1/mappings/${id}`, { ...shown, ...move });
    assert.equal(r.status, 400, `${JSON.stringify(move)}: ${JSON.stringify(r.body)}`);
    assert.deepEqual(r.body.Errors.map((e) => e.Field), ["SourceAccessConfigurations[0].Password"]);
    assert.match(r.body.Errors[0].Message, /only sent where it was given for/);
  }
  // Given again, the move is saved; the place it was given for is the new one.
  const moved = await api(s.url, "PUT", `/api/v1/mappings/${id}`, {
    ...shown, ...moves[0],
    SourceAccessConfigurations: [{ Type: "SASL_SCRAM_512_AUTH", Username: "alice", Password: "another-password-1" }],
  });
  assert.equal(moved.status, 200, JSON.stringify(moved.body));
  assert.equal(moved.body.SourceAccessConfigurations[0].SecretStored, true);
  // Changes elsewhere keep it, as before (the broker list's order and case do not count).
  const again = await api(s.url, "PATCH", `/api/v1/mappings/${id}`, { BatchSize: 5, SelfManagedEventSource: { Endpoints: { KAFKA_BOOTSTRAP_SERVERS: ["EVIL.example:9092"] } } });
  assert.equal(again.status, 200, JSON.stringify(again.body));
  assert.equal(again.body.SourceAccessConfigurations[0].SecretStored, true);
  await api(s.url, "DELETE", `/api/v1/mappings/${id}`);
});

for (const js of [false, true]) {
  test(`the form (${js ? "hydrated" : "no JavaScript"}) sets SCRAM credentials; an edit that leaves the password empty keeps it; the page never holds it`, async () => {
    const ctx = await browser.newContext({ javaScriptEnabled: js });
    await signIn(ctx, s);
    const page = await ctx.newPage();
    const ready = async () => { if (js) await page.waitForSelector("body[data-hydrated=true]"); };
    const pw = `form-pw-${js}-never-shown`;
    await page.goto(`${s.url}/mappings/new`);
    await ready();
    await page.fill('[name="Name"]', `form-sasl-${js}`);
    await page.fill('[name="FunctionName"]', "http://127.0.0.1:9/fn");
    await page.fill('[name="Topics"]', "orders");
    await page.fill('[name="SelfManagedEventSource.Endpoints.KAFKA_BOOTSTRAP_SERVERS"]', "127.0.0.1:9");
    await page.uncheck('[name="Enabled"]');
    await page.selectOption('[name="SourceAccessConfigurations"]', "SASL_SCRAM_512_AUTH");
    await page.fill('[name="SourceAccessConfigurations.Username"]', "carol");
    // No password: refused, under the SASL field.
    await page.click("main button[type=submit]");
    if (!js) await page.waitForLoadState();
    await page.waitForSelector('[data-error-for="SourceAccessConfigurations"]');
    assert.match(await page.locator('[data-error-for="SourceAccessConfigurations"]').first().textContent(), /Password|required for SASL/);
    await page.fill('[name="SourceAccessConfigurations.Password"]', pw);
    await Promise.all([page.waitForURL(/\/mappings\/[0-9a-f-]{36}$/), page.click("main button[type=submit]")]);
    const id = page.url().split("/").pop();
    let m = (await api(s.url, "GET", `/api/v1/mappings/${id}`)).body;
    assert.deepEqual(m.SourceAccessConfigurations, [{ Type: "SASL_SCRAM_512_AUTH", Username: "carol", SecretStored: true }]);
    assert.equal(JSON.stringify(m).includes(pw), false);

    // Edit something else; the password field stays empty and the secret stays.
    await page.goto(`${s.url}/mappings/${id}/edit`);
    await ready();
    assert.equal(await page.inputValue('[name="SourceAccessConfigurations.Password"]'), "");
    assert.equal((await page.content()).includes(pw), false, "the edit page holds the password");
    await page.fill('[name="BatchSize"]', "77");
    await Promise.all([page.waitForURL(new RegExp(`/mappings/${id}`)), page.click("main button[type=submit]")]);
    m = (await api(s.url, "GET", `/api/v1/mappings/${id}`)).body;
    assert.equal(m.BatchSize, 77);
    assert.deepEqual(m.SourceAccessConfigurations, [{ Type: "SASL_SCRAM_512_AUTH", Username: "carol", SecretStored: true }]);
    assert.match(await page.locator('[data-field="SourceAccessConfigurations"]').textContent(), /SASL_SSL; SASL_SCRAM_512_AUTH as carol \(secret stored/);

    // Other brokers without the password: the form says beforehand that the
    // stored one will not follow, and the save asks for it under its field.
    await page.goto(`${s.url}/mappings/${id}/edit`);
    await ready();
    assert.match(await page.locator('[data-notice="secrets-follow-brokers"]').textContent(), /Changing the bootstrap servers/);
    await page.fill('[name="SelfManagedEventSource.Endpoints.KAFKA_BOOTSTRAP_SERVERS"]', "203.0.113.9:9092");
    await page.click("main button[type=submit]");
    if (!js) await page.waitForLoadState();
    await page.waitForSelector('[data-error-for="SourceAccessConfigurations"]');
    assert.match(await page.locator('[data-error-for="SourceAccessConfigurations"]').first().textContent(), /only sent where it was given for/);
    m = (await api(s.url, "GET", `/api/v1/mappings/${id}`)).body;
    assert.deepEqual(m.SelfManagedEventSource.Endpoints.KAFKA_BOOTSTRAP_SERVERS, ["127.0.0.1:9"], "nothing was saved");
    assert.equal(s.output().includes(pw), false);
    await ctx.close();
    await api(s.url, "DELETE", `/api/v1/mappings/${id}`);
  });
}

test("the form sets a client certificate and key (mutual TLS); an edit that leaves the key empty keeps it; no page holds it", async () => {
  const ctx = await browser.newContext();
  await signIn(ctx, s);
  const page = await ctx.newPage();
  const cert = "-----BEGIN CERTIFICATE-----\nMIIformclientcert\n-----END CERTIFICATE-----";
  const key = "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIformkey-never-shown-4R\n-----END ENCRYPTED PRIVATE KEY-----";
  const keyPassword = "form-key-pass-never-shown-8T";
  await page.goto(`${s.url}/mappings/new`);
  await page.waitForSelector("body[data-hydrated=true]");
  await page.fill('[name="Name"]', "form-mtls");
  await page.fill('[name="FunctionName"]', "http://127.0.0.1:9/fn");
  await page.fill('[name="Topics"]', "orders");
  await page.fill('[name="SelfManagedEventSource.Endpoints.KAFKA_BOOTSTRAP_SERVERS"]', "127.0.0.1:9");
  await page.uncheck('[name="Enabled"]');
  await page.fill('[name="SourceAccessConfigurations.ClientCertificate"]', cert);
  await page.fill('[name="SourceAccessConfigurations.PrivateKey"]', key);
  // An encrypted key without its password: refused, saying which.
  await page.click("main button[type=submit]");
  await page.waitForSelector('[data-error-for="SourceAccessConfigurations"]');
  assert.match(await page.locator('[data-error-for="SourceAccessConfigurations"]').first().textContent(), /encrypted: give its password/);
  // Secrets are not sent back with a refused form: the key is given again.
  assert.equal(await page.inputValue('[name="SourceAccessConfigurations.PrivateKey"]'), "");
  assert.equal(await page.inputValue('[name="SourceAccessConfigurations.ClientCertificate"]'), cert);
  await page.fill('[name="SourceAccessConfigurations.PrivateKey"]', key);
  await page.fill('[name="SourceAccessConfigurations.PrivateKeyPassword"]', keyPassword);
  await Promise.all([page.waitForURL(/\/mappings\/[0-9a-f-]{36}$/), page.click("main button[type=submit]")]);
  const id = page.url().split("/").pop();
  let m = (await api(s.url, "GET", `/api/v1/mappings/${id}`)).body;
  assert.deepEqual(m.SourceAccessConfigurations, [{ Type: "CLIENT_CERTIFICATE_TLS_AUTH", Certificate: cert, SecretStored: true }]);
  assert.equal(m.SelfManagedKafkaEventSourceConfig?.SecurityProtocol ?? "SSL", "SSL");

  // Edit something else: the key fields stay empty and the key stays.
  await page.goto(`${s.url}/mappings/${id}/edit`);
  await page.waitForSelector("body[data-hydrated=true]");
  assert.equal(await page.inputValue('[name="SourceAccessConfigurations.PrivateKey"]'), "");
  assert.equal(await page.inputValue('[name="SourceAccessConfigurations.ClientCertificate"]'), cert);
  const html = await page.content();
  assert.ok(!html.includes("MIIformkey-never-shown-4R") && !html.includes(keyPassword), "the edit page holds the key or its password");
  await page.fill('[name="BatchSize"]', "33");
  await Promise.all([page.waitForURL(new RegExp(`/mappings/${id}$`)), page.click("main button[type=submit]")]);
  m = (await api(s.url, "GET", `/api/v1/mappings/${id}`)).body;
  assert.equal(m.BatchSize, 33);
  assert.deepEqual(m.SourceAccessConfigurations, [{ Type: "CLIENT_CERTIFICATE_TLS_AUTH", Certificate: cert, SecretStored: true }]);
  assert.ok(!s.output().includes("MIIformkey-never-shown-4R") && !s.output().includes(keyPassword));
  await ctx.close();
  await api(s.url, "DELETE", `/api/v1/mappings/${id}`);
});
