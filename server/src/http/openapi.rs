//! The OpenAPI document for `/api/v1`. Schemas come from the Rust types
//! (schemars), so they cannot drift from what the API accepts; the paths are
//! written here, and a test checks they match the router.

use schemars::generate::SchemaSettings;
use serde_json::{json, Value};
use sluice_app::model::MappingView;
use sluice_app::spec::{FieldError, MappingSpec};

pub fn document() -> Value {
    let mut gen = SchemaSettings::openapi3().into_generator();
    gen.subschema_for::<MappingSpec>();
    gen.subschema_for::<MappingView>();
    gen.subschema_for::<FieldError>();
    gen.subschema_for::<sluice_app::model::MappingCounters>();
    gen.subschema_for::<sluice_app::failures::FailurePage>();
    gen.subschema_for::<sluice_app::failures::RedriveRequest>();
    gen.subschema_for::<sluice_app::failures::RedriveJob>();
    let mut schemas = serde_json::Map::new();
    for (k, v) in gen.take_definitions(true) {
        schemas.insert(k, v);
    }
    schemas.insert(
        "Error".into(),
        json!({
            "type": "object",
            "required": ["Type", "Message"],
            "properties": {
                "Type": {"type": "string", "example": "InvalidParameterValueException"},
                "Message": {"type": "string"},
                "Errors": {"type": "array", "items": {"$ref": "#/components/schemas/FieldError"}}
            }
        }),
    );
    schemas.insert(
        "MappingList".into(),
        json!({
            "type": "object",
            "properties": {"EventSourceMappings": {"type": "array", "items": {"$ref": "#/components/schemas/MappingView"}}}
        }),
    );

    let mapping = json!({"description": "The mapping", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/MappingView"}}}});
    let err = |d: &str| json!({"description": d, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    let id_param =
        json!([{"name": "id", "in": "path", "required": true, "schema": {"type": "string", "format": "uuid"}}]);
    let spec_body = |d: &str| json!({"required": true, "description": d, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/MappingSpec"}}}});

    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Sluice API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Kafka event source mappings, in the field names of AWS Lambda's CreateEventSourceMapping. A FunctionName that is an http(s):// URL targets an HTTP endpoint instead of a Lambda function."
        },
        "paths": {
            "/api/v1/mappings": {
                "get": {"operationId": "listMappings", "summary": "List every mapping",
                        "responses": {"200": {"description": "All mappings", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/MappingList"}}}}}},
                "post": {"operationId": "createMapping", "summary": "Create a mapping",
                         "requestBody": spec_body("The mapping to create; ConsumerGroupId defaults to the new UUID"),
                         "responses": {"201": mapping, "400": err("A field is invalid; Errors names each one")}}
            },
            "/api/v1/mappings/{id}": {
                "parameters": id_param,
                "get": {"operationId": "getMapping", "summary": "Read one mapping",
                        "responses": {"200": mapping, "404": err("No such mapping")}},
                "put": {"operationId": "replaceMapping", "summary": "Replace every field of a mapping",
                        "requestBody": spec_body("The whole new spec"),
                        "responses": {"200": mapping, "400": err("A field is invalid"), "404": err("No such mapping")}},
                "patch": {"operationId": "updateMapping", "summary": "Change some fields (JSON merge patch, like UpdateEventSourceMapping)",
                          "requestBody": {"required": true, "content": {"application/merge-patch+json": {"schema": {"type": "object"}}, "application/json": {"schema": {"type": "object"}}}},
                          "responses": {"200": mapping, "400": err("A field is invalid"), "404": err("No such mapping")}},
                "delete": {"operationId": "deleteMapping", "summary": "Delete a mapping (its group's offsets stay in Kafka)",
                           "responses": {"200": mapping, "404": err("No such mapping")}}
            },
            "/api/v1/mappings/{id}/metrics": {
                "parameters": id_param,
                "get": {"operationId": "getMappingMetrics", "summary": "Live counts of the running poller since it started",
                        "responses": {"200": {"description": "{UUID, Running, Counters}", "content": {"application/json": {"schema": {"type": "object", "properties": {
                            "UUID": {"type": "string", "format": "uuid"}, "Running": {"type": "boolean"},
                            "Counters": {"$ref": "#/components/schemas/MappingCounters"}}}}}},
                                      "404": err("No such mapping")}}
            },
            "/api/v1/mappings/{id}/enable": {
                "parameters": id_param,
                "post": {"operationId": "enableMapping", "summary": "Start polling and invoking",
                         "responses": {"200": mapping, "404": err("No such mapping")}}
            },
            "/api/v1/mappings/{id}/disable": {
                "parameters": id_param,
                "post": {"operationId": "disableMapping", "summary": "Stop polling and invoking",
                         "responses": {"200": mapping, "404": err("No such mapping")}}
            },
            "/api/v1/mappings/{id}/failures": {
                "parameters": id_param,
                "get": {"operationId": "listFailedRecords", "summary": "The failure ledger: records the mapping gave up on, newest first",
                        "parameters": [
                            {"name": "Partition", "in": "query", "schema": {"type": "integer"}},
                            {"name": "Condition", "in": "query", "schema": {"type": "string", "enum": sluice_app::failures::CONDITIONS}},
                            {"name": "Since", "in": "query", "description": "Failed at or after: Unix milliseconds or RFC 3339", "schema": {"type": "string"}},
                            {"name": "Until", "in": "query", "description": "Failed before: Unix milliseconds or RFC 3339", "schema": {"type": "string"}},
                            {"name": "Redrive", "in": "query", "schema": {"type": "string", "enum": ["None", "Pending", "Succeeded", "Failed", "Gone"]}},
                            {"name": "Marker", "in": "query", "description": "NextMarker of the previous page", "schema": {"type": "string"}},
                            {"name": "MaxItems", "in": "query", "schema": {"type": "integer", "default": 100, "maximum": 1000}}
                        ],
                        "responses": {"200": {"description": "A page", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/FailurePage"}}}},
                                      "400": err("A filter is invalid"), "404": err("No such mapping")}}
            },
            "/api/v1/mappings/{id}/failures/record": {
                "parameters": id_param,
                "get": {"operationId": "getFailedRecord", "summary": "One record read from the topic, decoded as the filter tester shows it (operators)",
                        "parameters": [
                            {"name": "Partition", "in": "query", "required": true, "schema": {"type": "integer"}},
                            {"name": "Offset", "in": "query", "required": true, "schema": {"type": "integer"}}
                        ],
                        "responses": {"200": {"description": "{Partition, Offset, Record}"}, "404": err("No such mapping, or the topic no longer holds the record"),
                                      "502": err("The topic cannot be read")}}
            },
            "/api/v1/mappings/{id}/failures/redrive": {
                "parameters": id_param,
                "post": {"operationId": "redriveFailedRecords", "summary": "Read failed records again from the topic and invoke the function with them",
                         "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RedriveRequest"}}}},
                         "responses": {"202": {"description": "The job (follow it at Location)", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RedriveJob"}}}},
                                       "400": err("No selection, or it matches nothing"), "404": err("No such mapping"),
                                       "409": err("Some records are in a running redrive")}}
            },
            "/api/v1/mappings/{id}/failures/redrive/{job}": {
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string", "format": "uuid"}},
                               {"name": "job", "in": "path", "required": true, "schema": {"type": "string"}}],
                "get": {"operationId": "getRedrive", "summary": "A redrive's progress and each record's result",
                        "responses": {"200": {"description": "The job", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RedriveJob"}}}},
                                      "404": err("No such mapping or redrive")}}
            },
            "/api/v1/mappings/{id}/failures/redrives": {
                "parameters": id_param,
                "get": {"operationId": "listRedrives", "summary": "The mapping's redrives, newest first",
                        "responses": {"200": {"description": "{Redrives: [RedriveJob]}"}, "404": err("No such mapping")}}
            },
            "/api/v1/filters/test": {
                "post": {"operationId": "testFilters", "summary": "Match events and records against filter patterns",
                         "description": "Each of Events is a JSON document matched whole (like EventBridge TestEventPattern); each of Records is a record as in the Kafka event (base64 value), matched as a mapping matches it: against {\"value\": <decoded value>}.",
                         "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "properties": {
                             "FilterCriteria": {"$ref": "#/components/schemas/FilterCriteria"},
                             "Events": {"type": "array", "items": {}},
                             "Records": {"type": "array", "items": {"type": "object", "properties": {"value": {"type": "string", "format": "byte"}}}}}}}}},
                         "responses": {"200": {"description": "One verdict per event and per record, in order: {Match, Filter (index of the first matching filter), Field (when none matched: the field that failed the first filter)}"},
                                       "400": err("A pattern is invalid; the reason is AWS's")}}
            },
            "/api/v1/openapi.json": {
                "get": {"operationId": "openapi", "summary": "This document", "responses": {"200": {"description": "OpenAPI 3.0 document"}}}
            }
        },
        "components": {"schemas": schemas}
    })
}
