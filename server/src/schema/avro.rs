//! Avro's binary encoding read straight into JSON text, driven by the schema
//! apache-avro parsed (and whose names it resolved): no value tree, no
//! allocation per field, which is what keeps Avro decoding near the JSON
//! path's speed. Renders exactly what `formats::avro_json` renders from the
//! crate's own decoding (a test compares them); logical types it does not
//! render (BigDecimal, Duration) are left to that path.

use std::collections::HashMap;

use apache_avro::schema::{Name, Schema};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

use super::formats::{integer, number, string};

pub enum Error {
    /// The bytes are not a record of the schema.
    Invalid(String),
    /// A type this reader leaves to apache-avro's decoding.
    Unsupported,
}

fn invalid(why: impl Into<String>) -> Error {
    Error::Invalid(why.into())
}

/// Nesting deeper than this is refused (a recursive schema and a crafted
/// record would otherwise exhaust the stack).
const MAX_DEPTH: usize = 64;

/// Transcodes one record: all of `bytes` must be the record.
pub fn transcode(schema: &Schema, names: &HashMap<Name, Schema>, bytes: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
    let mut r = Reader { b: bytes, names };
    r.value(schema, out, 0)?;
    if !r.b.is_empty() {
        return Err(invalid(format!("{} bytes left over after the record", r.b.len())));
    }
    Ok(())
}

struct Reader<'a> {
    b: &'a [u8],
    names: &'a HashMap<Name, Schema>,
}

impl<'a> Reader<'a> {
    fn long(&mut self) -> Result<i64, Error> {
        let mut v = 0u64;
        for i in 0..10 {
            let Some((&byte, rest)) = self.b.split_first() else {
                return Err(invalid("the record ends inside a number"));
            };
            self.b = rest;
            v |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(((v >> 1) as i64) ^ -((v & 1) as i64));
            }
        }
        Err(invalid("a number longer than 10 bytes"))
    }

    fn int(&mut self) -> Result<i32, Error> {
        let v = self.long()?;
        i32::try_from(v).map_err(|_| invalid(format!("{v} does not fit an int")))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        if n > self.b.len() {
            return Err(invalid(format!("the record ends {} bytes early", n - self.b.len())));
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(head)
    }

    fn sized(&mut self) -> Result<&'a [u8], Error> {
        let n = self.long()?;
        let n = usize::try_from(n).map_err(|_| invalid(format!("a negative length ({n})")))?;
        self.take(n)
    }

    /// An array's or map's items: blocks of a count (negative: followed
    /// by the block's size in bytes), ended by a count of 0.
    fn blocks(
        &mut self,
        out: &mut Vec<u8>,
        mut item: impl FnMut(&mut Self, &mut Vec<u8>, bool) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let mut first = true;
        loop {
            let mut n = self.long()?;
            if n == 0 {
                return Ok(());
            }
            if n < 0 {
                n = n.checked_neg().ok_or_else(|| invalid("a block count out of range"))?;
                self.long()?;
            }
            // Each item takes at least a byte (or none for null items; bounded by the count's own check).
            if n as u64 > (self.b.len() as u64 + 1) * 8 {
                return Err(invalid(format!("a block of {n} items in {} bytes", self.b.len())));
            }
            for _ in 0..n {
                item(self, out, first)?;
                first = false;
            }
        }
    }

    fn value(&mut self, s: &Schema, out: &mut Vec<u8>, depth: usize) -> Result<(), Error> {
        if depth > MAX_DEPTH {
            return Err(invalid(format!("nested deeper than {MAX_DEPTH}")));
        }
        match s {
            Schema::Null => out.extend_from_slice(b"null"),
            Schema::Boolean => match self.take(1)?[0] {
                0 => out.extend_from_slice(b"false"),
                1 => out.extend_from_slice(b"true"),
                b => return Err(invalid(format!("{b} is not a boolean"))),
            },
            Schema::Int | Schema::Date | Schema::TimeMillis => integer(out, self.int()?),
            Schema::Long
            | Schema::TimeMicros
            | Schema::TimestampMillis
            | Schema::TimestampMicros
            | Schema::TimestampNanos
            | Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros
            | Schema::LocalTimestampNanos => integer(out, self.long()?),
            Schema::Float => {
                let b = self.take(4)?;
                number(out, f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])));
            }
            Schema::Double => {
                let b = self.take(8)?;
                number(out, f64::from_le_bytes(b.try_into().unwrap_or_default()));
            }
            Schema::Bytes => {
                let b = self.sized()?;
                string(out, &B64.encode(b));
            }
            Schema::String | Schema::Uuid => {
                let b = self.sized()?;
                let text = std::str::from_utf8(b).map_err(|e| invalid(format!("a string that is not UTF-8: {e}")))?;
                string(out, text);
            }
            Schema::Fixed(f) => {
                let b = self.take(f.size)?;
                string(out, &B64.encode(b));
            }
            Schema::Decimal(d) => {
                let b = match &*d.inner {
                    Schema::Fixed(f) => self.take(f.size)?,
                    _ => self.sized()?,
                };
                string(out, &B64.encode(b));
            }
            Schema::Enum(e) => {
                let i = self.int()?;
                let symbol = usize::try_from(i).ok().and_then(|i| e.symbols.get(i));
                string(out, symbol.ok_or_else(|| invalid(format!("enum index {i} of {} symbols", e.symbols.len())))?);
            }
            Schema::Union(u) => {
                let i = self.long()?;
                let variant = usize::try_from(i).ok().and_then(|i| u.variants().get(i));
                let v = variant.ok_or_else(|| invalid(format!("union index {i} of {} types", u.variants().len())))?;
                self.value(v, out, depth + 1)?;
            }
            Schema::Array(a) => {
                out.push(b'[');
                self.blocks(out, |r, out, first| {
                    if !first {
                        out.push(b',');
                    }
                    r.value(&a.items, out, depth + 1)
                })?;
                out.push(b']');
            }
            Schema::Map(m) => {
                out.push(b'{');
                self.blocks(out, |r, out, first| {
                    if !first {
                        out.push(b',');
                    }
                    let k = r.sized()?;
                    string(
                        out,
                        std::str::from_utf8(k).map_err(|e| invalid(format!("a map key that is not UTF-8: {e}")))?,
                    );
                    out.push(b':');
                    r.value(&m.types, out, depth + 1)
                })?;
                out.push(b'}');
            }
            Schema::Record(rec) => {
                out.push(b'{');
                for (i, f) in rec.fields.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    string(out, &f.name);
                    out.push(b':');
                    self.value(&f.schema, out, depth + 1)?;
                }
                out.push(b'}');
            }
            Schema::Ref { name } => {
                let names = self.names;
                let target = names
                    .get(name)
                    .ok_or_else(|| invalid(format!("the schema names `{name}`, which it does not define")))?;
                self.value(target, out, depth + 1)?;
            }
            Schema::BigDecimal | Schema::Duration => return Err(Error::Unsupported),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::formats::{avro_json, Compiled, Fetched};
    use apache_avro::types::Value as V;

    /// The transcoder and the crate's decoding render every record alike.
    #[test]
    fn renders_what_the_crate_decodes() {
        let text = r#"{"type":"record","name":"T","namespace":"x","fields":[
            {"name":"n","type":"null"},{"name":"b","type":"boolean"},{"name":"i","type":"int"},{"name":"l","type":"long"},
            {"name":"f","type":"float"},{"name":"d","type":"double"},{"name":"by","type":"bytes"},{"name":"s","type":"string"},
            {"name":"fx","type":{"type":"fixed","name":"F","size":3}},{"name":"e","type":{"type":"enum","name":"E","symbols":["a","b"]}},
            {"name":"u","type":["null","string","x.F"]},{"name":"a","type":{"type":"array","items":"long"}},
            {"name":"m","type":{"type":"map","values":"E"}},{"name":"next","type":["null","x.T"]},
            {"name":"ts","type":{"type":"long","logicalType":"timestamp-millis"}}]}"#;
        let fetched = Fetched { format: "AVRO".into(), text: text.into(), references: vec![] };
        let c = Compiled::compile(&fetched).unwrap();
        let Compiled::Avro { schema, names, .. } = &c else { panic!() };
        let record = |i: i64, next: Option<V>| {
            V::Record(vec![
                ("n".into(), V::Null),
                ("b".into(), V::Boolean(i % 2 == 0)),
                ("i".into(), V::Int(-7 * i as i32)),
                ("l".into(), V::Long(i64::MIN + i)),
                ("f".into(), V::Float(1.5)),
                ("d".into(), V::Double(if i == 1 { f64::NAN } else { -2.25e10 })),
                ("by".into(), V::Bytes(vec![0, 255, i as u8])),
                ("s".into(), V::String(format!("\"quoted\" \\ ü {i}\n"))),
                ("fx".into(), V::Fixed(3, vec![1, 2, 3])),
                ("e".into(), V::Enum(1, "b".into())),
                (
                    "u".into(),
                    if i == 0 { V::Union(0, Box::new(V::Null)) } else { V::Union(1, Box::new(V::String("u".into()))) },
                ),
                ("a".into(), V::Array((0..i).map(V::Long).collect())),
                ("m".into(), V::Map([("k".to_string(), V::Enum(0, "a".into()))].into())),
                (
                    "next".into(),
                    match next {
                        Some(n) => V::Union(1, Box::new(n)),
                        None => V::Union(0, Box::new(V::Null)),
                    },
                ),
                ("ts".into(), V::TimestampMillis(1_700_000_000_000 + i)),
            ])
        };
        for i in 0..3 {
            let v = record(i, Some(record(i + 10, None)));
            let bytes = apache_avro::to_avro_datum(schema, v).unwrap();
            let mut fast = Vec::new();
            assert!(super::transcode(schema, names, &bytes, &mut fast).is_ok());
            let decoded = apache_avro::from_avro_datum(schema, &mut &bytes[..], None).unwrap();
            let mut slow = Vec::new();
            avro_json(&decoded, &mut slow);
            assert_eq!(String::from_utf8(fast).unwrap(), String::from_utf8(slow).unwrap());
            // Every truncation is refused, never misread.
            for cut in 0..bytes.len() {
                assert!(super::transcode(schema, names, &bytes[..cut], &mut Vec::new()).is_err(), "cut at {cut}");
            }
        }
    }
}
