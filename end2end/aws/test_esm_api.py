"""Sluice driven by the real AWS clients: boto3 and the AWS CLI, signed (SigV4)
with an API token's key pair, against Lambda's event-source-mapping API.

Run by end2end/tests/aws.test.mjs, which starts Sluice and passes:
SLUICE_URL, OPERATOR_KEY/OPERATOR_SECRET, VIEWER_KEY/VIEWER_SECRET, and the
ARN scope Sluice was started with (SCOPE_REGION, SCOPE_ACCOUNT).
"""

import json
import os
import re
import subprocess
import unittest
import uuid

import boto3
import botocore.config
import botocore.exceptions

URL = os.environ["SLUICE_URL"]
REGION = os.environ["SCOPE_REGION"]
ACCOUNT = os.environ["SCOPE_ACCOUNT"]
BROKERS = {"Endpoints": {"KAFKA_BOOTSTRAP_SERVERS": ["127.0.0.1:9"]}}


def client(key=None, secret=None, region="eu-central-1"):
    # Signed for a region other than Sluice's own: any region is accepted.
    return boto3.client(
        "lambda",
        endpoint_url=URL,
        region_name=region,
        aws_access_key_id=key or os.environ["OPERATOR_KEY"],
        aws_secret_access_key=secret or os.environ["OPERATOR_SECRET"],
        config=botocore.config.Config(retries={"max_attempts": 1}),
    )


def definition(**fields):
    """A disabled mapping (nothing polls the made-up broker)."""
    d = dict(FunctionName="orders-handler", Topics=["orders"], SelfManagedEventSource=BROKERS, Enabled=False)
    d.update(fields)
    return d


def status(response):
    return response["ResponseMetadata"]["HTTPStatusCode"]


def code(err):
    return err.exception.response["Error"]["Code"]


class EventSourceMappings(unittest.TestCase):
    def setUp(self):
        self.aws = client()

    def test_create_get_partial_update_list_tags_and_delete(self):
        made = self.aws.create_event_source_mapping(
            **definition(
                FunctionName="orders-handler:live",
                BatchSize=50,
                FilterCriteria={"Filters": [{"Pattern": json.dumps({"value": {"kind": ["order"]}})}]},
                Tags={"team": "payments", "env": "test"},
            )
        )
        self.assertEqual(status(made), 202)
        uid = made["UUID"]
        arn = made["EventSourceMappingArn"]
        self.assertEqual(arn, f"arn:aws:lambda:{REGION}:{ACCOUNT}:event-source-mapping:{uid}")
        self.assertEqual(made["FunctionArn"], f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:orders-handler:live")
        self.assertEqual(made["StartingPosition"], "TRIM_HORIZON", "AWS's default when none is given")
        # As in AWS, the group is the mapping's UUID unless one is given.
        self.assertEqual(made["SelfManagedKafkaEventSourceConfig"]["ConsumerGroupId"], uid)
        # Blocks never set are not answered empty (Terraform would see a diff).
        self.assertNotIn("DestinationConfig", made)
        self.assertNotIn("AmazonManagedKafkaEventSourceConfig", made)

        got = self.aws.get_event_source_mapping(UUID=uid)
        self.assertEqual(status(got), 200)
        self.assertEqual(got["BatchSize"], 50)
        self.assertEqual(got["State"], "Disabled")

        # PUT changes only the fields sent.
        upd = self.aws.update_event_source_mapping(UUID=uid, BatchSize=10)
        self.assertEqual(status(upd), 202)
        got = self.aws.get_event_source_mapping(UUID=uid)
        self.assertEqual(got["BatchSize"], 10)
        self.assertEqual(len(got["FilterCriteria"]["Filters"]), 1, "filters were not sent, so they stay")
        self.assertEqual(got["FunctionArn"], made["FunctionArn"])

        # A destination, then cleared with "" as AWS clears it; an empty FilterCriteria clears filters.
        dest = "arn:aws:sqs:eu-west-1:123456789012:failed-orders"
        got = self.aws.update_event_source_mapping(UUID=uid, DestinationConfig={"OnFailure": {"Destination": dest}})
        self.assertEqual(got["DestinationConfig"]["OnFailure"]["Destination"], dest)
        self.aws.update_event_source_mapping(
            UUID=uid, DestinationConfig={"OnFailure": {"Destination": ""}}, FilterCriteria={}
        )
        got = self.aws.get_event_source_mapping(UUID=uid)
        self.assertNotIn("DestinationConfig", got)
        self.assertNotIn("FilterCriteria", got)
        self.assertEqual(got["BatchSize"], 10)

        # Listed by its function, in any form of the name; not under another.
        for name in ["orders-handler:live", made["FunctionArn"], f"{ACCOUNT}:function:orders-handler:live"]:
            listed = self.aws.list_event_source_mappings(FunctionName=name)["EventSourceMappings"]
            self.assertIn(uid, [m["UUID"] for m in listed], name)
        listed = self.aws.list_event_source_mappings(FunctionName="someone-else")["EventSourceMappings"]
        self.assertNotIn(uid, [m["UUID"] for m in listed])

        self.assertEqual(self.aws.list_tags(Resource=arn)["Tags"], {"team": "payments", "env": "test"})
        self.aws.tag_resource(Resource=arn, Tags={"owner": "ana", "env": "prod"})
        self.aws.untag_resource(Resource=arn, TagKeys=["team"])
        self.assertEqual(self.aws.list_tags(Resource=arn)["Tags"], {"env": "prod", "owner": "ana"})

        gone = self.aws.delete_event_source_mapping(UUID=uid)
        self.assertEqual(status(gone), 202)
        self.assertEqual(gone["State"], "Deleting")
        with self.assertRaises(self.aws.exceptions.ResourceNotFoundException):
            self.aws.get_event_source_mapping(UUID=uid)
        with self.assertRaises(self.aws.exceptions.ResourceNotFoundException):
            self.aws.list_tags(Resource=arn)

    def test_a_paginator_walks_every_mapping_of_a_function_once(self):
        fn = f"paged-{uuid.uuid4().hex[:8]}"
        made = {self.aws.create_event_source_mapping(**definition(FunctionName=fn))["UUID"] for _ in range(130)}
        try:
            pages = list(self.aws.get_paginator("list_event_source_mappings").paginate(FunctionName=fn))
            seen = [m["UUID"] for p in pages for m in p["EventSourceMappings"]]
            self.assertEqual(len(seen), 130, "each once")
            self.assertEqual(set(seen), made)
            self.assertEqual([len(p["EventSourceMappings"]) for p in pages], [100, 30], "at most 100 a page")
            small = self.aws.get_paginator("list_event_source_mappings").paginate(
                FunctionName=fn, PaginationConfig={"PageSize": 40}
            )
            self.assertEqual([len(p["EventSourceMappings"]) for p in small], [40, 40, 40, 10])
        finally:
            for uid in made:
                self.aws.delete_event_source_mapping(UUID=uid)

    def test_errors_arrive_as_botocore_exception_classes(self):
        with self.assertRaises(self.aws.exceptions.ResourceNotFoundException) as e:
            self.aws.get_event_source_mapping(UUID=str(uuid.uuid4()))
        self.assertEqual(e.exception.response["ResponseMetadata"]["HTTPStatusCode"], 404)
        self.assertTrue(e.exception.response["ResponseMetadata"]["RequestId"])

        with self.assertRaises(self.aws.exceptions.InvalidParameterValueException) as e:
            self.aws.create_event_source_mapping(**definition(Topics=["no spaces allowed"]))
        self.assertIn("Topics[0]", str(e.exception), "the message names the field")

        with self.assertRaises(self.aws.exceptions.InvalidParameterValueException) as e:
            self.aws.create_event_source_mapping(**definition(Queues=["arn:aws:mq:eu-west-1:123456789012:broker:b"]))
        self.assertIn("Queues", str(e.exception))

        group = f"shared-{uuid.uuid4().hex[:8]}"
        first = self.aws.create_event_source_mapping(
            **definition(SelfManagedKafkaEventSourceConfig={"ConsumerGroupId": group})
        )
        try:
            with self.assertRaises(self.aws.exceptions.ResourceConflictException):
                self.aws.create_event_source_mapping(
                    **definition(SelfManagedKafkaEventSourceConfig={"ConsumerGroupId": group})
                )
        finally:
            self.aws.delete_event_source_mapping(UUID=first["UUID"])

    def test_schema_registry_config_round_trips_and_bad_values_name_their_field(self):
        registry = {
            "SchemaRegistryURI": "https://registry.example:8081",
            "EventRecordFormat": "SOURCE",
            "SchemaValidationConfigs": [{"Attribute": "VALUE"}, {"Attribute": "KEY"}],
            "AccessConfigs": [
                {"Type": "BASIC_AUTH", "URI": f"arn:aws:secretsmanager:eu-west-1:{ACCOUNT}:secret:registry-AbCdEf"}
            ],
        }
        made = self.aws.create_event_source_mapping(
            **definition(SelfManagedKafkaEventSourceConfig={"SchemaRegistryConfig": registry})
        )
        try:
            got = self.aws.get_event_source_mapping(UUID=made["UUID"])
            self.assertEqual(got["SelfManagedKafkaEventSourceConfig"]["SchemaRegistryConfig"], registry)
            # An update of the block's group keeps the registry (only the fields sent change).
            glue = dict(registry, SchemaRegistryURI=f"arn:aws:glue:eu-west-1:{ACCOUNT}:registry/orders", AccessConfigs=[])
            self.aws.update_event_source_mapping(
                UUID=made["UUID"], SelfManagedKafkaEventSourceConfig={"SchemaRegistryConfig": glue}
            )
            got = self.aws.get_event_source_mapping(UUID=made["UUID"])["SelfManagedKafkaEventSourceConfig"]
            self.assertEqual(got["SchemaRegistryConfig"]["SchemaRegistryURI"], glue["SchemaRegistryURI"])
            self.assertNotIn("AccessConfigs", got["SchemaRegistryConfig"])
        finally:
            self.aws.delete_event_source_mapping(UUID=made["UUID"])

        bad = dict(registry, EventRecordFormat="XML")
        with self.assertRaises(self.aws.exceptions.InvalidParameterValueException) as e:
            self.aws.create_event_source_mapping(**definition(SelfManagedKafkaEventSourceConfig={"SchemaRegistryConfig": bad}))
        self.assertIn("SchemaRegistryConfig.EventRecordFormat", str(e.exception))
        glue_with_password = dict(
            registry,
            SchemaRegistryURI=f"arn:aws:glue:eu-west-1:{ACCOUNT}:registry/orders",
        )
        with self.assertRaises(self.aws.exceptions.InvalidParameterValueException) as e:
            self.aws.create_event_source_mapping(
                **definition(SelfManagedKafkaEventSourceConfig={"SchemaRegistryConfig": glue_with_password})
            )
        self.assertIn("AccessConfigs", str(e.exception), "a Glue registry takes the mapping's AWS credentials")

        # MSK: the registry is answered in MSK's block, as AWS answers it.
        cluster = f"arn:aws:kafka:eu-west-1:{ACCOUNT}:cluster/orders/abcd1234-ab12-cd34-ef56-abcdef123456-9"
        msk = self.aws.create_event_source_mapping(
            FunctionName="orders-handler",
            Topics=["orders"],
            EventSourceArn=cluster,
            Enabled=False,
            AmazonManagedKafkaEventSourceConfig={"ConsumerGroupId": f"msk-{uuid.uuid4().hex[:8]}", "SchemaRegistryConfig": registry},
        )
        try:
            got = self.aws.get_event_source_mapping(UUID=msk["UUID"])
            self.assertEqual(got["AmazonManagedKafkaEventSourceConfig"]["SchemaRegistryConfig"], registry)
            self.assertNotIn("SelfManagedKafkaEventSourceConfig", got)
        finally:
            self.aws.delete_event_source_mapping(UUID=msk["UUID"])

    def test_msk_definitions_keep_their_consumer_group_and_shape(self):
        cluster = f"arn:aws:kafka:eu-west-1:{ACCOUNT}:cluster/orders/abcd1234-ab12-cd34-ef56-abcdef123456-2"
        group = f"migrated-{uuid.uuid4().hex[:8]}"
        made = self.aws.create_event_source_mapping(
            **definition(
                EventSourceArn=cluster,
                AmazonManagedKafkaEventSourceConfig={"ConsumerGroupId": group},
            )
        )
        try:
            self.assertEqual(made["EventSourceArn"], cluster)
            self.assertEqual(made["AmazonManagedKafkaEventSourceConfig"]["ConsumerGroupId"], group)
            self.assertNotIn("SelfManagedEventSource", made)
            self.assertNotIn("SelfManagedKafkaEventSourceConfig", made)
            listed = self.aws.list_event_source_mappings(EventSourceArn=cluster)["EventSourceMappings"]
            self.assertEqual([m["UUID"] for m in listed], [made["UUID"]])
        finally:
            self.aws.delete_event_source_mapping(UUID=made["UUID"])


class Refusals(unittest.TestCase):
    def test_a_wrong_secret_or_an_unknown_key_is_refused_as_aws_refuses_it(self):
        wrong = client(secret="x" * 40)
        with self.assertRaises(botocore.exceptions.ClientError) as e:
            wrong.list_event_source_mappings()
        self.assertEqual(code(e), "InvalidSignatureException")
        self.assertEqual(e.exception.response["ResponseMetadata"]["HTTPStatusCode"], 403)

        unknown = client(key="AKSLNOTAKEYATALL0000")
        with self.assertRaises(botocore.exceptions.ClientError) as e:
            unknown.list_event_source_mappings()
        self.assertEqual(code(e), "UnrecognizedClientException")

    def test_a_viewer_reads_but_cannot_delete(self):
        made = client().create_event_source_mapping(**definition())
        viewer = client(os.environ["VIEWER_KEY"], os.environ["VIEWER_SECRET"])
        try:
            self.assertEqual(viewer.get_event_source_mapping(UUID=made["UUID"])["UUID"], made["UUID"])
            with self.assertRaises(botocore.exceptions.ClientError) as e:
                viewer.delete_event_source_mapping(UUID=made["UUID"])
            self.assertEqual(code(e), "AccessDeniedException")
            self.assertEqual(e.exception.response["ResponseMetadata"]["HTTPStatusCode"], 403)
            self.assertEqual(client().get_event_source_mapping(UUID=made["UUID"])["State"], "Disabled")
        finally:
            client().delete_event_source_mapping(UUID=made["UUID"])


def aws_cli(*args):
    env = dict(
        os.environ,
        AWS_ACCESS_KEY_ID=os.environ["OPERATOR_KEY"],
        AWS_SECRET_ACCESS_KEY=os.environ["OPERATOR_SECRET"],
        AWS_DEFAULT_REGION="ap-southeast-2",
        AWS_PAGER="",
        AWS_CONFIG_FILE="/dev/null",
        AWS_SHARED_CREDENTIALS_FILE="/dev/null",
    )
    return subprocess.run(
        ["aws", "lambda", *args, "--endpoint-url", URL, "--output", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


class AwsCli(unittest.TestCase):
    def ok(self, *args):
        r = aws_cli(*args)
        self.assertEqual(r.returncode, 0, r.stderr)
        return json.loads(r.stdout) if r.stdout.strip() else None

    def test_the_aws_cli_manages_a_mapping(self):
        fn = f"cli-{uuid.uuid4().hex[:8]}"
        made = self.ok(
            "create-event-source-mapping",
            "--function-name", fn,
            "--topics", "payments",
            "--self-managed-event-source", json.dumps(BROKERS),
            "--starting-position", "LATEST",
            "--no-enabled",
        )
        uid = made["UUID"]
        self.assertEqual(made["StartingPosition"], "LATEST")
        listed = self.ok("list-event-source-mappings", "--function-name", fn)["EventSourceMappings"]
        self.assertEqual([m["UUID"] for m in listed], [uid])
        self.assertEqual(self.ok("update-event-source-mapping", "--uuid", uid, "--batch-size", "7")["BatchSize"], 7)
        self.assertEqual(self.ok("get-event-source-mapping", "--uuid", uid)["BatchSize"], 7)
        self.assertEqual(self.ok("delete-event-source-mapping", "--uuid", uid)["State"], "Deleting")
        r = aws_cli("get-event-source-mapping", "--uuid", uid)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("ResourceNotFoundException", r.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
