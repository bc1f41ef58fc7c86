//! Filter matching speed (`cargo bench -p sluice-server --bench filters`):
//! records per second on one thread, 5 patterns over ~400-byte JSON
//! records, for Sluice's matcher (as the pipeline runs it: straight off the
//! record's bytes; its fallback, which parses only the fields the patterns
//! name into a document; and parsing the whole value, as the filter tester
//! does), the `quamina` crate on the same patterns
//! and records, and a naive matcher that parses the record and walks the
//! pattern JSON each time. Prints figures; asserts only that all three
//! agree on every record.

use std::time::Instant;

use serde_json::{json, Value};
use sluice_app::filter::{value_document, Pattern, Projection, ValueFilters};

/// The patterns as a mapping holds them (matched against {"value": ...}).
const PATTERNS: [&str; 5] = [
    r#"{"value": {"type": ["refund"]}}"#,
    r#"{"value": {"amount": [{"numeric": [">", 400]}]}}"#,
    r#"{"value": {"customer": [{"prefix": "c-77"}]}}"#,
    r#"{"value": {"currency": ["USD", "GBP"]}}"#,
    r#"{"value": {"shipping": {"country": ["DE", "FR"]}}}"#,
];

fn records(n: usize) -> Vec<Vec<u8>> {
    let kinds = ["order", "order", "order", "refund"];
    let currencies = ["EUR", "EUR", "USD", "GBP", "CHF"];
    let countries = ["NL", "BE", "DE", "FR", "IT", "ES"];
    (0..n)
        .map(|i| {
            let v = json!({
                "orderId": i, "type": kinds[i % 4], "customer": format!("c-{}", (i * 7919) % 1000),
                "amount": ((i * 37) % 900) as f64 + 0.5, "currency": currencies[i % 5],
                "createdAt": 1_795_600_000_000u64 + i as u64, "channel": "web", "coupon": null,
                "shipping": {"country": countries[i % 6], "city": "Somewhere", "zip": "12345", "express": i % 3 == 0},
                "items": [{"sku": format!("sku-{}", i % 97), "qty": 1 + i % 3, "price": 19.99}, {"sku": "sku-gift", "qty": 1, "price": 0.0}],
                "note": "leave at the door, ring twice",
            });
            serde_json::to_vec(&v).unwrap()
        })
        .collect()
}

/// The naive matcher: exact values, prefix and one numeric comparison.
fn naive(pattern: &Value, doc: &Value) -> bool {
    let (Value::Object(p), Value::Object(d)) = (pattern, doc) else { return false };
    p.iter().all(|(k, want)| {
        let got = d.get(k);
        match want {
            Value::Object(_) => got.is_some_and(|g| naive(want, g)),
            Value::Array(options) => options.iter().any(|o| match (o, got) {
                (Value::Object(op), Some(g)) => {
                    if let Some(Value::String(pre)) = op.get("prefix") {
                        g.as_str().is_some_and(|s| s.starts_with(pre.as_str()))
                    } else if let Some(Value::Array(n)) = op.get("numeric") {
                        let (Some(x), Some(bound)) = (g.as_f64(), n.get(1).and_then(Value::as_f64)) else {
                            return false;
                        };
                        match n.first().and_then(Value::as_str) {
                            Some(">") => x > bound,
                            Some("<") => x < bound,
                            _ => false,
                        }
                    } else {
                        false
                    }
                }
                (exact, Some(g)) => exact == g,
                _ => false,
            }),
            _ => false,
        }
    })
}

fn per_second(n: usize, f: impl Fn() -> usize) -> (f64, usize) {
    let t = Instant::now();
    let hits = f();
    (n as f64 / t.elapsed().as_secs_f64(), hits)
}

fn main() {
    let n = std::env::var("BENCH_RECORDS").ok().and_then(|v| v.parse().ok()).unwrap_or(400_000);
    let recs = records(n);
    let avg = recs.iter().map(Vec::len).sum::<usize>() / recs.len();
    println!("filters: {n} records of {avg} bytes on average, 5 patterns, one thread");

    let compiled: Vec<Pattern> = PATTERNS.iter().map(|p| Pattern::compile(p).unwrap()).collect();
    let projection = Projection::of(&compiled);
    let filters = ValueFilters::new(&compiled);
    let mut q = quamina::Quamina::new();
    for (i, p) in PATTERNS.iter().enumerate() {
        // Quamina matches the record itself: the pattern inside "value".
        let inner: Value = serde_json::from_str::<Value>(p).unwrap()["value"].clone();
        q.add_pattern(i, &inner.to_string()).unwrap();
    }
    let naive_patterns: Vec<Value> = PATTERNS.iter().map(|p| serde_json::from_str(p).unwrap()).collect();

    // The three agree on every record.
    for r in &recs {
        let doc = value_document(Some(r));
        let sluice = compiled.iter().any(|p| p.matches(&doc));
        assert_eq!(sluice, compiled.iter().any(|p| p.matches(&projection.value_document(Some(r)))), "projection");
        assert_eq!(sluice, filters.admits(Some(r)), "off the bytes");
        let quam = !q.matches_for_event(r).unwrap().is_empty();
        let naive_hit = naive_patterns.iter().any(|p| naive(p, &doc));
        assert_eq!((sluice, quam), (naive_hit, naive_hit), "disagreement on {}", String::from_utf8_lossy(r));
    }

    for round in 1..=3 {
        // As the pipeline runs it: straight off the bytes.
        let (sluice, hits) = per_second(n, || recs.iter().filter(|r| filters.admits(Some(r))).count());
        // The fallback: a document of only the fields the patterns name.
        let (projected, _) = per_second(n, || {
            recs.iter()
                .filter(|r| {
                    let doc = projection.value_document(Some(r));
                    compiled.iter().any(|p| p.matches(&doc))
                })
                .count()
        });
        let (whole, _) = per_second(n, || {
            recs.iter()
                .filter(|r| {
                    let doc = value_document(Some(r));
                    compiled.iter().any(|p| p.matches(&doc))
                })
                .count()
        });
        let (quam, _) = per_second(n, || recs.iter().filter(|r| !q.matches_for_event(r).unwrap().is_empty()).count());
        let (naive_rate, _) = per_second(n, || {
            recs.iter()
                .filter(|r| {
                    let doc: Value = json!({"value": serde_json::from_slice::<Value>(r).unwrap()});
                    naive_patterns.iter().any(|p| naive(p, &doc))
                })
                .count()
        });
        println!(
            "round {round}: Sluice {:.2} M records/s (projected document {:.2} M/s, whole document {:.2} M/s), quamina {:.2} M/s, naive {:.2} M/s; Sluice/quamina {:.2}, Sluice/naive {:.2} ({hits} of {n} match)",
            sluice / 1e6,
            projected / 1e6,
            whole / 1e6,
            quam / 1e6,
            naive_rate / 1e6,
            sluice / quam,
            sluice / naive_rate
        );
    }
}
