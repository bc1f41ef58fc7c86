//! Secrets at rest: a mapping's SASL passwords and TLS private keys are
//! sealed with ChaCha20-Poly1305 under the node's secret key before they
//! reach the database, and the spec stored beside them never holds them.
//! Every node sharing a database needs the same key.

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore;
use sluice_app::spec::MappingSpec;

/// A random URL-safe token of `bytes` random bytes (sessions, API tokens,
/// CSRF tokens, CSP nonces).
pub fn random_token(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// Equal strings, in time that does not depend on where they differ.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub struct Sealer {
    cipher: ChaCha20Poly1305,
    /// For MACs (device cookies): derived from the key, never the key itself.
    mac_key: [u8; 32],
}

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

impl Sealer {
    pub fn new(key: &[u8; 32]) -> Sealer {
        use sha2::Digest as _;
        let mac_key = sha2::Sha256::new().chain_update(b"sluice mac key v1\0").chain_update(key).finalize().into();
        Sealer { cipher: ChaCha20Poly1305::new(Key::from_slice(key)), mac_key }
    }

    /// A key that lives as long as the process (tests; secrets stored with
    /// it cannot be read after a restart).
    pub fn ephemeral() -> Sealer {
        let mut k = [0u8; 32];
        rand::rng().fill_bytes(&mut k);
        Sealer::new(&k)
    }

    /// The key from `SLUICE_SECRET_KEY` (base64 of 32 bytes), else from the
    /// file `SLUICE_SECRET_KEY_FILE`, else from `default_file`, created
    /// (owner-only) with a random key when missing.
    pub fn from_environment(default_file: &std::path::Path) -> Result<Sealer> {
        if let Ok(k) = std::env::var("SLUICE_SECRET_KEY") {
            return Ok(Sealer::new(&decode_key(&k).context("SLUICE_SECRET_KEY")?));
        }
        let file = std::env::var_os("SLUICE_SECRET_KEY_FILE")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| default_file.to_path_buf());
        match std::fs::read_to_string(&file) {
            Ok(k) => Ok(Sealer::new(&decode_key(&k).with_context(|| format!("the secret key in {}", file.display()))?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                use std::io::Write as _;
                use std::os::unix::fs::OpenOptionsExt as _;
                let mut k = [0u8; 32];
                rand::rng().fill_bytes(&mut k);
                if let Some(dir) = file.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                // create_new: of nodes starting at once on one directory, one key wins.
                match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&file) {
                    Ok(mut f) => {
                        writeln!(f, "{}", B64.encode(k))
                            .with_context(|| format!("cannot write a new secret key to {}", file.display()))?;
                        tracing::info!(file = %file.display(), "created a secret key for stored Kafka secrets");
                        Ok(Sealer::new(&k))
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        std::thread::sleep(std::time::Duration::from_millis(50));
                        let text = std::fs::read_to_string(&file)?;
                        Ok(Sealer::new(
                            &decode_key(&text).with_context(|| format!("the secret key in {}", file.display()))?,
                        ))
                    }
                    Err(e) => Err(e).with_context(|| format!("cannot create the secret key {}", file.display())),
                }
            }
            Err(e) => Err(e).with_context(|| format!("cannot read the secret key {}", file.display())),
        }
    }

    /// HMAC-SHA256 of `data` under a key derived from the node's key: what
    /// any node of the cluster can check and nobody without the key can make.
    pub fn mac(&self, data: &[u8]) -> [u8; 32] {
        use hmac::Mac as _;
        let mut m =
            <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(&self.mac_key).expect("HMAC takes any key length");
        m.update(data);
        m.finalize().into_bytes().into()
    }

    pub fn seal(&self, plain: &[u8]) -> Result<String> {
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let sealed =
            self.cipher.encrypt(Nonce::from_slice(&nonce), plain).map_err(|_| anyhow::anyhow!("cannot encrypt"))?;
        Ok(B64.encode([nonce.as_slice(), &sealed].concat()))
    }

    pub fn open(&self, sealed: &str) -> Result<Vec<u8>> {
        let bytes = B64.decode(sealed.trim())?;
        if bytes.len() < 12 {
            bail!("sealed secret too short");
        }
        let (nonce, body) = bytes.split_at(12);
        self.cipher.decrypt(Nonce::from_slice(nonce), body).map_err(|_| {
            anyhow::anyhow!(
                "cannot decrypt the stored secrets: this node's secret key is not the one they were stored with"
            )
        })
    }

    /// The spec's secrets, sealed (None when it has none).
    pub fn seal_spec(&self, spec: &MappingSpec) -> Result<Option<String>> {
        let parts: Vec<[Option<&String>; 3]> = spec.access_configs().map(|c| c.secrets()).collect();
        if parts.iter().all(|p| p.iter().all(Option::is_none)) {
            return Ok(None);
        }
        Ok(Some(self.seal(&serde_json::to_vec(&parts)?)?))
    }

    /// Puts sealed secrets back into the spec they were taken from.
    pub fn unseal_into(&self, sealed: &str, spec: &mut MappingSpec) -> Result<()> {
        // Password, key, key password (sealed before key passwords existed:
        // two), per access configuration, the schema registry's last.
        let parts: Vec<Vec<Option<String>>> = serde_json::from_slice(&self.open(sealed)?)?;
        for (c, part) in spec.access_configs_mut().zip(parts) {
            let mut part = part.into_iter();
            c.password = part.next().flatten();
            c.private_key = part.next().flatten();
            c.private_key_password = part.next().flatten();
        }
        Ok(())
    }
}

fn decode_key(text: &str) -> Result<[u8; 32]> {
    let bytes = B64.decode(text.trim()).context("not base64")?;
    bytes.try_into().map_err(|_| anyhow::anyhow!("must be 32 bytes (base64), e.g. from `openssl rand -base64 32`"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use sluice_app::spec::{MappingSpec, SourceAccessConfiguration};

    /// A minimal valid spec with these access configurations.
    pub(crate) fn spec(configs: Vec<SourceAccessConfiguration>, protocol: Option<&str>) -> MappingSpec {
        let mut s: MappingSpec = serde_json::from_value(serde_json::json!({
            "FunctionName": "http://f/", "Topics": ["t"], "StartingPosition": "LATEST",
            "SelfManagedEventSource": {"Endpoints": {"KAFKA_BOOTSTRAP_SERVERS": ["b:9092"]}}
        }))
        .unwrap();
        s.source_access_configurations = configs;
        s.self_managed_kafka_event_source_config.security_protocol = protocol.map(String::from);
        s
    }

    /// Every secret part comes back, and what was sealed before key
    /// passwords existed (two parts per entry) still opens.
    #[test]
    fn secrets_are_sealed_and_opened_whole() {
        let sealer = Sealer::ephemeral();
        let full = SourceAccessConfiguration {
            kind: "CLIENT_CERTIFICATE_TLS_AUTH".into(),
            certificate: Some("-----BEGIN CERTIFICATE-----c".into()),
            private_key: Some("-----BEGIN ENCRYPTED PRIVATE KEY-----k".into()),
            private_key_password: Some("key-password-never-in-clear".into()),
            ..Default::default()
        };
        let sasl = SourceAccessConfiguration {
            kind: "SASL_SCRAM_512_AUTH".into(),
            username: Some("u".into()),
            password: Some("sasl-password-never-in-clear".into()),
            ..Default::default()
        };
        let stored = spec(vec![sasl.clone(), full.clone()], None);
        let sealed = sealer.seal_spec(&stored).unwrap().unwrap();
        // Secrets long enough that random ciphertext cannot hold them by chance.
        for secret in ["sasl-password-never-in-clear", "key-password-never-in-clear", "ENCRYPTED"] {
            assert!(!sealed.contains(secret));
        }
        let mut bare = spec(
            vec![
                SourceAccessConfiguration { password: None, ..sasl.clone() },
                SourceAccessConfiguration { private_key: None, private_key_password: None, ..full.clone() },
            ],
            None,
        );
        sealer.unseal_into(&sealed, &mut bare).unwrap();
        assert_eq!(bare.source_access_configurations, vec![sasl.clone(), full.clone()]);

        let old = sealer.seal(br#"[["pw", null], [null, "-----BEGIN PRIVATE KEY-----k"]]"#).unwrap();
        let mut bare = spec(
            vec![
                SourceAccessConfiguration { password: None, ..sasl },
                SourceAccessConfiguration { private_key: None, private_key_password: None, ..full },
            ],
            None,
        );
        sealer.unseal_into(&old, &mut bare).unwrap();
        assert_eq!(bare.source_access_configurations[0].password.as_deref(), Some("pw"));
        assert!(bare.schema_registry().is_none());
        assert_eq!(bare.source_access_configurations[1].private_key.as_deref(), Some("-----BEGIN PRIVATE KEY-----k"));
        assert_eq!(bare.source_access_configurations[1].private_key_password, None);
    }

    /// The schema registry's secrets are sealed after the brokers' and come
    /// back to the registry's access configurations.
    #[test]
    fn registry_secrets_are_sealed_with_the_rest() {
        let sealer = Sealer::ephemeral();
        let sasl = SourceAccessConfiguration {
            kind: "BASIC_AUTH".into(),
            username: Some("k".into()),
            password: Some("kafka-password-never-in-clear".into()),
            ..Default::default()
        };
        let mut stored = spec(vec![sasl.clone()], Some("SASL_SSL"));
        let basic = SourceAccessConfiguration {
            kind: "BASIC_AUTH".into(),
            username: Some("r".into()),
            password: Some("registry-password-never-in-clear".into()),
            ..Default::default()
        };
        stored.self_managed_kafka_event_source_config.schema_registry_config =
            Some(sluice_app::spec::SchemaRegistryConfig { access_configs: vec![basic.clone()], ..Default::default() });
        let sealed = sealer.seal_spec(&stored).unwrap().unwrap();
        assert!(!sealed.contains("registry-password"));
        let mut bare = stored.clone();
        for c in bare.access_configs_mut() {
            c.password = None;
        }
        assert!(!serde_json::to_string(&stored).unwrap().contains("never-in-clear"), "never serialized");
        sealer.unseal_into(&sealed, &mut bare).unwrap();
        assert_eq!(bare.source_access_configurations, vec![sasl]);
        assert_eq!(bare.schema_registry().unwrap().access_configs, vec![basic]);
    }
}
