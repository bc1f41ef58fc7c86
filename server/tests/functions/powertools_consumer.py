"""A Kafka-triggered function written the way Lambda users write them, with
Powertools for AWS Lambda's kafka_consumer, served over HTTP for Sluice's
HTTP target. Each path is one handler configuration:

  /json, /json-other  SchemaConfig(value_schema_type="JSON")  (EventRecordFormat JSON, or
                    SOURCE of JSON Schema records)
  /avro             SchemaConfig(value_schema_type="AVRO", value_schema=<argv[3]>)
  /protobuf         SchemaConfig(value_schema_type="PROTOBUF", value_schema=<message class
                    built from the FileDescriptorSet in argv[4] (hex), message argv[5]>)

Every record it decodes is appended to argv[2] as a JSON line
{"path", "partition", "offset", "key", "value", "valueSchemaMetadata",
"keySchemaMetadata"};
a record Powertools cannot decode fails the invocation (HTTP 500).
"""
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aws_lambda_powertools.utilities.kafka import SchemaConfig, kafka_consumer
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

port, out_path, avro_schema, descriptor_hex, message_name = sys.argv[1:6]

pool = descriptor_pool.DescriptorPool()
for f in descriptor_pb2.FileDescriptorSet.FromString(bytes.fromhex(descriptor_hex)).file:
    pool.Add(f)
ProtoMessage = message_factory.GetMessageClass(pool.FindMessageTypeByName(message_name))

configs = {
    "/json": SchemaConfig(value_schema_type="JSON"),
    "/json-other": SchemaConfig(value_schema_type="JSON"),
    "/avro": SchemaConfig(value_schema_type="AVRO", value_schema=avro_schema),
    "/protobuf": SchemaConfig(value_schema_type="PROTOBUF", value_schema=ProtoMessage),
}


class Context:
    function_name = "powertools-consumer"
    aws_request_id = "local"


def handler_for(path):
    @kafka_consumer(schema_config=configs[path])
    def handler(event, context):
        lines = []
        for r in event.records:
            meta, key_meta = r.value_schema_metadata, r.key_schema_metadata
            lines.append(json.dumps({
                "path": path,
                "partition": r.partition,
                "offset": r.offset,
                "key": r.key if isinstance(r.key, (str, type(None))) else repr(r.key),
                "value": r.value,
                "valueSchemaMetadata": None if meta is None else {"dataFormat": meta.data_format, "schemaId": meta.schema_id},
                "keySchemaMetadata": None if key_meta is None else {"dataFormat": key_meta.data_format, "schemaId": key_meta.schema_id},
            }, default=str))
        with open(out_path, "a") as f:
            f.write("".join(l + "\n" for l in lines))
        return {}
    return handler


handlers = {p: handler_for(p) for p in configs}


class Serve(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        try:
            handlers[self.path](json.loads(body), Context())
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"{}")
        except Exception as e:  # the function failed: Sluice retries
            self.send_response(500)
            self.end_headers()
            self.wfile.write(json.dumps({"errorMessage": f"{type(e).__name__}: {e}"}).encode())

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", int(port)), Serve).serve_forever()
