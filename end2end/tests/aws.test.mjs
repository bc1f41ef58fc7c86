// Lambda's event-source-mapping API as the real AWS clients use it: boto3
// and the AWS CLI (end2end/aws/test_esm_api.py), signed with the key pairs
// of API tokens made through Sluice's own API.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { startSluice, api, launchBrowser, signIn } from "./sluice.mjs";

const suite = fileURLToPath(new URL("../aws/test_esm_api.py", import.meta.url));
const scope = { SLUICE_AWS_REGION: "eu-west-1", SLUICE_AWS_ACCOUNT_ID: "123456789012" };

test("boto3 and the AWS CLI manage mappings, signed with a token's key pair", { timeout: 600_000 }, async () => {
  const s = await startSluice("serve", [], scope);
  try {
    const made = {};
    for (const role of ["operator", "viewer"]) {
      const r = await api(s.url, "POST", "/api/v1/tokens", { Name: `aws-${role}`, Role: role });
      assert.equal(r.status, 201);
      assert.match(r.body.AccessKeyId, /^AKSL[A-Z2-7]{16}$/);
      assert.equal(r.body.SecretAccessKey.length, 40);
      made[role] = r.body;
    }
    // Listed with its key id, never the secret.
    const listed = (await api(s.url, "GET", "/api/v1/tokens")).body.Tokens;
    const op = listed.find((t) => t.Name === "aws-operator");
    assert.equal(op.AccessKeyId, made.operator.AccessKeyId);
    assert.ok(!JSON.stringify(listed).includes(made.operator.SecretAccessKey));

    const run = spawnSync("python3", [suite], {
      encoding: "utf8",
      timeout: 540_000,
      env: {
        ...process.env,
        SLUICE_URL: s.url,
        OPERATOR_KEY: made.operator.AccessKeyId,
        OPERATOR_SECRET: made.operator.SecretAccessKey,
        VIEWER_KEY: made.viewer.AccessKeyId,
        VIEWER_SECRET: made.viewer.SecretAccessKey,
        SCOPE_REGION: scope.SLUICE_AWS_REGION,
        SCOPE_ACCOUNT: scope.SLUICE_AWS_ACCOUNT_ID,
      },
    });
    assert.equal(run.status, 0, `${run.stdout}\n${run.stderr}`);

    // Who did what through the AWS API is in the audit log, by token.
    const audit = (await api(s.url, "GET", "/api/v1/audit")).body.Entries;
    const deletes = audit.filter((e) => e.Actor === "token:aws-viewer" && e.Action.startsWith("DELETE /2015-03-31/"));
    assert.ok(deletes.length >= 1 && deletes.every((e) => e.Status === 403), "the viewer's refused delete is audited");
    assert.ok(audit.some((e) => e.Actor === "token:aws-operator" && e.Action === "POST /2015-03-31/event-source-mappings" && e.Status === 202));
  } finally {
    await s.stop();
  }
});

test("the AWS paths answer an unsigned request as Lambda does, not with the sign-in page", async () => {
  const s = await startSluice();
  try {
    const r = await fetch(`${s.url}/2015-03-31/event-source-mappings`, { redirect: "manual" });
    assert.equal(r.status, 403);
    assert.equal(r.headers.get("x-amzn-errortype"), "MissingAuthenticationTokenException");
    assert.ok(r.headers.get("x-amzn-requestid"));
    const body = await r.json();
    assert.equal(body.Type, "User");
    assert.match(body.message, /Missing Authentication Token/);
  } finally {
    await s.stop();
  }
});

test("an admin makes a token in the console: its key pair is shown once, then only the key id", async () => {
  const s = await startSluice();
  const browser = await launchBrowser();
  try {
    const ctx = await browser.newContext();
    await signIn(ctx, s);
    const page = await ctx.newPage();
    await page.goto(`${s.url}/tokens`);
    await page.fill("input[name=name]", "terraform");
    await page.selectOption("select[name=role]", "operator");
    await page.click("button:has-text('Make token')");
    const made = page.locator("[data-made-token=terraform]");
    await made.waitFor();
    const keyId = (await made.locator("[data-field=AccessKeyId]").textContent()).trim();
    const secret = (await made.locator("[data-field=SecretAccessKey]").textContent()).trim();
    const token = (await made.locator("[data-field=Token]").textContent()).trim();
    assert.match(keyId, /^AKSL[A-Z2-7]{16}$/);
    assert.equal(secret.length, 40);
    // The token made here works, by bearer.
    const who = await fetch(`${s.url}/api/v1/whoami`, { headers: { authorization: `Bearer ${token}` } });
    assert.equal((await who.json()).User, "token:terraform");
    // Listed by key id; the secrets never again.
    await page.goto(`${s.url}/tokens`);
    await page.locator("tr[data-token=terraform]").waitFor();
    const html = await page.content();
    assert.ok(html.includes(keyId), "the key id is listed");
    assert.ok(!html.includes(secret) && !html.includes(token), "the secrets are not shown again");
    assert.equal(await page.locator("[data-made-token]").count(), 0);
    // Revoked from the console: the token stops working.
    await page.click("tr[data-token=terraform] button:has-text('Revoke')");
    await page.waitForURL(`${s.url}/tokens`);
    assert.equal(await page.locator("tr[data-token=terraform]").count(), 0);
    const after = await fetch(`${s.url}/api/v1/whoami`, { headers: { authorization: `Bearer ${token}` } });
    assert.equal(after.status, 401);
  } finally {
    await browser.close();
    await s.stop();
  }
});
