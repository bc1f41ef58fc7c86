// Starts the real `sluice` binary on a free port with a fresh data directory,
// and a real Chromium, for the tests in this folder.
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { chromium } from "playwright-core";

const BIN = process.env.SLUICE_BIN;
if (!BIN) throw new Error("set SLUICE_BIN to the built sluice binary (scripts/test.sh does)");

// With SLUICE_E2E_POSTGRES (a server URL, e.g. postgres://postgres@127.0.0.1:5432), every Sluice
// started here gets a database of its own on that server instead of SQLite.
const PG = process.env.SLUICE_E2E_POSTGRES;
function psql(sql) {
  execFileSync("psql", [`${PG}/postgres`, "-q", "-c", sql], { stdio: "pipe" });
}

/** Starts `sluice serve` (or `demo`); resolves once /healthz answers. The
 * result can `restart()` on the same port and data (a server restart seen
 * by open pages) and `stop()`. */
export async function startSluice(command = "serve", extraArgs = [], extraEnv = {}) {
  const dataDir = mkdtempSync(join(tmpdir(), "sluice-e2e-"));
  let db = null;
  if (PG) {
    db = `sluice_e2e_${process.pid}_${Date.now()}`;
    psql(`CREATE DATABASE ${db}`);
    extraArgs = ["--database-url", `${PG}/${db}`, ...extraArgs];
  }
  let output = "";
  let child;
  // Every Sluice here starts with a known admin password and an admin API
  // token, so tests can sign in (browser) or authenticate (API).
  const token = `e2e-${randomBytes(18).toString("hex")}`;
  const spawnIt = async (listen) => {
    child = spawn(BIN, [command, "--listen", listen, "--data-dir", dataDir, ...extraArgs], {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, SLUICE_LOG: "warn", SLUICE_ADMIN_PASSWORD: ADMIN_PASSWORD, SLUICE_BOOTSTRAP_TOKEN: token, ...extraEnv },
    });
    const started = output.length;
    const url = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`sluice did not start:\n${output}`)), 30_000);
      const onData = (d) => {
        output += d;
        const m = output.slice(started).match(/console: (http:\/\/[^\s/]+)\//);
        if (m) { clearTimeout(timer); resolve(m[1]); }
      };
      child.stdout.on("data", onData);
      child.stderr.on("data", (d) => { output += d; });
      child.on("exit", (code) => reject(new Error(`sluice exited with ${code}:\n${output}`)));
    });
    for (let i = 0; i < 100; i++) {
      const r = await fetch(`${url}/healthz`).catch(() => null);
      if (r && r.ok) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    return url;
  };
  const kill = async () => {
    child.kill("SIGTERM");
    await new Promise((r) => (child.exitCode !== null ? r() : child.on("exit", r)));
  };
  const url = await spawnIt("127.0.0.1:0");
  TOKENS.set(url, token);
  return {
    url,
    token,
    /** Headers that authenticate a plain fetch as the admin token. */
    auth: { authorization: `Bearer ${token}` },
    output: () => output,
    /** Stops and starts again on the same address and data; resolves once it answers. */
    async restart() {
      await kill();
      await spawnIt(url.replace("http://", ""));
    },
    async stop() {
      await kill();
      rmSync(dataDir, { recursive: true, force: true });
      if (db) psql(`DROP DATABASE IF EXISTS ${db}`);
    },
  };
}

export async function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"],
  });
}

export const ADMIN_PASSWORD = "e2e-admin-password-0";
const TOKENS = new Map();

/** The sign-in form's post as a browser makes it: the form's page first, for
 * its CSRF cookie and field. `cookies`: more cookies to send (a device cookie). */
export async function postSignIn(s, fields, cookies = "") {
  const page = await fetch(`${s.url}/login`);
  const csrf = (page.headers.get("set-cookie") || "").match(/sluice_login_csrf=([^;]+)/)?.[1];
  if (!csrf) throw new Error("the sign-in page set no CSRF cookie");
  return fetch(`${s.url}/login`, {
    method: "POST",
    redirect: "manual",
    headers: { "content-type": "application/x-www-form-urlencoded", cookie: `sluice_login_csrf=${csrf}${cookies ? "; " + cookies : ""}` },
    body: new URLSearchParams({ ...fields, csrf }),
  });
}

/** Signs the browser context in as admin (through the sign-in form's post),
 * so its pages open as a signed-in user's. */
export async function signIn(ctx, s, user = "admin", password = ADMIN_PASSWORD) {
  const r = await postSignIn(s, { username: user, password, next: "/" });
  const cookie = (r.headers.get("set-cookie") || "").split(";")[0];
  if (!cookie.startsWith("sluice_session=") || cookie === "sluice_session=") throw new Error(`sign-in failed: ${r.status} ${r.headers.get("location")}`);
  await ctx.addCookies([{ name: "sluice_session", value: cookie.slice("sluice_session=".length), url: s.url }]);
}

/** JSON API call, as the Sluice's admin token; returns { status, body }. */
export async function api(base, method, path, body, headers = {}) {
  const auth = TOKENS.has(base) ? { authorization: `Bearer ${TOKENS.get(base)}` } : {};
  const r = await fetch(base + path, {
    method,
    headers: { ...auth, ...(body === undefined ? {} : { "content-type": "application/json" }), ...headers },
    body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
  });
  const text = await r.text();
  let json;
  try { json = JSON.parse(text); } catch { json = text; }
  return { status: r.status, body: json, headers: r.headers };
}

/** A valid mapping in AWS's shape. */
export function validMapping(overrides = {}) {
  return {
    FunctionName: "http://127.0.0.1:9/fn",
    Topics: ["orders"],
    SelfManagedEventSource: { Endpoints: { KAFKA_BOOTSTRAP_SERVERS: ["127.0.0.1:9092"] } },
    StartingPosition: "TRIM_HORIZON",
    ...overrides,
  };
}

/** Polls a mapping until its State is `state` (the engine settles states within 2 s). */
export async function waitState(base, uuid, state, ms = 3000) {
  const t = Date.now();
  let last;
  while (Date.now() - t < ms) {
    last = (await api(base, "GET", `/api/v1/mappings/${uuid}`)).body;
    if (last.State === state) return last;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`mapping ${uuid} is ${last?.State}, not ${state}, after ${ms} ms`);
}
