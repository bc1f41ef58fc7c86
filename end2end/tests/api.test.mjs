// The REST API under /api/v1, as a user carrying over an AWS ESM definition sees it.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startSluice, api, validMapping, waitState } from "./sluice.mjs";

let s;
before(async () => { s = await startSluice(); });
after(async () => { await s?.stop(); });

const count = async () => (await api(s.url, "GET", "/api/v1/mappings")).body.EventSourceMappings.length;

test("healthz answers 200 when ready", async () => {
  const r = await fetch(`${s.url}/healthz`);
  assert.equal(r.status, 200);
});

test("a mapping in AWS's shape is created with AWS's defaults", async () => {
  const r = await api(s.url, "POST", "/api/v1/mappings", validMapping({ Name: "orders" }));
  assert.equal(r.status, 201, JSON.stringify(r.body));
  const m = r.body;
  assert.match(m.UUID, /^[0-9a-f-]{36}$/);
  assert.equal(r.headers.get("location"), `/api/v1/mappings/${m.UUID}`);
  assert.equal(m.BatchSize, 100);
  assert.equal(m.MaximumRetryAttempts, -1);
  assert.equal(m.MaximumRecordAgeInSeconds, -1);
  assert.equal(m.BisectBatchOnFunctionError, false);
  assert.equal(m.Enabled, true);
  assert.equal(m.SelfManagedKafkaEventSourceConfig.ConsumerGroupId, m.UUID, "the group defaults to the UUID, as in AWS");
  assert.equal(m.State, "Creating", "as in AWS, a new mapping starts Creating");
  assert.equal(m.StateTransitionReason, "USER_INITIATED");
  assert.equal(typeof m.LastProcessingResult, "string");
  assert.ok(Math.abs(m.LastModified - Date.now() / 1000) < 60, "LastModified is Unix seconds");
  const settled = await waitState(s.url, m.UUID, "Enabled");
  const { State, LastProcessingResult, ...spec } = settled;
  const { State: s0, LastProcessingResult: r0, ...created } = m;
  assert.deepEqual(spec, created, "the engine changes only the status");
});

test("every AWS field is taken, and a Lambda ARN with a qualifier is a valid target", async () => {
  const full = validMapping({
    Name: "full", Description: "every field",
    FunctionName: "arn:aws:lambda:eu-west-1:123456789012:function:billing:live",
    SelfManagedKafkaEventSourceConfig: { ConsumerGroupId: "billing-group" },
    BatchSize: 500, MaximumBatchingWindowInSeconds: 0,
    StartingPosition: "AT_TIMESTAMP", StartingPositionTimestamp: Math.floor(Date.now() / 1000) - 3600,
    FilterCriteria: { Filters: [{ Pattern: '{"value":{"type":["order"]}}' }] },
    DestinationConfig: { OnFailure: { Destination: "kafka://orders-dlq" } },
    MaximumRetryAttempts: 3, MaximumRecordAgeInSeconds: 3600, BisectBatchOnFunctionError: true,
    FunctionResponseTypes: ["ReportBatchItemFailures"],
    ProvisionedPollerConfig: { MinimumPollers: 1, MaximumPollers: 3 }, Enabled: false,
  });
  const r = await api(s.url, "POST", "/api/v1/mappings", full);
  assert.equal(r.status, 201, JSON.stringify(r.body));
  for (const [k, v] of Object.entries(full)) assert.deepEqual(r.body[k], v, k);
  assert.equal(r.body.State, "Disabled");
});

const bad = [
  ["BatchSize 0", { BatchSize: 0 }, "BatchSize"],
  ["BatchSize 10001", { BatchSize: 10001 }, "BatchSize"],
  ["a window of 301 s", { MaximumBatchingWindowInSeconds: 301 }, "MaximumBatchingWindowInSeconds"],
  ["a malformed host:port", { SelfManagedEventSource: { Endpoints: { KAFKA_BOOTSTRAP_SERVERS: ["broker-1"] } } },
    "SelfManagedEventSource.Endpoints.KAFKA_BOOTSTRAP_SERVERS[0]"],
  ["a topic with a space", { Topics: ["my orders"] }, "Topics[0]"],
  ["two topics", { Topics: ["a", "b"] }, "Topics"],
  ["eleven filters", { FilterCriteria: { Filters: Array(11).fill({ Pattern: "{}" }) } }, "FilterCriteria.Filters"],
  ["a filter that is not JSON", { FilterCriteria: { Filters: [{ Pattern: "{value" }] } }, "FilterCriteria.Filters[0].Pattern"],
  ["AT_TIMESTAMP without a timestamp", { StartingPosition: "AT_TIMESTAMP" }, "StartingPositionTimestamp"],
  ["AT_TIMESTAMP in the future", { StartingPosition: "AT_TIMESTAMP", StartingPositionTimestamp: Math.floor(Date.now() / 1000) + 86400 },
    "StartingPositionTimestamp"],
  ["an unknown starting position", { StartingPosition: "EARLIEST" }, "StartingPosition"],
  ["no function", { FunctionName: "" }, "FunctionName"],
  ["retries out of range", { MaximumRetryAttempts: -2 }, "MaximumRetryAttempts"],
  ["a record age of 59 s", { MaximumRecordAgeInSeconds: 59 }, "MaximumRecordAgeInSeconds"],
  ["the source topic as failure topic", { DestinationConfig: { OnFailure: { Destination: "kafka://orders" } } },
    "DestinationConfig.OnFailure.Destination"],
  ["a string for a number", { BatchSize: "ten" }, "BatchSize"],
  ["a misspelt field", { BatchSise: 10 }, "BatchSise"],
];
for (const [what, patch, field] of bad) {
  test(`create refuses ${what}, names ${field}, stores nothing`, async () => {
    const before = await count();
    const r = await api(s.url, "POST", "/api/v1/mappings", validMapping(patch));
    assert.equal(r.status, 400, JSON.stringify(r.body));
    assert.equal(r.body.Type, "InvalidParameterValueException");
    assert.deepEqual(r.body.Errors.map((e) => e.Field), [field]);
    assert.ok(r.body.Errors[0].Message.length > 5);
    assert.ok(r.body.Message.includes(field));
    assert.equal(await count(), before);
  });
}

test("a missing required field is named", async () => {
  const { Topics, ...noTopics } = validMapping();
  const r = await api(s.url, "POST", "/api/v1/mappings", noTopics);
  assert.equal(r.status, 400);
  assert.deepEqual(r.body.Errors, [{ Field: "Topics", Message: "is required" }]);
});

test("a body that is not JSON is refused clearly", async () => {
  const r = await api(s.url, "POST", "/api/v1/mappings", "{not json");
  assert.equal(r.status, 400);
  assert.match(r.body.Message, /not valid JSON/);
});

test("update, patch, disable, enable and delete", async () => {
  const m = (await api(s.url, "POST", "/api/v1/mappings", validMapping())).body;
  const path = `/api/v1/mappings/${m.UUID}`;

  // PUT replaces: what a GET returned, changed, goes back as it is.
  const put = await api(s.url, "PUT", path, { ...m, BatchSize: 42, Topics: ["payments"] });
  assert.equal(put.status, 200, JSON.stringify(put.body));
  assert.equal(put.body.BatchSize, 42);
  assert.deepEqual(put.body.Topics, ["payments"]);

  // PATCH changes only what it names.
  const patch = await api(s.url, "PATCH", path, { MaximumBatchingWindowInSeconds: 5 });
  assert.equal(patch.status, 200);
  assert.equal(patch.body.MaximumBatchingWindowInSeconds, 5);
  assert.equal(patch.body.BatchSize, 42);

  const badPatch = await api(s.url, "PATCH", path, { BatchSize: 0 });
  assert.equal(badPatch.status, 400);
  assert.equal((await api(s.url, "GET", path)).body.BatchSize, 42, "a refused update changes nothing");

  const off = await api(s.url, "POST", `${path}/disable`);
  assert.equal(off.body.State, "Disabling");
  assert.equal(off.body.Enabled, false);
  await waitState(s.url, m.UUID, "Disabled");
  const on = await api(s.url, "POST", `${path}/enable`);
  assert.equal(on.body.State, "Enabling");
  await waitState(s.url, m.UUID, "Enabled");

  const del = await api(s.url, "DELETE", path);
  assert.equal(del.status, 200);
  assert.equal(del.body.State, "Deleting");
  assert.equal((await api(s.url, "GET", path)).status, 404);
  assert.equal((await api(s.url, "DELETE", path)).status, 404);
});

test("a consumer group already used on the same cluster is refused", async () => {
  const group = { SelfManagedKafkaEventSourceConfig: { ConsumerGroupId: "shared-group" } };
  assert.equal((await api(s.url, "POST", "/api/v1/mappings", validMapping(group))).status, 201);
  const r = await api(s.url, "POST", "/api/v1/mappings", validMapping(group));
  // AWS's answer to a second mapping of the same group: a conflict, on the field.
  assert.equal(r.status, 409);
  assert.equal(r.body.Type, "ResourceConflictException");
  assert.equal(r.headers.get("x-amzn-errortype"), "ResourceConflictException");
  assert.equal(r.body.Errors[0].Field, "SelfManagedKafkaEventSourceConfig.ConsumerGroupId");
});

test("tags come along on create, are answered, and are checked as AWS checks them", async () => {
  const made = await api(s.url, "POST", "/api/v1/mappings", validMapping({ Tags: { team: "payments" } }));
  assert.equal(made.status, 201, JSON.stringify(made.body));
  assert.deepEqual(made.body.Tags, { team: "payments" });
  const id = made.body.UUID;
  assert.deepEqual((await api(s.url, "GET", `/api/v1/mappings/${id}`)).body.Tags, { team: "payments" });
  // PATCH leaves tags alone (they change through the tags API).
  const patched = await api(s.url, "PATCH", `/api/v1/mappings/${id}`, { BatchSize: 7, Tags: { other: "x" } });
  assert.equal(patched.status, 200, JSON.stringify(patched.body));
  assert.deepEqual(patched.body.Tags, { team: "payments" });
  const bad = await api(s.url, "POST", "/api/v1/mappings", validMapping({ Tags: { "aws:owner": "me" } }));
  assert.equal(bad.status, 400);
  assert.equal(bad.body.Errors[0].Field, "Tags.aws:owner");
});

test("unknown UUIDs are 404 with a JSON error", async () => {
  const r = await api(s.url, "GET", "/api/v1/mappings/00000000-0000-4000-8000-000000000000");
  assert.equal(r.status, 404);
  assert.equal(r.body.Type, "ResourceNotFoundException");
  assert.equal((await api(s.url, "GET", "/api/v1/mappings/nope")).status, 404);
});

test("the OpenAPI document describes every route and every AWS field", async () => {
  const r = await api(s.url, "GET", "/api/v1/openapi.json");
  assert.equal(r.status, 200);
  const doc = r.body;
  assert.match(doc.openapi, /^3\./);
  const ops = Object.entries(doc.paths).flatMap(([p, item]) =>
    Object.keys(item).filter((k) => k !== "parameters").map((m) => `${m.toUpperCase()} ${p}`));
  for (const op of ["GET /api/v1/mappings", "POST /api/v1/mappings", "GET /api/v1/mappings/{id}",
    "PUT /api/v1/mappings/{id}", "PATCH /api/v1/mappings/{id}", "DELETE /api/v1/mappings/{id}",
    "POST /api/v1/mappings/{id}/enable", "POST /api/v1/mappings/{id}/disable"]) {
    assert.ok(ops.includes(op), `${op} is documented`);
  }
  const spec = doc.components.schemas.MappingSpec;
  for (const f of ["FunctionName", "Topics", "SelfManagedEventSource", "SelfManagedKafkaEventSourceConfig", "BatchSize",
    "MaximumBatchingWindowInSeconds", "StartingPosition", "StartingPositionTimestamp", "FilterCriteria",
    "DestinationConfig", "MaximumRetryAttempts", "MaximumRecordAgeInSeconds", "BisectBatchOnFunctionError",
    "FunctionResponseTypes", "ProvisionedPollerConfig", "Enabled", "Name", "Description", "KMSKeyArn", "MetricsConfig",
    "LoggingConfig"]) {
    assert.ok(spec.properties[f], `MappingSpec.${f}`);
  }
  // The schema registry, in both Kafka config blocks (AWS's KafkaSchemaRegistryConfig).
  const kafkaConfig = doc.components.schemas.SelfManagedKafkaEventSourceConfig;
  assert.ok(kafkaConfig.properties.SchemaRegistryConfig, "SelfManagedKafkaEventSourceConfig.SchemaRegistryConfig");
  const registry = doc.components.schemas.SchemaRegistryConfig;
  for (const f of ["SchemaRegistryURI", "EventRecordFormat", "SchemaValidationConfigs", "AccessConfigs"]) {
    assert.ok(registry.properties[f], `SchemaRegistryConfig.${f}`);
  }
  // SelfManagedEventSource is optional: an MSK mapping may give only its EventSourceArn.
  assert.deepEqual(spec.required.sort(), ["FunctionName", "StartingPosition", "Topics"]);
});

test("an enabled mapping whose broker is unreachable says so in LastProcessingResult", async () => {
  const m = (await api(s.url, "POST", "/api/v1/mappings", validMapping({
    SelfManagedEventSource: { Endpoints: { KAFKA_BOOTSTRAP_SERVERS: ["127.0.0.1:1"] } },
  }))).body;
  const t = Date.now();
  let r;
  while (Date.now() - t < 15000) {
    r = (await api(s.url, "GET", `/api/v1/mappings/${m.UUID}`)).body.LastProcessingResult;
    if (r.includes("Connection error")) break;
    await new Promise((res) => setTimeout(res, 200));
  }
  assert.match(r, /PROBLEM: Connection error: cannot reach the Kafka brokers \(127\.0\.0\.1:1\)/);
});

test("filters/test says for each event and record whether it would be invoked, and why", async () => {
  const b64 = (s) => Buffer.from(s).toString("base64");
  const r = await api(s.url, "POST", "/api/v1/filters/test", {
    FilterCriteria: { Filters: [
      { Pattern: '{"value": {"type": ["order"], "amount": [{"numeric": [">", 100]}]}}' },
      { Pattern: '{"value": [{"prefix": "ERROR"}]}' },
    ] },
    Events: [{ value: { type: "order", amount: 150 } }, { value: { type: "order", amount: 5 } }],
    Records: [{ value: b64('{"type":"order","amount":101}') }, { value: b64("ERROR disk full") }, { value: b64("INFO ok") }],
  });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.deepEqual(r.body.Events.map((e) => [e.Match, e.Filter]), [[true, 0], [false, null]]);
  assert.equal(r.body.Events[1].Field, "value.amount");
  assert.deepEqual(r.body.Records.map((e) => [e.Match, e.Filter]), [[true, 0], [true, 1], [false, null]]);

  const bad = await api(s.url, "POST", "/api/v1/filters/test", { FilterCriteria: { Filters: [{ Pattern: '{"value": "x"}' }] }, Events: [] });
  assert.equal(bad.status, 400);
  assert.equal(bad.body.Errors[0].Field, "FilterCriteria.Filters[0].Pattern");
  assert.match(bad.body.Errors[0].Message, /^Event pattern is not valid\. Reason: "value" must be an object or an array/);
});

test("a mapping with an invalid filter pattern is refused at save time with the reason", async () => {
  const r = await api(s.url, "POST", "/api/v1/mappings", validMapping({
    FilterCriteria: { Filters: [{ Pattern: '{"value": {"n": [{"numeric": [">", "ten"]}]}}' }] },
  }));
  assert.equal(r.status, 400);
  assert.equal(r.body.Errors[0].Field, "FilterCriteria.Filters[0].Pattern");
  assert.equal(r.body.Errors[0].Message, "Event pattern is not valid. Reason: Value of > must be numeric");
});

test("beyond AWS, opt-in: filters can match the key and headers", async () => {
  const b64 = (s) => Buffer.from(s).toString("base64");
  const body = (meta) => ({
    FilterOnRecordMetadata: meta,
    FilterCriteria: { Filters: [{ Pattern: '{"key": [{"prefix": "eu-"}], "headers": {"tenant": ["acme"]}}' }] },
    Records: [
      { key: b64("eu-1"), value: b64("{}"), headers: [{ tenant: [97, 99, 109, 101] }] },
      { key: b64("us-1"), value: b64("{}"), headers: [{ tenant: [97, 99, 109, 101] }] },
    ],
  });
  const on = await api(s.url, "POST", "/api/v1/filters/test", body(true));
  assert.deepEqual(on.body.Records.map((r) => r.Match), [true, false]);
  const off = await api(s.url, "POST", "/api/v1/filters/test", body(false));
  assert.deepEqual(off.body.Records.map((r) => r.Match), [false, false], "AWS's default matches only value");
  const m = await api(s.url, "POST", "/api/v1/mappings", validMapping({ FilterOnRecordMetadata: true }));
  assert.equal(m.status, 201);
  assert.equal(m.body.FilterOnRecordMetadata, true);
  const plain = (await api(s.url, "POST", "/api/v1/mappings", validMapping())).body;
  assert.equal(plain.FilterOnRecordMetadata, undefined, "left out when off, as AWS has no such field");
});
