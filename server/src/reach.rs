//! Where mappings may point: `SLUICE_ALLOWED_HOSTS`, an optional allow-list
//! of hosts and networks for HTTP functions and Kafka brokers. An operator
//! can otherwise make this node connect anywhere it can reach (an internal
//! admin endpoint, a cloud metadata address). Unset: anything goes.
//!
//! Entries, separated by commas: a host name (`kafka-1.internal`), a
//! suffix (`*.internal` or `.internal`: any name under it), an address
//! (`10.0.0.5`, `::1`) or a network (`10.0.0.0/8`, `fd00::/8`). A name is
//! allowed when it matches a name entry, or when every address it resolves
//! to lies in an address or network entry.

use std::net::IpAddr;

use sluice_app::spec::{target_kind, FieldError, MappingSpec, TargetKind};

#[derive(Clone, Debug, PartialEq)]
enum Entry {
    Name(String),
    Suffix(String),
    Net(IpAddr, u8),
}

#[derive(Clone, Debug, Default)]
pub struct Reach {
    /// None: no allow-list.
    entries: Option<Vec<Entry>>,
}

fn in_net(a: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (a, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = if bits == 0 { 0 } else { u32::MAX << (32 - bits.min(32)) };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = if bits == 0 { 0 } else { u128::MAX << (128 - bits.min(128)) };
            u128::from(a) & mask == u128::from(n) & mask
        }
        // An IPv4 address written as IPv6 (::ffff:a.b.c.d) is the IPv4 one.
        (IpAddr::V6(a), IpAddr::V4(_)) => a.to_ipv4_mapped().is_some_and(|a4| in_net(IpAddr::V4(a4), net, bits)),
        _ => false,
    }
}

impl Reach {
    /// Parses the setting; an entry that is none of the forms is an error
    /// (a typo must not silently allow less, or more, than meant).
    pub fn parse(setting: &str) -> Result<Reach, String> {
        let mut entries = Vec::new();
        for raw in setting.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let e = raw.to_ascii_lowercase();
            let entry = if e.contains("://") {
                return Err(format!("`{raw}`: give a host name, address or network, not a URL"));
            } else if let Some((addr, bits)) = e.split_once('/') {
                let addr: IpAddr = addr.parse().map_err(|_| format!("`{raw}`: not a network like 10.0.0.0/8"))?;
                let max = if addr.is_ipv4() { 32 } else { 128 };
                let bits: u8 = bits
                    .parse()
                    .ok()
                    .filter(|b| *b <= max)
                    .ok_or_else(|| format!("`{raw}`: the prefix length must be 0 to {max}"))?;
                Entry::Net(addr, bits)
            } else if let Ok(addr) = e.trim_matches(|c| c == '[' || c == ']').parse::<IpAddr>() {
                Entry::Net(addr, if addr.is_ipv4() { 32 } else { 128 })
            } else if let Some(s) = e.strip_prefix("*.").or_else(|| e.strip_prefix('.')) {
                Entry::Suffix(format!(".{s}"))
            } else if e.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.') {
                Entry::Name(e)
            } else {
                return Err(format!("`{raw}`: not a host name, address or network"));
            };
            entries.push(entry);
        }
        Ok(Reach { entries: Some(entries) })
    }

    pub fn is_limited(&self) -> bool {
        self.entries.is_some()
    }

    /// Whether `host` may be connected to (resolving names that no name
    /// entry allows). Err: why not.
    pub async fn allows(&self, host: &str, port: u16) -> Result<(), String> {
        if !self.is_limited() {
            return Ok(());
        }
        let h = host.trim_matches(|c| c == '[' || c == ']').to_ascii_lowercase();
        if self.names(&h) {
            return Ok(());
        }
        let addrs: Vec<IpAddr> = match h.parse::<IpAddr>() {
            Ok(a) => vec![a],
            Err(_) => tokio::net::lookup_host((h.as_str(), port))
                .await
                .map_err(|e| {
                    format!("{host} is not in SLUICE_ALLOWED_HOSTS and cannot be resolved to check its addresses: {e}")
                })?
                .map(|s| s.ip())
                .collect(),
        };
        match addrs.iter().find(|a| !self.allows_addr(**a)) {
            None if !addrs.is_empty() => Ok(()),
            Some(a) if a.to_string() != h => {
                Err(format!("{host} resolves to {a}, which SLUICE_ALLOWED_HOSTS does not allow"))
            }
            _ => Err(format!("{host} is not in SLUICE_ALLOWED_HOSTS")),
        }
    }

    /// Whether a name or suffix entry allows the (lower-case) host name.
    fn names(&self, host: &str) -> bool {
        self.entries.iter().flatten().any(|e| match e {
            Entry::Name(n) => n == host,
            Entry::Suffix(s) => host.ends_with(s.as_str()),
            Entry::Net(..) => false,
        })
    }

    /// Whether an address lies in an address or network entry.
    pub fn allows_addr(&self, a: IpAddr) -> bool {
        match &self.entries {
            None => true,
            Some(entries) => entries.iter().any(|e| matches!(e, Entry::Net(n, bits) if in_net(a, *n, *bits))),
        }
    }

    /// The spec's hosts that are not allowed, as field errors: the HTTP
    /// function's, the schema registry's and the bootstrap servers' (the
    /// kafka:// destination is on the same cluster).
    pub async fn check(&self, spec: &MappingSpec) -> Vec<FieldError> {
        if !self.is_limited() {
            return vec![];
        }
        let mut errs = Vec::new();
        if target_kind(&spec.function_name) == TargetKind::Http {
            if let Ok(u) = url::Url::parse(&spec.function_name) {
                let port = u.port_or_known_default().unwrap_or(80);
                if let Err(e) = self.allows(u.host_str().unwrap_or(""), port).await {
                    errs.push(FieldError::new("FunctionName", e));
                }
            }
        }
        // A Confluent-compatible schema registry (a Glue registry is AWS's).
        let registry = spec.schema_registry().filter(|r| !r.is_glue()).and_then(|r| r.schema_registry_uri.as_deref());
        if let Some(u) = registry.and_then(|r| url::Url::parse(r).ok()) {
            let port = u.port_or_known_default().unwrap_or(443);
            if let Err(e) = self.allows(u.host_str().unwrap_or(""), port).await {
                let block = if spec.self_managed_kafka_event_source_config.schema_registry_config.is_some() {
                    "SelfManagedKafkaEventSourceConfig"
                } else {
                    "AmazonManagedKafkaEventSourceConfig"
                };
                errs.push(FieldError::new(format!("{block}.SchemaRegistryConfig.SchemaRegistryURI"), e));
            }
        }
        for (i, server) in spec.bootstrap_servers().iter().enumerate() {
            let (host, port) = split_host_port(server);
            if let Err(e) = self.allows(host, port).await {
                errs.push(FieldError::new(format!("SelfManagedEventSource.Endpoints.KAFKA_BOOTSTRAP_SERVERS[{i}]"), e));
            }
        }
        errs
    }
}

/// `host:port`, `[v6]:port` or a bare host (port 9092).
fn split_host_port(s: &str) -> (&str, u16) {
    let s = s.trim();
    if let Some(rest) = s.strip_prefix('[') {
        if let Some((h, p)) = rest.split_once("]:") {
            return (h, p.parse().unwrap_or(9092));
        }
        return (rest.trim_end_matches(']'), 9092);
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, p.parse().unwrap_or(9092)),
        _ => (s, 9092),
    }
}

/// A reqwest resolver that drops addresses the allow-list does not allow,
/// so a name that passed at save time cannot be re-pointed (DNS rebinding)
/// at an internal address later.
pub struct Resolver(pub Reach);

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let reach = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let named = reach.names(&host.to_ascii_lowercase());
            let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<std::net::SocketAddr> =
                addrs.into_iter().filter(|a| named || reach.allows_addr(a.ip())).collect();
            if allowed.is_empty() {
                return Err(format!("{host}: no address SLUICE_ALLOWED_HOSTS allows").into());
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn entries_allow_what_they_name_and_nothing_else() {
        let r = Reach::parse("kafka-1.internal, *.corp.example, 10.0.0.0/8, ::1").unwrap();
        assert!(r.allows("kafka-1.internal", 9092).await.is_ok());
        assert!(r.allows("a.b.corp.example", 443).await.is_ok());
        assert!(r.allows("10.200.3.4", 80).await.is_ok());
        assert!(r.allows("[::1]", 80).await.is_ok());
        assert!(r.allows("::ffff:10.1.2.3", 80).await.is_ok(), "IPv4-mapped IPv6 is the IPv4 address");
        let no = r.allows("169.254.169.254", 80).await.unwrap_err();
        assert!(no.contains("SLUICE_ALLOWED_HOSTS"), "{no}");
        assert!(r.allows("11.0.0.1", 80).await.is_err());
        assert!(r.allows("corp.example.evil", 80).await.is_err());
        // localhost resolves to 127.0.0.1 (and ::1): not all allowed.
        assert!(r.allows("localhost", 80).await.is_err());
        let local = Reach::parse("127.0.0.0/8, ::1").unwrap();
        assert!(local.allows("localhost", 80).await.is_ok());
    }

    #[test]
    fn bad_entries_are_refused_with_the_reason() {
        assert!(Reach::parse("10.0.0.0/33").unwrap_err().contains("0 to 32"));
        assert!(Reach::parse("http://x").unwrap_err().contains("not a URL"));
        assert!(Reach::parse("a b").unwrap_err().contains("not a host name"));
        assert!(!Reach::default().is_limited());
        assert_eq!(split_host_port("[::1]:9093"), ("::1", 9093));
        assert_eq!(split_host_port("b-1.kafka:9094"), ("b-1.kafka", 9094));
    }
}
