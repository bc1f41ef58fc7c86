//! A registry's schema, compiled once (Avro, Protobuf from its `.proto`
//! text, JSON Schema), and a record's body decoded and validated with it
//! into JSON text: what filters read and what `JSON` delivers.

use std::io::Write as _;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions};

use super::wire;

/// What a registry answered for one schema id, references resolved.
#[derive(Clone, Debug)]
pub struct Fetched {
    /// AVRO, PROTOBUF or JSON.
    pub format: String,
    pub text: String,
    /// Referenced schemas: (name they are imported by, text), dependencies first.
    pub references: Vec<(String, String)>,
}

pub enum Compiled {
    Avro {
        schema: apache_avro::Schema,
        named: Vec<apache_avro::Schema>,
        /// Every named type the schema can refer to, for `avro::transcode`.
        names: std::collections::HashMap<apache_avro::schema::Name, apache_avro::Schema>,
    },
    Protobuf {
        top: Vec<MessageDescriptor>,
        by_full_name: Vec<MessageDescriptor>,
    },
    Json(Box<jsonschema::Validator>),
}

const MAIN_PROTO: &str = "sluice_registry_schema.proto";

impl Compiled {
    pub fn compile(f: &Fetched) -> Result<Compiled, String> {
        match f.format.as_str() {
            "AVRO" => {
                let (schema, named) = if f.references.is_empty() {
                    (apache_avro::Schema::parse_str(&f.text).map_err(|e| e.to_string())?, vec![])
                } else {
                    apache_avro::Schema::parse_str_with_list(&f.text, f.references.iter().map(|(_, t)| t.as_str()))
                        .map_err(|e| e.to_string())?
                };
                // Dependencies first: each resolves against those before it.
                let mut all: Vec<&apache_avro::Schema> = named.iter().collect();
                all.push(&schema);
                let resolved = apache_avro::schema::ResolvedSchema::try_from(all).map_err(|e| e.to_string())?;
                let names = resolved.get_names().iter().map(|(n, s)| (n.clone(), (*s).clone())).collect();
                Ok(Compiled::Avro { schema, named, names })
            }
            "PROTOBUF" => {
                let mut files = InMemory(vec![(MAIN_PROTO.to_string(), f.text.clone())]);
                files.0.extend(f.references.iter().cloned());
                let mut chain = protox::file::ChainFileResolver::new();
                chain.add(files);
                chain.add(protox::file::GoogleFileResolver::new());
                let mut compiler = protox::Compiler::with_file_resolver(chain);
                compiler.open_file(MAIN_PROTO).map_err(|e| e.to_string())?;
                let pool: DescriptorPool = compiler.descriptor_pool();
                let file = pool.get_file_by_name(MAIN_PROTO).ok_or("the schema compiled to no file")?;
                let top: Vec<MessageDescriptor> = file.messages().collect();
                let mut by_full_name = Vec::new();
                let mut stack = top.clone();
                while let Some(m) = stack.pop() {
                    stack.extend(m.child_messages());
                    by_full_name.push(m);
                }
                by_full_name.sort_by(|a, b| a.full_name().cmp(b.full_name()));
                if top.is_empty() {
                    return Err("the schema defines no message".into());
                }
                Ok(Compiled::Protobuf { top, by_full_name })
            }
            "JSON" => {
                let schema: serde_json::Value =
                    serde_json::from_str(&f.text).map_err(|e| format!("the JSON Schema is not JSON: {e}"))?;
                let mut refs = Vec::new();
                for (name, text) in &f.references {
                    let v =
                        serde_json::from_str(text).map_err(|e| format!("the reference `{name}` is not JSON: {e}"))?;
                    refs.push((name.clone(), v));
                }
                let v =
                    jsonschema::options().with_retriever(References(refs)).build(&schema).map_err(|e| e.to_string())?;
                Ok(Compiled::Json(Box::new(v)))
            }
            other => Err(format!("unknown schema type `{other}` (AVRO, PROTOBUF or JSON)")),
        }
    }

    /// AWS's `dataFormat`.
    pub fn format(&self) -> &'static str {
        match self {
            Compiled::Avro { .. } => "AVRO",
            Compiled::Protobuf { .. } => "PROTOBUF",
            Compiled::Json(_) => "JSON",
        }
    }

    /// Decodes and validates `body` (the registry's header removed). With
    /// `json`, writes the record as JSON text into `out`; without, only
    /// checks it. `glue`: Protobuf's message index is Glue's.
    pub fn decode(&self, body: &[u8], glue: bool, json: Option<&mut Vec<u8>>) -> Result<(), String> {
        match self {
            Compiled::Avro { schema, named, names } => {
                // The fast path: the bytes straight to JSON text, driven by
                // the parsed schema; logical types it does not render go the
                // crate's way (a Value, then JSON).
                let mut scratch = Vec::new();
                let out = json.unwrap_or(&mut scratch);
                let mark = out.len();
                match super::avro::transcode(schema, names, body, out) {
                    Ok(()) => return Ok(()),
                    Err(super::avro::Error::Invalid(e)) => return Err(e),
                    Err(super::avro::Error::Unsupported) => out.truncate(mark),
                }
                let mut reader = body;
                let value = if named.is_empty() {
                    apache_avro::from_avro_datum(schema, &mut reader, None)
                } else {
                    apache_avro::from_avro_datum_schemata(schema, named.iter().collect(), &mut reader, None)
                }
                .map_err(|e| e.to_string())?;
                if !reader.is_empty() {
                    return Err(format!("{} bytes left over after the record", reader.len()));
                }
                avro_json(&value, out);
                Ok(())
            }
            Compiled::Protobuf { top, by_full_name } => {
                let (desc, rest) = if glue {
                    let (i, rest) = wire::glue_index(body)?;
                    (by_full_name.get(i).ok_or_else(|| format!("no message at index {i}"))?.clone(), rest)
                } else {
                    let (path, rest) = wire::confluent_indexes(body)?;
                    let mut d = top.get(path[0]).ok_or_else(|| format!("no message at index {}", path[0]))?.clone();
                    for &i in &path[1..] {
                        let child = d.child_messages().nth(i);
                        d = child.ok_or_else(|| format!("no nested message at index {i}"))?;
                    }
                    (d, rest)
                };
                let m = DynamicMessage::decode(desc, rest).map_err(|e| e.to_string())?;
                if let Some(out) = json {
                    let options = SerializeOptions::new().use_proto_field_name(true);
                    let mut ser = serde_json::Serializer::new(out);
                    m.serialize_with_options(&mut ser, &options).map_err(|e| e.to_string())?;
                }
                Ok(())
            }
            Compiled::Json(v) => {
                let instance: serde_json::Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
                if let Err(e) = v.validate(&instance) {
                    return Err(format!("does not match the schema at `{}`: {e}", e.instance_path()));
                }
                if let Some(out) = json {
                    out.extend_from_slice(body);
                }
                Ok(())
            }
        }
    }
}

/// A JSON Schema's `$ref`s to other subjects, by the name the registry
/// gave them (the end of the reference's URI); nothing is fetched.
struct References(Vec<(String, serde_json::Value)>);

impl jsonschema::Retrieve for References {
    fn retrieve(
        &self,
        uri: &jsonschema::Uri<String>,
    ) -> Result<serde_json::Value, Box<dyn std::error::Error + Send + Sync>> {
        let uri = uri.as_str();
        self.0
            .iter()
            .find(|(name, _)| uri == name || uri.ends_with(&format!("/{name}")))
            .map(|(_, v)| v.clone())
            .ok_or_else(|| format!("`{uri}` is not among the schema's references").into())
    }
}

/// The schema's imports, as the registry named them.
struct InMemory(Vec<(String, String)>);

impl protox::file::FileResolver for InMemory {
    fn open_file(&self, name: &str) -> Result<protox::file::File, protox::Error> {
        match self.0.iter().find(|(n, _)| n == name) {
            Some((n, text)) => protox::file::File::from_source(n, text),
            None => Err(protox::Error::file_not_found(name)),
        }
    }
}

/// Avro as plain JSON (what a handler expects, and what Avro libraries
/// give in Python and JavaScript): unions are their value, enums their
/// symbol, bytes and fixed base64, logical types their underlying number.
pub(crate) fn avro_json(v: &apache_avro::types::Value, out: &mut Vec<u8>) {
    use apache_avro::types::Value as V;
    let num = number;
    match v {
        V::Null => out.extend_from_slice(b"null"),
        V::Boolean(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        V::Int(i) | V::Date(i) | V::TimeMillis(i) => integer(out, *i),
        V::Long(i)
        | V::TimeMicros(i)
        | V::TimestampMillis(i)
        | V::TimestampMicros(i)
        | V::TimestampNanos(i)
        | V::LocalTimestampMillis(i)
        | V::LocalTimestampMicros(i)
        | V::LocalTimestampNanos(i) => integer(out, *i),
        V::Float(f) => num(out, f64::from(*f)),
        V::Double(f) => num(out, *f),
        V::Bytes(b) | V::Fixed(_, b) => string(out, &B64.encode(b)),
        V::String(s) | V::Enum(_, s) => string(out, s),
        V::Union(_, inner) => avro_json(inner, out),
        V::Array(items) => {
            out.push(b'[');
            for (i, x) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                avro_json(x, out);
            }
            out.push(b']');
        }
        V::Map(m) => object(out, m.iter().map(|(k, x)| (k.as_str(), x))),
        V::Record(fields) => object(out, fields.iter().map(|(k, x)| (k.as_str(), x))),
        V::Uuid(u) => string(out, &u.to_string()),
        V::Decimal(d) => {
            let bytes: Vec<u8> = d.try_into().unwrap_or_default();
            string(out, &B64.encode(bytes))
        }
        V::BigDecimal(d) => string(out, &d.to_string()),
        V::Duration(d) => {
            let (m, days, ms): (u32, u32, u32) = (d.months().into(), d.days().into(), d.millis().into());
            let _ = write!(out, "{{\"months\":{m},\"days\":{days},\"millis\":{ms}}}");
        }
    }
}

fn object<'a>(out: &mut Vec<u8>, fields: impl Iterator<Item = (&'a str, &'a apache_avro::types::Value)>) {
    out.push(b'{');
    for (i, (k, x)) in fields.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        string(out, k);
        out.push(b':');
        avro_json(x, out);
    }
    out.push(b'}');
}

/// A JSON string. Most names and values need no escaping: copied as they
/// are; the others take serde_json's escaping.
pub(crate) fn string(out: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

pub(crate) fn integer(out: &mut Vec<u8>, i: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(i).as_bytes());
}

/// A finite number as the shortest text that reads back the same; NaN and
/// the infinities, which JSON cannot hold, as null.
pub(crate) fn number(out: &mut Vec<u8>, f: f64) {
    if f.is_finite() {
        out.extend_from_slice(ryu::Buffer::new().format_finite(f).as_bytes());
    } else {
        out.extend_from_slice(b"null");
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const ORDER_AVRO: &str = r#"{"type":"record","name":"Order","namespace":"shop","fields":[
        {"name":"id","type":"long"},{"name":"kind","type":{"type":"enum","name":"Kind","symbols":["order","refund"]}},
        {"name":"note","type":["null","string"],"default":null},{"name":"tags","type":{"type":"array","items":"string"}},
        {"name":"amount","type":"double"}]}"#;

    pub(crate) fn fetched(format: &str, text: &str) -> Fetched {
        Fetched { format: format.into(), text: text.into(), references: vec![] }
    }

    pub(crate) fn avro_order(c: &Compiled, id: i64, kind: &str, note: Option<&str>) -> Vec<u8> {
        use apache_avro::types::Value as V;
        let Compiled::Avro { schema, .. } = c else { panic!() };
        let kind_ix = if kind == "order" { 0 } else { 1 };
        let note = match note {
            Some(n) => V::Union(1, Box::new(V::String(n.into()))),
            None => V::Union(0, Box::new(V::Null)),
        };
        let v = V::Record(vec![
            ("id".into(), V::Long(id)),
            ("kind".into(), V::Enum(kind_ix, kind.into())),
            ("note".into(), note),
            ("tags".into(), V::Array(vec![V::String("a\"b".into())])),
            ("amount".into(), V::Double(12.5)),
        ]);
        apache_avro::to_avro_datum(schema, v).unwrap()
    }

    fn json_of(c: &Compiled, body: &[u8], glue: bool) -> Result<serde_json::Value, String> {
        let mut out = Vec::new();
        c.decode(body, glue, Some(&mut out))?;
        Ok(serde_json::from_slice(&out).expect("valid JSON"))
    }

    #[test]
    fn avro_decodes_to_plain_json_and_rejects_garbage() {
        let c = Compiled::compile(&fetched("AVRO", ORDER_AVRO)).unwrap();
        assert_eq!(c.format(), "AVRO");
        let body = avro_order(&c, 7, "refund", Some("x"));
        assert_eq!(
            json_of(&c, &body, false).unwrap(),
            serde_json::json!({"id": 7, "kind": "refund", "note": "x", "tags": ["a\"b"], "amount": 12.5})
        );
        let mut long = body.clone();
        long.push(1);
        assert!(json_of(&c, &long, false).unwrap_err().contains("left over"));
        assert!(json_of(&c, &body[..3], false).is_err());
        assert!(Compiled::compile(&fetched("AVRO", "{\"type\":\"recrd\"}")).is_err());
    }

    pub(crate) const ORDER_PROTO: &str = r#"syntax = "proto3"; package shop;
        import "google/protobuf/timestamp.proto";
        message Order { int64 id = 1; string kind = 2; repeated string tags = 3; Line line = 4;
          google.protobuf.Timestamp at = 5; message Line { string sku = 1; } }
        message Refund { string order_id = 1; }"#;

    pub(crate) fn proto_desc(c: &Compiled, name: &str) -> MessageDescriptor {
        let Compiled::Protobuf { by_full_name, .. } = c else { panic!() };
        by_full_name.iter().find(|m| m.full_name() == name).unwrap().clone()
    }

    #[test]
    fn protobuf_by_confluent_path_and_glue_index() {
        use prost::Message as _;
        let c = Compiled::compile(&fetched("PROTOBUF", ORDER_PROTO)).unwrap();
        let order = proto_desc(&c, "shop.Order");
        let mut m = DynamicMessage::new(order);
        m.set_field_by_name("id", prost_reflect::Value::I64(5));
        m.set_field_by_name("kind", prost_reflect::Value::String("order".into()));
        let bytes = m.encode_to_vec();
        let mut confluent = vec![0u8];
        confluent.extend_from_slice(&bytes);
        assert_eq!(json_of(&c, &confluent, false).unwrap(), serde_json::json!({"id": "5", "kind": "order"}));
        // Glue sorts every message by full name: Order, Order.Line, Refund.
        let mut glue = vec![0u8];
        glue.extend_from_slice(&bytes);
        assert_eq!(json_of(&c, &glue, true).unwrap()["kind"], "order");
        // Confluent path [1]: Refund, which reads field 1 (int64 5) as a wrong wire type.
        let mut refund = vec![2u8, 2];
        refund.extend_from_slice(&bytes);
        assert!(json_of(&c, &refund, false).is_err());
        assert!(json_of(&c, &[0, 0xff, 0xff], false).is_err());
    }

    #[test]
    fn references_resolve_in_every_format() {
        let with = |format: &str, text: &str, refs: &[(&str, &str)]| Fetched {
            format: format.into(),
            text: text.into(),
            references: refs.iter().map(|(n, t)| (n.to_string(), t.to_string())).collect(),
        };
        let money = r#"{"type":"record","name":"Money","namespace":"shop","fields":[{"name":"cents","type":"long"}]}"#;
        let c = Compiled::compile(&with(
            "AVRO",
            r#"{"type":"record","name":"Line","namespace":"shop","fields":[{"name":"price","type":"shop.Money"}]}"#,
            &[("shop.Money", money)],
        ))
        .unwrap();
        assert_eq!(json_of(&c, &[0x0a], false).unwrap(), serde_json::json!({"price": {"cents": 5}}));

        let c = Compiled::compile(&with(
            "PROTOBUF",
            "syntax = \"proto3\"; package shop; import \"money.proto\"; message Line { Money price = 1; }",
            &[("money.proto", "syntax = \"proto3\"; package shop; message Money { int64 cents = 1; }")],
        ))
        .unwrap();
        // [0]: Line; field 1 (length 2): Money { cents = 5 }.
        assert_eq!(json_of(&c, &[0, 0x0a, 2, 0x08, 5], false).unwrap(), serde_json::json!({"price": {"cents": "5"}}));

        let c = Compiled::compile(&with(
            "JSON",
            r#"{"type":"object","properties":{"price":{"$ref":"money.json"}}}"#,
            &[("money.json", r#"{"type":"object","properties":{"cents":{"type":"integer"}},"required":["cents"]}"#)],
        ))
        .unwrap();
        assert!(json_of(&c, br#"{"price":{"cents":5}}"#, false).is_ok());
        assert!(json_of(&c, br#"{"price":{"cents":"5"}}"#, false).unwrap_err().contains("/price/cents"));
        assert!(Compiled::compile(&with(
            "AVRO",
            r#"{"type":"record","name":"L","fields":[{"name":"p","type":"shop.Gone"}]}"#,
            &[]
        ))
        .is_err());
    }

    #[test]
    fn json_schema_validates() {
        let c = Compiled::compile(&fetched(
            "JSON",
            r#"{"type":"object","properties":{"id":{"type":"integer"}},"required":["id"]}"#,
        ))
        .unwrap();
        assert_eq!(json_of(&c, br#"{"id":3}"#, false).unwrap()["id"], 3);
        assert!(json_of(&c, br#"{"id":"x"}"#, false).unwrap_err().contains("/id"));
        assert!(json_of(&c, b"{", false).unwrap_err().contains("not JSON"));
    }
}
