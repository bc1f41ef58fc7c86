//! The registries' framing of a record's bytes (pure): Confluent's magic
//! byte and schema id, Glue's header (version, compression, schema version
//! UUID), and the message indexes Protobuf payloads carry after them.

use std::borrow::Cow;
use std::io::Read as _;

/// Which schema a record names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SchemaRef {
    Confluent(u32),
    Glue(uuid::Uuid),
}

impl std::fmt::Display for SchemaRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SchemaRef::Confluent(id) => write!(f, "{id}"),
            SchemaRef::Glue(id) => write!(f, "{id}"),
        }
    }
}

/// A record's bytes without the registry's header (decompressed).
#[derive(Debug)]
pub struct Frame<'a> {
    pub schema: SchemaRef,
    pub body: Cow<'a, [u8]>,
}

const GLUE_VERSION: u8 = 3;
const GLUE_NONE: u8 = 0;
const GLUE_ZLIB: u8 = 5;
/// Decompressed Glue payloads larger than this are refused (a zip bomb
/// would otherwise take the node's memory).
const MAX_INFLATED: u64 = 64 * 1024 * 1024;

/// Confluent's framing: `0x00`, then the schema id (4 bytes, big-endian).
pub fn confluent(bytes: &[u8]) -> Result<Frame<'_>, String> {
    match bytes {
        [0, a, b, c, d, rest @ ..] => {
            Ok(Frame { schema: SchemaRef::Confluent(u32::from_be_bytes([*a, *b, *c, *d])), body: Cow::Borrowed(rest) })
        }
        [m, ..] if *m != 0 => {
            Err(format!("not in the registry's wire format: the first byte is {m:#04x}, not the magic byte 0x00"))
        }
        _ => Err(format!("{} bytes: too short for the registry's 5-byte header", bytes.len())),
    }
}

/// Glue's framing: version 3, compression (0 none, 5 zlib), the schema
/// version's UUID (16 bytes), then the data.
pub fn glue(bytes: &[u8]) -> Result<Frame<'_>, String> {
    if bytes.len() < 18 {
        return Err(format!("{} bytes: too short for Glue's 18-byte header", bytes.len()));
    }
    if bytes[0] != GLUE_VERSION {
        return Err(format!("not in Glue's wire format: header version {}, not 3", bytes[0]));
    }
    let schema = SchemaRef::Glue(uuid::Uuid::from_slice(&bytes[2..18]).map_err(|e| e.to_string())?);
    let data = &bytes[18..];
    let body = match bytes[1] {
        GLUE_NONE => Cow::Borrowed(data),
        GLUE_ZLIB => {
            let mut out = Vec::with_capacity(data.len() * 4);
            flate2::read::ZlibDecoder::new(data)
                .take(MAX_INFLATED + 1)
                .read_to_end(&mut out)
                .map_err(|e| format!("zlib: {e}"))?;
            if out.len() as u64 > MAX_INFLATED {
                return Err(format!("decompresses to more than {MAX_INFLATED} bytes"));
            }
            Cow::Owned(out)
        }
        c => return Err(format!("unknown Glue compression {c} (0 none, 5 zlib)")),
    };
    Ok(Frame { schema, body })
}

fn varint(b: &[u8]) -> Result<(u64, &[u8]), String> {
    let mut v = 0u64;
    for (i, byte) in b.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok((v, &b[i + 1..]));
        }
    }
    Err("a truncated varint in the message indexes".into())
}

fn zigzag(b: &[u8]) -> Result<(i64, &[u8]), String> {
    let (v, rest) = varint(b)?;
    Ok((((v >> 1) as i64) ^ -((v & 1) as i64), rest))
}

/// Confluent's Protobuf message indexes: a zigzag count, then that many
/// zigzag indexes (the path to the message type: top-level, nested...); a
/// count of 0 means the first top-level message.
pub fn confluent_indexes(b: &[u8]) -> Result<(Vec<usize>, &[u8]), String> {
    let (count, mut rest) = zigzag(b)?;
    if count == 0 {
        return Ok((vec![0], rest));
    }
    if !(1..=64).contains(&count) {
        return Err(format!("{count} message indexes: not a Protobuf record of the registry"));
    }
    let mut path = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let (i, r) = zigzag(rest)?;
        if i < 0 {
            return Err(format!("a negative message index ({i})"));
        }
        path.push(i as usize);
        rest = r;
    }
    Ok((path, rest))
}

/// Glue's Protobuf message index: one unsigned varint, the position of the
/// message type among all the schema's messages sorted by full name.
pub fn glue_index(b: &[u8]) -> Result<(usize, &[u8]), String> {
    let (v, rest) = varint(b)?;
    Ok((v as usize, rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    #[test]
    fn confluent_header() {
        let f = confluent(&[0, 0, 0, 1, 7, b'x']).unwrap();
        assert_eq!(f.schema, SchemaRef::Confluent(263));
        assert_eq!(&*f.body, b"x");
        assert!(confluent(b"{\"a\":1}").unwrap_err().contains("magic byte"));
        assert!(confluent(&[0, 1]).unwrap_err().contains("too short"));
    }

    #[test]
    fn glue_header_plain_and_zlib() {
        let id = uuid::Uuid::new_v4();
        let mut plain = vec![3, 0];
        plain.extend_from_slice(id.as_bytes());
        plain.extend_from_slice(b"data");
        let f = glue(&plain).unwrap();
        assert_eq!((f.schema, &*f.body), (SchemaRef::Glue(id), &b"data"[..]));

        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&b"data".repeat(100)).unwrap();
        let mut zipped = vec![3, 5];
        zipped.extend_from_slice(id.as_bytes());
        zipped.extend_from_slice(&z.finish().unwrap());
        assert_eq!(&*glue(&zipped).unwrap().body, &b"data".repeat(100)[..]);
        zipped[1] = 9;
        assert!(glue(&zipped).unwrap_err().contains("compression 9"));
        assert!(glue(&[0, 0, 0, 0, 1]).is_err());
    }

    #[test]
    fn protobuf_message_indexes() {
        // [0]: the first message; [1, 2] (zigzag 2 = count 1, 4 = index 2): the third.
        assert_eq!(confluent_indexes(&[0, 9]).unwrap(), (vec![0], &[9u8][..]));
        assert_eq!(confluent_indexes(&[2, 4, 9]).unwrap(), (vec![2], &[9u8][..]));
        assert_eq!(confluent_indexes(&[4, 2, 0, 9]).unwrap(), (vec![1, 0], &[9u8][..]));
        assert!(confluent_indexes(&[0x80]).is_err());
        assert_eq!(glue_index(&[1, 9]).unwrap(), (1, &[9u8][..]));
    }
}
