//! Checking AWS Signature Version 4 on a request, as AWS's services do, so
//! the AWS CLI, the SDKs and Terraform can sign requests to Sluice (#18
//! wires it to tokens' key pairs). Pure: the caller hands over the request as
//! received, the time and a way to find a key's secret.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use sluice_app::uri_encode;

/// How far a request's `X-Amz-Date` may be from now, either way (AWS: 15 min).
pub const MAX_SKEW_MS: i64 = 15 * 60_000;

/// A request as it arrived: the path and query exactly as sent (still
/// percent-encoded), header names in any case.
pub struct Request<'a> {
    pub method: &'a str,
    pub raw_path: &'a str,
    pub raw_query: &'a str,
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
}

/// Who signed, and for what.
#[derive(Debug, PartialEq, Eq)]
pub struct Signer {
    pub access_key_id: String,
    pub region: String,
    pub service: String,
}

/// Why a signature is refused; each maps to AWS's error of the same case.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SigV4Error {
    #[error("the request is not signed (no AWS4-HMAC-SHA256 Authorization header)")]
    NotSigned,
    #[error("the Authorization header is malformed: {0}")]
    Malformed(&'static str),
    /// AWS: UnrecognizedClientException.
    #[error("the security token included in the request is invalid")]
    UnknownKey,
    /// AWS: InvalidSignatureException.
    #[error("signature expired or not yet valid: X-Amz-Date is more than 15 minutes from the server's time")]
    Skewed,
    /// AWS: InvalidSignatureException.
    #[error(
        "the request signature we calculated does not match the signature you provided; check your AWS secret access key and signing method"
    )]
    Mismatch,
}

/// The access key id an `Authorization: AWS4-HMAC-SHA256 Credential=...`
/// header names (to look its secret up before `verify`).
pub fn access_key_id(authorization: &str) -> Option<&str> {
    let rest = authorization.strip_prefix("AWS4-HMAC-SHA256 ")?;
    rest.split(',').find_map(|p| p.trim().strip_prefix("Credential="))?.split('/').next().filter(|k| !k.is_empty())
}

/// Checks the request's signature; `secret_for` gives the secret access key
/// of an access key id (None: unknown).
pub fn verify(
    req: &Request<'_>,
    now_ms: i64,
    secret_for: impl FnOnce(&str) -> Option<String>,
) -> Result<Signer, SigV4Error> {
    let header = |name: &str| req.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str());
    let auth =
        header("authorization").and_then(|a| a.strip_prefix("AWS4-HMAC-SHA256 ")).ok_or(SigV4Error::NotSigned)?;
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for part in auth.split(',') {
        match part.trim().split_once('=') {
            Some(("Credential", v)) => credential = Some(v),
            Some(("SignedHeaders", v)) => signed_headers = Some(v),
            Some(("Signature", v)) => signature = Some(v),
            _ => return Err(SigV4Error::Malformed("expected Credential, SignedHeaders and Signature")),
        }
    }
    let (credential, signed_headers, signature) = match (credential, signed_headers, signature) {
        (Some(c), Some(h), Some(s)) => (c, h, s),
        _ => return Err(SigV4Error::Malformed("expected Credential, SignedHeaders and Signature")),
    };
    let scope: Vec<&str> = credential.split('/').collect();
    let [key_id, date, region, service, "aws4_request"] = scope[..] else {
        return Err(SigV4Error::Malformed("Credential must be KEY/DATE/REGION/SERVICE/aws4_request"));
    };
    let amz_date = header("x-amz-date").ok_or(SigV4Error::Malformed("X-Amz-Date is missing"))?;
    let at = parse_amz_date(amz_date).ok_or(SigV4Error::Malformed("X-Amz-Date is not YYYYMMDD'T'HHMMSS'Z'"))?;
    if !amz_date.starts_with(date) {
        return Err(SigV4Error::Malformed("the credential's date is not X-Amz-Date's"));
    }
    let names: Vec<&str> = signed_headers.split(';').collect();
    if !names.contains(&"host") {
        return Err(SigV4Error::Malformed("SignedHeaders must include host"));
    }
    let secret = secret_for(key_id).ok_or(SigV4Error::UnknownKey)?;
    if (now_ms - at).abs() > MAX_SKEW_MS {
        return Err(SigV4Error::Skewed);
    }

    let mut canonical_headers = String::new();
    for name in &names {
        // Several headers of one name are joined with commas, as signers do.
        let values: Vec<String> = req
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        canonical_headers.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    let payload_hash = hex(&Sha256::digest(req.body));
    let canonical = format!(
        "{}\n{}\n{}\n{canonical_headers}\n{signed_headers}\n{payload_hash}",
        req.method,
        canonical_path(req.raw_path),
        canonical_query(req.raw_query)
    );
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let to_sign = format!("AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}", hex(&Sha256::digest(canonical.as_bytes())));
    let mut key = format!("AWS4{secret}").into_bytes();
    for part in [date, region, service, "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    let expected = hex(&hmac(&key, to_sign.as_bytes()));
    if !crate::secrets::constant_time_eq(&expected, signature) {
        return Err(SigV4Error::Mismatch);
    }
    Ok(Signer { access_key_id: key_id.to_string(), region: region.to_string(), service: service.to_string() })
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A path as SigV4 canonicalizes it for every service but S3: each segment,
/// as it arrived (encoded once), encoded again.
fn canonical_path(raw: &str) -> String {
    raw.split('/').map(uri_encode).collect::<Vec<_>>().join("/")
}

/// The query's pairs decoded, encoded SigV4's way, sorted.
fn canonical_query(raw: &str) -> String {
    let decode = |s: &str| percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().to_string();
    let mut pairs: Vec<(String, String)> = raw
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (uri_encode(&decode(k)), uri_encode(&decode(v)))
        })
        .collect();
    pairs.sort();
    pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")
}

/// `20261201T013600Z` as Unix milliseconds.
fn parse_amz_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s.get(r)?.parse::<u32>().ok();
    let month = time::Month::try_from(n(4..6)? as u8).ok()?;
    let date = time::Date::from_calendar_date(n(0..4)? as i32, month, n(6..8)? as u8).ok()?;
    let t = date.with_hms(n(9..11)? as u8, n(11..13)? as u8, n(13..15)? as u8).ok()?;
    Some((t.assume_utc().unix_timestamp_nanos() / 1_000_000) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};

    const KEY: &str = "AKIASLUICETEST000001";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

    /// Signs like the AWS SDKs do (aws-sigv4, the Rust SDK's signer) and
    /// returns the headers a client would send.
    fn signed(method: &str, url: &str, body: &[u8], secret: &str, at: std::time::SystemTime) -> Vec<(String, String)> {
        let creds = aws_credential_types::Credentials::new(KEY, secret, None, None, "test");
        let identity = aws_smithy_runtime_api::client::identity::Identity::from(creds);
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region("eu-west-1")
            .name("lambda")
            .time(at)
            .settings(SigningSettings::default())
            .build()
            .unwrap()
            .into();
        let headers = [("host", "localhost:3000"), ("content-type", "application/json")];
        let request = SignableRequest::new(method, url, headers.into_iter(), SignableBody::Bytes(body)).unwrap();
        let (instructions, _) = sign(request, &params).unwrap().into_parts();
        let mut out: Vec<(String, String)> = headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        out.extend(instructions.headers().map(|(k, v)| (k.to_string(), v.to_string())));
        out
    }

    fn check(
        method: &str,
        path: &str,
        query: &str,
        headers: &[(String, String)],
        body: &[u8],
        now_ms: i64,
    ) -> Result<Signer, SigV4Error> {
        let req = Request { method, raw_path: path, raw_query: query, headers, body };
        verify(&req, now_ms, |k| (k == KEY).then(|| SECRET.to_string()))
    }

    #[test]
    fn a_signature_from_the_aws_signer_is_accepted_and_any_change_refused() {
        let at = std::time::SystemTime::now();
        let now = at.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
        let body = br#"{"FunctionName":"f","BatchSize":10}"#;
        // A path with an encoded ARN and a query that needs encoding, as
        // botocore sends for tags and list filters.
        let path = "/2017-03-31/tags/arn%3Aaws%3Alambda%3Aeu-west-1%3A000000000000%3Aevent-source-mapping%3Aabc";
        let query = "FunctionName=my%20fn&Marker=a%2Fb&MaxItems=5";
        let headers = signed("POST", &format!("http://localhost:3000{path}?{query}"), body, SECRET, at);
        let ok = check("POST", path, query, &headers, body, now).unwrap();
        assert_eq!(ok, Signer { access_key_id: KEY.into(), region: "eu-west-1".into(), service: "lambda".into() });

        assert_eq!(check("POST", path, query, &headers, b"{}", now), Err(SigV4Error::Mismatch), "body changed");
        assert_eq!(check("PUT", path, query, &headers, body, now), Err(SigV4Error::Mismatch), "method changed");
        assert_eq!(check("POST", path, "MaxItems=6", &headers, body, now), Err(SigV4Error::Mismatch));
        let other_secret = signed("POST", &format!("http://localhost:3000{path}?{query}"), body, "nope", at);
        assert_eq!(check("POST", path, query, &other_secret, body, now), Err(SigV4Error::Mismatch));
        assert_eq!(check("POST", path, query, &headers, body, now + 16 * 60_000), Err(SigV4Error::Skewed));
        assert_eq!(check("POST", path, query, &headers, body, now - 16 * 60_000), Err(SigV4Error::Skewed));
        let unknown: Vec<_> =
            headers.iter().map(|(k, v)| (k.clone(), v.replace(KEY, "AKIAUNKNOWN000000000"))).collect();
        assert_eq!(check("POST", path, query, &unknown, body, now), Err(SigV4Error::UnknownKey));
        assert_eq!(check("POST", path, query, &[], body, now), Err(SigV4Error::NotSigned));
    }

    /// A request botocore (the AWS CLI's and boto3's signer) signed, as
    /// recorded: a list call's encoded ARN filter and a JSON body.
    #[test]
    fn a_request_signed_by_botocore_is_accepted() {
        let h = |k: &str, v: &str| (k.to_string(), v.to_string());
        let headers = [
            h("Host", "localhost:3000"),
            h("Content-Type", "application/json"),
            h("User-Agent", "aws-cli/2 test"),
            h("X-Amz-Date", "20261201T020049Z"),
            h(
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=AKIASLUICETEST000001/20261201/us-east-1/lambda/aws4_request, \
                 SignedHeaders=content-type;host;x-amz-date, \
                 Signature=66e8093d6945f71d6a15bb58a69a0e181400cd4ec0fbe10eaa4867fcec4189c2",
            ),
            h("Content-Length", "48"),
        ];
        let body = br#"{"FunctionName": "my-function", "BatchSize": 10}"#;
        let path = "/2015-03-31/event-source-mappings/";
        let query = "FunctionName=arn%3Aaws%3Alambda%3Aus-east-1%3A000000000000%3Afunction%3Amy-function&MaxItems=5";
        let at = parse_amz_date("20261201T020049Z").unwrap();
        let signer = check("POST", path, query, &headers, body, at + 60_000).unwrap();
        assert_eq!((signer.region.as_str(), signer.service.as_str()), ("us-east-1", "lambda"));
        assert_eq!(check("POST", path, "MaxItems=5", &headers, body, at), Err(SigV4Error::Mismatch));
    }

    #[test]
    fn the_key_id_is_read_from_the_credential() {
        let h = "AWS4-HMAC-SHA256 Credential=AKSLABC/20261201/eu-west-1/lambda/aws4_request, SignedHeaders=host;x-amz-date, Signature=00";
        assert_eq!(access_key_id(h), Some("AKSLABC"));
        assert_eq!(access_key_id("Bearer slc_x"), None);
        assert_eq!(access_key_id("AWS4-HMAC-SHA256 SignedHeaders=host"), None);
        assert_eq!(access_key_id("AWS4-HMAC-SHA256 Credential=/20261201/r/s/aws4_request"), None);
    }

    #[test]
    fn query_pairs_are_sorted_and_encoded_once_more() {
        assert_eq!(canonical_query("b=2&a=x%2Fy&a=1&c"), "a=1&a=x%2Fy&b=2&c=");
        assert_eq!(canonical_path("/a%3Ab/c d"), "/a%253Ab/c%20d");
    }
}
