//! EventBridge event patterns, as Lambda's event filtering uses them: compile
//! (with AWS-style reasons for invalid patterns) and match. Lives in the app
//! crate so the form validates patterns with the same code the engine runs.
//!
//! Semantics (reference §3): fields AND, values in an array OR, filters OR.
//! Numbers compare by value. `anything-but` matches null, numbers and
//! booleans but never a missing field; `numeric` never matches a string;
//! `[null]` matches only null; `exists: true` fails on `[]` and on objects;
//! an array in the event matches when any element does.

use std::net::IpAddr;

use serde_json::{Map, Value};

/// Upper bound on the alternatives `$or` may expand to (AWS: 1000).
pub const MAX_OR_COMBINATIONS: usize = 1000;
/// EventBridge's numeric range.
const NUM_LIMIT: f64 = 5.0e9;

#[derive(Clone, Debug)]
pub struct Pattern {
    root: Obj,
}

#[derive(Clone, Debug, Default)]
struct Obj {
    fields: Vec<(String, Rule)>,
    /// Each `$or`: at least one of its alternatives must match.
    ors: Vec<Vec<Obj>>,
}

#[derive(Clone, Debug)]
enum Rule {
    Nested(Obj),
    Leaf(Vec<Matcher>),
}

#[derive(Clone, Debug)]
enum Matcher {
    Exact(Value),
    Prefix(String, bool),
    Suffix(String, bool),
    EqualsIgnoreCase(String),
    Numeric(Vec<(Op, f64)>),
    Exists(bool),
    Cidr(Cidr),
    Wildcard(String),
    AnythingBut(Box<Matcher>),
    /// `anything-but` with a list: none of these.
    AnyOf(Vec<Matcher>),
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Eq,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Clone, Debug)]
struct Cidr {
    net: IpAddr,
    bits: u8,
}

fn invalid(reason: impl std::fmt::Display) -> String {
    format!("Event pattern is not valid. Reason: {reason}")
}

impl Pattern {
    /// Compiles a pattern, or says why it is not valid, in AWS's words.
    pub fn compile(text: &str) -> Result<Pattern, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| invalid(format!("{e}")))?;
        let Value::Object(map) = v else { return Err(invalid("Filter is not an object")) };
        let root = compile_obj(&map, 0)?;
        let combos = combinations(&root);
        if combos > MAX_OR_COMBINATIONS {
            return Err(invalid(format!(
                "The pattern expands to {combos} combinations of $or alternatives; the limit is {MAX_OR_COMBINATIONS}"
            )));
        }
        Ok(Pattern { root })
    }

    /// Whether the event (a JSON document) matches.
    pub fn matches(&self, event: &Value) -> bool {
        match_obj(&self.root, Some(event))
    }

    /// The first field (a dotted path) that kept the event from matching,
    /// for the filter tester. None when it matches.
    pub fn first_mismatch(&self, event: &Value) -> Option<String> {
        first_mismatch(&self.root, Some(event), "")
    }
}

fn combinations(o: &Obj) -> usize {
    let mut n: usize = 1;
    for (_, r) in &o.fields {
        if let Rule::Nested(inner) = r {
            n = n.saturating_mul(combinations(inner));
        }
    }
    for alts in &o.ors {
        let sum = alts.iter().map(combinations).fold(0usize, |a, b| a.saturating_add(b));
        n = n.saturating_mul(sum);
    }
    n
}

/// A pattern key with dots names a nested field, as EventBridge flattens
/// paths: `{"a.b": [1]}` is `{"a": {"b": [1]}}`.
fn expand_dotted(map: &Map<String, Value>) -> Result<std::borrow::Cow<'_, Map<String, Value>>, String> {
    let dotted = |k: &String| k.contains('.') && k.split('.').all(|seg| !seg.is_empty());
    if !map.keys().any(dotted) {
        return Ok(std::borrow::Cow::Borrowed(map));
    }
    fn put(out: &mut Map<String, Value>, path: &[&str], v: &Value, whole: &str) -> Result<(), String> {
        let (first, rest) = path.split_first().expect("a path has a segment");
        if rest.is_empty() {
            return match (out.get_mut(*first), v) {
                (None, v) => {
                    out.insert(first.to_string(), v.clone());
                    Ok(())
                }
                (Some(Value::Object(have)), Value::Object(more)) => {
                    for (k, x) in more {
                        put(have, &[k.as_str()], x, whole)?;
                    }
                    Ok(())
                }
                _ => Err(invalid(format!("\"{whole}\" names a field another key of the pattern names too"))),
            };
        }
        match out.entry(first.to_string()).or_insert_with(|| Value::Object(Map::new())) {
            Value::Object(inner) => put(inner, rest, v, whole),
            _ => Err(invalid(format!("\"{whole}\" names a field another key of the pattern names too"))),
        }
    }
    let mut out = Map::new();
    for (k, v) in map {
        if dotted(k) {
            put(&mut out, &k.split('.').collect::<Vec<_>>(), v, k)?;
        } else {
            put(&mut out, &[k.as_str()], v, k)?;
        }
    }
    Ok(std::borrow::Cow::Owned(out))
}

fn compile_obj(map: &Map<String, Value>, depth: usize) -> Result<Obj, String> {
    if depth > 32 {
        return Err(invalid("the pattern is nested too deeply"));
    }
    let map = &*expand_dotted(map)?;
    let mut obj = Obj::default();
    for (k, v) in map {
        if k == "$or" {
            let Value::Array(alts) = v else { return Err(invalid("$or must be an array of objects")) };
            if alts.len() < 2 {
                return Err(invalid("$or must have at least 2 alternatives"));
            }
            let mut compiled = Vec::with_capacity(alts.len());
            for a in alts {
                let Value::Object(m) = a else { return Err(invalid("$or must be an array of objects")) };
                compiled.push(compile_obj(m, depth + 1)?);
            }
            obj.ors.push(compiled);
            continue;
        }
        let rule = match v {
            Value::Object(m) => Rule::Nested(compile_obj(m, depth + 1)?),
            Value::Array(items) => {
                if items.is_empty() {
                    return Err(invalid(format!("Empty arrays are not allowed (at \"{k}\")")));
                }
                Rule::Leaf(items.iter().map(|i| compile_matcher(k, i)).collect::<Result<_, _>>()?)
            }
            _ => return Err(invalid(format!("\"{k}\" must be an object or an array"))),
        };
        obj.fields.push((k.clone(), rule));
    }
    Ok(obj)
}

fn string_arg(op: &str, v: &Value) -> Result<String, String> {
    v.as_str().map(str::to_string).ok_or_else(|| invalid(format!("{op} match pattern must be a string")))
}

/// `"x"` or `{"equals-ignore-case": "x"}` (prefix and suffix allow both).
fn affix_arg(op: &str, v: &Value) -> Result<(String, bool), String> {
    match v {
        Value::String(s) => Ok((s.clone(), false)),
        Value::Object(m) if m.len() == 1 && m.contains_key("equals-ignore-case") => {
            Ok((string_arg(&format!("{op} equals-ignore-case"), &m["equals-ignore-case"])?, true))
        }
        _ => Err(invalid(format!("{op} match pattern must be a string or an equals-ignore-case object"))),
    }
}

fn compile_matcher(field: &str, v: &Value) -> Result<Matcher, String> {
    let m = match v {
        Value::Object(m) => m,
        Value::Array(_) => return Err(invalid(format!("\"{field}\": a match value cannot be an array"))),
        Value::Number(n) => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            if !(-NUM_LIMIT..=NUM_LIMIT).contains(&f) {
                return Err(invalid(format!("\"{field}\": numbers must be between -5.0e9 and 5.0e9")));
            }
            return Ok(Matcher::Exact(v.clone()));
        }
        other => return Ok(Matcher::Exact(other.clone())),
    };
    if m.len() != 1 {
        return Err(invalid(format!("\"{field}\": a match object must have exactly one key")));
    }
    let (op, arg) = m.iter().next().expect("one key");
    Ok(match op.as_str() {
        "prefix" => {
            let (s, ci) = affix_arg("prefix", arg)?;
            Matcher::Prefix(if ci { s.to_lowercase() } else { s }, ci)
        }
        "suffix" => {
            let (s, ci) = affix_arg("suffix", arg)?;
            Matcher::Suffix(if ci { s.to_lowercase() } else { s }, ci)
        }
        "equals-ignore-case" => Matcher::EqualsIgnoreCase(string_arg("equals-ignore-case", arg)?.to_lowercase()),
        "exists" => match arg {
            Value::Bool(b) => Matcher::Exists(*b),
            _ => return Err(invalid("exists match pattern must be either true or false.")),
        },
        "numeric" => Matcher::Numeric(compile_numeric(arg)?),
        "cidr" => Matcher::Cidr(compile_cidr(&string_arg("cidr", arg)?)?),
        "wildcard" => Matcher::Wildcard(compile_wildcard(&string_arg("wildcard", arg)?)?),
        "anything-but" => compile_anything_but(field, arg)?,
        other => return Err(invalid(format!("Unrecognized match type {other}"))),
    })
}

fn compile_anything_but(field: &str, arg: &Value) -> Result<Matcher, String> {
    let inner = match arg {
        Value::Array(items) => {
            if items.is_empty() {
                return Err(invalid("anything-but: Empty arrays are not allowed"));
            }
            let mut all = Vec::new();
            for i in items {
                match i {
                    Value::String(_) | Value::Number(_) => all.push(Matcher::Exact(i.clone())),
                    _ => return Err(invalid("Inside anything-but list, start|null|boolean is not supported.")),
                }
            }
            Matcher::AnyOf(all)
        }
        Value::String(_) | Value::Number(_) => Matcher::Exact(arg.clone()),
        Value::Object(m) if m.len() == 1 => {
            let (op, a) = m.iter().next().expect("one key");
            match op.as_str() {
                "prefix" => affix_list("prefix", a, |s| Matcher::Prefix(s, false))?,
                "suffix" => affix_list("suffix", a, |s| Matcher::Suffix(s, false))?,
                "equals-ignore-case" => match a {
                    Value::String(s) => Matcher::EqualsIgnoreCase(s.to_lowercase()),
                    Value::Array(list) if !list.is_empty() => Matcher::AnyOf(
                        list.iter()
                            .map(|x| {
                                string_arg("anything-but equals-ignore-case", x)
                                    .map(|s| Matcher::EqualsIgnoreCase(s.to_lowercase()))
                            })
                            .collect::<Result<_, _>>()?,
                    ),
                    _ => {
                        return Err(invalid(
                            "anything-but equals-ignore-case match pattern must be a string or a list of strings",
                        ))
                    }
                },
                "wildcard" => match a {
                    Value::String(s) => Matcher::Wildcard(compile_wildcard(s)?),
                    Value::Array(list) if !list.is_empty() => Matcher::AnyOf(
                        list.iter()
                            .map(|x| {
                                string_arg("anything-but wildcard", x)
                                    .and_then(|s| compile_wildcard(&s))
                                    .map(Matcher::Wildcard)
                            })
                            .collect::<Result<_, _>>()?,
                    ),
                    _ => {
                        return Err(invalid(
                            "anything-but wildcard match pattern must be a string or a list of strings",
                        ))
                    }
                },
                other => return Err(invalid(format!("Unsupported anything-but pattern: {other}"))),
            }
        }
        _ => {
            return Err(invalid(format!(
                "\"{field}\": Value of anything-but must be an array or single string/number value."
            )))
        }
    };
    Ok(Matcher::AnythingBut(Box::new(inner)))
}

/// `anything-but`'s prefix or suffix: one string or a list of them, none
/// empty (AWS refuses an empty one: it would exclude everything).
fn affix_list(op: &str, a: &Value, make: impl Fn(String) -> Matcher) -> Result<Matcher, String> {
    let one = |v: &Value| -> Result<Matcher, String> {
        let s = string_arg(&format!("anything-but {op}"), v)?;
        if s.is_empty() {
            return Err(invalid(format!("Null {op} not allowed")));
        }
        Ok(make(s))
    };
    match a {
        Value::Array(list) if !list.is_empty() => Ok(Matcher::AnyOf(list.iter().map(one).collect::<Result<_, _>>()?)),
        Value::Array(_) => Err(invalid(format!("anything-but {op}: Empty arrays are not allowed"))),
        v => one(v),
    }
}

fn compile_numeric(arg: &Value) -> Result<Vec<(Op, f64)>, String> {
    let Value::Array(items) = arg else { return Err(invalid("Value of numeric must be an array.")) };
    if items.is_empty() || items.len() % 2 != 0 || items.len() > 4 {
        return Err(invalid("numeric takes one comparison, or a range of two: [\">\", 0, \"<=\", 5]"));
    }
    let mut out = Vec::new();
    for pair in items.chunks(2) {
        let op = match pair[0].as_str() {
            Some("=") => Op::Eq,
            Some("<") => Op::Lt,
            Some("<=") => Op::Le,
            Some(">") => Op::Gt,
            Some(">=") => Op::Ge,
            Some(o) => return Err(invalid(format!("Unrecognized numeric range operator: {o}"))),
            None => return Err(invalid("Invalid member in numeric match: the operator must be a string")),
        };
        let n = pair[1]
            .as_f64()
            .ok_or_else(|| invalid(format!("Value of {} must be numeric", pair[0].as_str().unwrap_or(""))))?;
        if !(-NUM_LIMIT..=NUM_LIMIT).contains(&n) {
            return Err(invalid("numbers must be between -5.0e9 and 5.0e9"));
        }
        out.push((op, n));
    }
    if out.len() == 2 {
        let lower = matches!(out[0].0, Op::Gt | Op::Ge);
        let upper = matches!(out[1].0, Op::Lt | Op::Le);
        if !lower || !upper {
            return Err(invalid("Bad numeric range: give a lower bound (> or >=) then an upper bound (< or <=)"));
        }
        if out[0].1 >= out[1].1 {
            return Err(invalid("Bad numeric range: the lower bound must be below the upper bound"));
        }
    } else if matches!(out[0].0, Op::Eq) && items.len() > 2 {
        return Err(invalid("= cannot be part of a range"));
    }
    Ok(out)
}

fn compile_cidr(s: &str) -> Result<Cidr, String> {
    let (ip, bits) = s.split_once('/').ok_or_else(|| invalid(format!("Malformed CIDR, one '/' required: {s}")))?;
    let net: IpAddr = ip.parse().map_err(|_| invalid(format!("Nonstandard IP address: {ip}")))?;
    let max = if net.is_ipv4() { 32 } else { 128 };
    let bits: u8 = bits
        .parse()
        .ok()
        .filter(|b| *b <= max)
        .ok_or_else(|| invalid(format!("Malformed CIDR, mask bits must be a number from 0 to {max}: {s}")))?;
    Ok(Cidr { net, bits })
}

/// Checks escapes (`\*`, `\\`) and refuses consecutive `*`, which AWS
/// rejects (they only add matching cost).
fn compile_wildcard(s: &str) -> Result<String, String> {
    let mut chars = s.chars().peekable();
    let mut prev_star = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('*') | Some('\\') => prev_star = false,
                _ => {
                    return Err(invalid(format!(
                        "Invalid escape in wildcard pattern {s:?}: only \\* and \\\\ are allowed"
                    )))
                }
            },
            '*' if prev_star => return Err(invalid(format!("Consecutive wildcard characters in {s:?}"))),
            '*' => prev_star = true,
            _ => prev_star = false,
        }
    }
    if wildcard_stars(s) > MAX_WILDCARD_STARS {
        return Err(invalid(
            "Rule is too complex - try using fewer wildcard characters or fewer repeating character sequences after a wildcard character",
        ));
    }
    Ok(s.to_string())
}

/// More wildcard characters than this in one pattern is refused as too
/// complex. AWS measures the complexity of the whole rule's matching
/// machine; this is the common approximation (its exact measure is not
/// published), so a pattern AWS takes may in rare cases be refused here.
const MAX_WILDCARD_STARS: usize = 5;

/// The unescaped `*` of a wildcard pattern.
fn wildcard_stars(s: &str) -> usize {
    let (mut n, mut escaped) = (0, false);
    for c in s.chars() {
        match (escaped, c) {
            (false, '\\') => escaped = true,
            (false, '*') => n += 1,
            _ => escaped = false,
        }
    }
    n
}

fn wildcard_match(pattern: &str, text: &str) -> bool {
    // Tokens: literal chars (with escapes resolved) and stars.
    let mut toks: Vec<Option<char>> = Vec::new();
    let mut it = pattern.chars();
    while let Some(c) = it.next() {
        match c {
            '\\' => toks.push(it.next()),
            '*' => toks.push(None),
            c => toks.push(Some(c)),
        }
    }
    let t: Vec<char> = text.chars().collect();
    // Greedy matching with backtracking to the last star: linear in practice.
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match toks.get(pi) {
            Some(Some(c)) if *c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            Some(None) => {
                star = Some((pi, ti));
                pi += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    toks[pi..].iter().all(Option::is_none)
}

fn num_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// One matcher against one scalar value of the event.
fn match_scalar(m: &Matcher, v: &Value) -> bool {
    match m {
        Matcher::Exact(p) => num_eq(p, v),
        Matcher::Numeric(conds) => v.is_number() && v.as_f64().is_some_and(|x| match_num(conds, x)),
        Matcher::Exists(b) => *b,
        Matcher::AnyOf(all) => all.iter().any(|m| match_scalar(m, v)),
        Matcher::AnythingBut(inner) => !match_scalar(inner, v),
        m => v.as_str().is_some_and(|s| match_str(m, s)),
    }
}

fn match_num(conds: &[(Op, f64)], x: f64) -> bool {
    conds.iter().all(|(op, n)| match op {
        Op::Eq => x == *n,
        Op::Lt => x < *n,
        Op::Le => x <= *n,
        Op::Gt => x > *n,
        Op::Ge => x >= *n,
    })
}

/// The matchers that only strings can satisfy.
fn match_str(m: &Matcher, s: &str) -> bool {
    match m {
        Matcher::Prefix(p, ci) => {
            if *ci {
                s.to_lowercase().starts_with(p)
            } else {
                s.starts_with(p.as_str())
            }
        }
        Matcher::Suffix(p, ci) => {
            if *ci {
                s.to_lowercase().ends_with(p)
            } else {
                s.ends_with(p.as_str())
            }
        }
        Matcher::EqualsIgnoreCase(p) => s.to_lowercase() == *p,
        Matcher::Cidr(c) => s.parse::<IpAddr>().is_ok_and(|ip| in_cidr(c, ip)),
        Matcher::Wildcard(p) => wildcard_match(p, s),
        _ => false,
    }
}

fn in_cidr(c: &Cidr, ip: IpAddr) -> bool {
    fn bits_of(ip: IpAddr) -> u128 {
        match ip {
            IpAddr::V4(a) => u32::from(a) as u128,
            IpAddr::V6(a) => u128::from(a),
        }
    }
    if c.net.is_ipv4() != ip.is_ipv4() {
        return false;
    }
    let width = if ip.is_ipv4() { 32 } else { 128 };
    if c.bits == 0 {
        return true;
    }
    let shift = width - c.bits as u32;
    (bits_of(ip) >> shift) == (bits_of(c.net) >> shift)
}

/// A leaf rule against the event's value at that field (None: absent).
fn match_leaf(ms: &[Matcher], v: Option<&Value>) -> bool {
    ms.iter().any(|m| match (m, v) {
        (Matcher::Exists(want), v) => {
            let exists = match v {
                None | Some(Value::Object(_)) => false,
                Some(Value::Array(a)) => a.iter().any(|x| !x.is_object() && !x.is_array()),
                Some(_) => true,
            };
            exists == *want
        }
        (_, None) | (_, Some(Value::Object(_))) => false,
        (m, Some(Value::Array(a))) => a.iter().any(|x| !x.is_object() && !x.is_array() && match_scalar(m, x)),
        (m, Some(x)) => match_scalar(m, x),
    })
}

fn match_obj(o: &Obj, v: Option<&Value>) -> bool {
    // An array of objects matches when any element does.
    if let Some(Value::Array(items)) = v {
        return items.iter().filter(|i| i.is_object()).any(|i| match_obj(o, Some(i)));
    }
    let field = |k: &str| lookup(v, k);
    o.fields.iter().all(|(k, r)| match r {
        Rule::Nested(inner) => match_obj(inner, field(k).as_deref()),
        Rule::Leaf(ms) => match_leaf(ms, field(k).as_deref()),
    }) && o.ors.iter().all(|alts| alts.iter().any(|a| match_obj(a, v)))
}

/// The event's field `k`; when absent, what keys with dots under it hold
/// (`{"a.b": 1}` holds `a` → `b`, as EventBridge flattens paths).
fn lookup<'a>(v: Option<&'a Value>, k: &str) -> Option<std::borrow::Cow<'a, Value>> {
    let m = v?.as_object()?;
    if let Some(x) = m.get(k) {
        return Some(std::borrow::Cow::Borrowed(x));
    }
    let mut under = Map::new();
    for (key, x) in m {
        if let Some(rest) = key.strip_prefix(k).and_then(|r| r.strip_prefix('.')) {
            under.insert(rest.to_string(), x.clone());
        }
    }
    (!under.is_empty()).then_some(std::borrow::Cow::Owned(Value::Object(under)))
}

fn first_mismatch(o: &Obj, v: Option<&Value>, path: &str) -> Option<String> {
    if match_obj(o, v) {
        return None;
    }
    let field = |k: &str| lookup(v, k);
    for (k, r) in &o.fields {
        let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
        match r {
            Rule::Nested(inner) if !match_obj(inner, field(k).as_deref()) => {
                return Some(first_mismatch(inner, field(k).as_deref(), &p).unwrap_or(p));
            }
            Rule::Leaf(ms) if !match_leaf(ms, field(k).as_deref()) => return Some(p),
            _ => {}
        }
    }
    Some(if path.is_empty() { "$or".into() } else { format!("{path}.$or") })
}

/// Which filter of a list decided, for the tester: the index of the first
/// that matches, or (none matched) the field that failed the first filter.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Verdict {
    #[serde(rename = "Match")]
    pub matched: bool,
    /// Index of the first filter that matched.
    pub filter: Option<usize>,
    /// When nothing matched: the field that failed the first filter.
    pub field: Option<String>,
}

pub fn judge(filters: &[Pattern], doc: &Value) -> Verdict {
    if filters.is_empty() {
        return Verdict { matched: true, filter: None, field: None };
    }
    match filters.iter().position(|f| f.matches(doc)) {
        Some(i) => Verdict { matched: true, filter: Some(i), field: None },
        None => Verdict { matched: false, filter: None, field: filters[0].first_mismatch(doc) },
    }
}

/// What bytes become for matching: JSON when they parse, a string when
/// they are UTF-8 text, absent (None) when neither (only `exists: false`
/// matches them then).
fn decode(bytes: Option<&[u8]>) -> Option<Value> {
    let s = std::str::from_utf8(bytes?).ok()?;
    Some(serde_json::from_str::<Value>(s).unwrap_or_else(|_| Value::String(s.to_string())))
}

/// The document AWS matches: `{"value": ...}`.
pub fn value_document(bytes: Option<&[u8]>) -> Value {
    let mut doc = Map::new();
    if let Some(v) = decode(bytes) {
        doc.insert("value".into(), v);
    }
    Value::Object(doc)
}

/// The fields a set of patterns can look at. The pipeline parses a record
/// through it: fields no pattern names are skipped (checked as JSON, not
/// built), which is most of a record's bytes. Matching the result is the
/// same as matching the whole document.
#[derive(Clone, Debug, Default)]
pub struct Projection {
    /// Keep this value whole (a leaf rule compares it).
    all: bool,
    children: Vec<(String, Projection)>,
}

impl Projection {
    pub fn of(patterns: &[Pattern]) -> Projection {
        let mut p = Projection::default();
        for pat in patterns {
            p.add(&pat.root);
        }
        p
    }

    fn add(&mut self, o: &Obj) {
        for (k, r) in &o.fields {
            let c = self.child(k);
            match r {
                Rule::Nested(inner) => c.add(inner),
                Rule::Leaf(_) => c.all = true,
            }
        }
        for alts in &o.ors {
            for a in alts {
                self.add(a);
            }
        }
    }

    fn child(&mut self, k: &str) -> &mut Projection {
        let i = match self.children.iter().position(|(n, _)| n == k) {
            Some(i) => i,
            None => {
                self.children.push((k.to_string(), Projection::default()));
                self.children.len() - 1
            }
        };
        &mut self.children[i].1
    }

    fn get(&self, k: &str) -> Option<&Projection> {
        self.children.iter().find(|(n, _)| n == k).map(|(_, p)| p).or_else(|| self.dotted(k))
    }

    /// A record key with dots (`"a.b"`) names the nested field `a` → `b`,
    /// as EventBridge flattens paths.
    fn dotted(&self, k: &str) -> Option<&Projection> {
        if !k.contains('.') {
            return None;
        }
        let mut p = self;
        for seg in k.split('.') {
            p = p.children.iter().find(|(n, _)| n == seg).map(|(_, c)| c)?;
        }
        Some(p)
    }

    /// `value_document(bytes)` with only what the patterns can look at.
    pub fn value_document(&self, bytes: Option<&[u8]>) -> Value {
        let mut doc = Map::new();
        // No pattern looks at the value, or there is none: nothing to parse.
        let (Some(vp), Some(bytes)) = (self.get("value"), bytes) else { return Value::Object(doc) };
        let Ok(s) = std::str::from_utf8(bytes) else { return Value::Object(doc) };
        let parsed = if vp.all {
            serde_json::from_str::<Value>(s).ok()
        } else if s.trim_start_matches([' ', '\t', '\n', '\r']).starts_with('{') {
            Scan { b: s.as_bytes(), i: 0, depth: 0 }.document(vp)
        } else {
            let mut de = serde_json::Deserializer::from_str(s);
            serde::de::DeserializeSeed::deserialize(vp, &mut de).and_then(|v| de.end().map(|_| v)).ok()
        };
        doc.insert("value".into(), parsed.unwrap_or_else(|| Value::String(s.to_string())));
        Value::Object(doc)
    }

    /// The child named by a raw (still escaped) JSON key.
    fn get_raw(&self, raw: &[u8]) -> Option<&Projection> {
        if !raw.contains(&b'\\') {
            let direct = self.children.iter().find(|(n, _)| n.as_bytes() == raw).map(|(_, p)| p);
            return direct.or_else(|| self.dotted(dotted_key(raw)?));
        }
        self.get(&unescape(raw).ok()?)
    }
}

/// A raw key with a dot, as text (the rest are not looked at again).
fn dotted_key(raw: &[u8]) -> Option<&str> {
    if raw.contains(&b'.') {
        std::str::from_utf8(raw).ok()
    } else {
        None
    }
}

/// serde_json's nesting limit: a document nested deeper does not parse.
const MAX_DEPTH: u32 = 127;

/// Flags (the high bit of a byte) where eight bytes hold a `"`, a `\\` or a
/// control character; the lowest flag is always right (borrows can only
/// set false flags above a true one), which is all a scan needs.
fn string_stops(w: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero = |x: u64| x.wrapping_sub(ONES) & !x;
    let quote = w ^ (ONES * b'"' as u64);
    let backslash = w ^ (ONES * b'\\' as u64);
    let control = w.wrapping_sub(ONES * 0x20) & !w;
    (zero(quote) | zero(backslash) | control) & HIGH
}

/// The bytes that end a run of plain string characters: quote, backslash
/// and the control characters JSON forbids inside strings.
const STRING_STOP: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 0x20 {
        t[c] = true;
        c += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// One pass over an object's bytes that checks all of it exactly as
/// `serde_json::from_str::<Value>` would (so a record is JSON, or a string,
/// the same either way) and builds values only for the fields a projection
/// names. Skipping is a plain byte loop, no tokens and no allocations.
struct Scan<'a> {
    b: &'a [u8],
    i: usize,
    depth: u32,
}

type Bad = ();

impl<'a> Scan<'a> {
    /// The whole input: one object, then only whitespace.
    fn document(mut self, p: &Projection) -> Option<Value> {
        self.ws();
        let v = self.object(p).ok()?;
        self.ws();
        (self.i == self.b.len()).then_some(v)
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    fn peek(&self) -> Result<u8, Bad> {
        self.b.get(self.i).copied().ok_or(())
    }

    fn eat(&mut self, c: u8) -> Result<(), Bad> {
        if self.peek()? != c {
            return Err(());
        }
        self.i += 1;
        Ok(())
    }

    fn enter(&mut self) -> Result<(), Bad> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(());
        }
        self.i += 1;
        self.ws();
        Ok(())
    }

    /// At `{`: the object with the projection's fields only.
    fn object(&mut self, p: &Projection) -> Result<Value, Bad> {
        if self.peek()? != b'{' {
            return Err(());
        }
        let mut out = Map::new();
        self.members(|s, key, _| {
            let from = s.i;
            match p.get_raw(key) {
                None => s.value()?,
                Some(c) if !c.all && s.peek()? == b'{' => {
                    let v = s.object(c)?;
                    out.insert(unescape(key)?, v);
                }
                Some(c) => {
                    s.value()?;
                    // Checked above; small, so parsed again as a value.
                    let mut de = serde_json::Deserializer::from_slice(&s.b[from..s.i]);
                    let v = serde::de::DeserializeSeed::deserialize(c, &mut de).map_err(|_| ())?;
                    out.insert(unescape(key)?, v);
                }
            }
            Ok(())
        })?;
        Ok(Value::Object(out))
    }

    /// At `{`: each member's raw key (and whether it has escapes) to
    /// `each`, which moves past the member's value.
    fn members(&mut self, mut each: impl FnMut(&mut Self, &'a [u8], bool) -> Result<(), Bad>) -> Result<(), Bad> {
        self.enter()?;
        if self.peek()? != b'}' {
            loop {
                self.ws();
                let start = self.i + 1;
                let escaped = self.string()?;
                let b = self.b;
                let key = &b[start..self.i - 1];
                self.ws();
                self.eat(b':')?;
                self.ws();
                each(self, key, escaped)?;
                self.ws();
                if self.peek()? != b',' {
                    break;
                }
                self.i += 1;
            }
        }
        self.eat(b'}')?;
        self.depth -= 1;
        Ok(())
    }

    /// At `[`: `each` moves past one element at a time.
    fn elements(&mut self, mut each: impl FnMut(&mut Self) -> Result<(), Bad>) -> Result<(), Bad> {
        self.enter()?;
        if self.peek()? != b']' {
            loop {
                each(self)?;
                self.ws();
                if self.peek()? != b',' {
                    break;
                }
                self.i += 1;
                self.ws();
            }
        }
        self.eat(b']')?;
        self.depth -= 1;
        Ok(())
    }

    /// Checks one value and moves past it.
    fn value(&mut self) -> Result<(), Bad> {
        match self.peek()? {
            b'{' => self.members(|s, _, _| s.value())?,
            b'[' => self.elements(Self::value)?,
            b'"' => {
                self.string()?;
            }
            b't' => self.word(b"true")?,
            b'f' => self.word(b"false")?,
            b'n' => self.word(b"null")?,
            b'-' | b'0'..=b'9' => self.number()?,
            _ => return Err(()),
        }
        Ok(())
    }

    fn word(&mut self, w: &[u8]) -> Result<(), Bad> {
        if !self.b[self.i..].starts_with(w) {
            return Err(());
        }
        self.i += w.len();
        Ok(())
    }

    /// At `"`: past the closing quote; whether the string has escapes.
    /// Control characters, unknown escapes and lone surrogates are errors,
    /// as in serde_json.
    fn string(&mut self) -> Result<bool, Bad> {
        self.eat(b'"')?;
        let mut escaped = false;
        loop {
            // Plain characters in one tight run (most of a record's bytes):
            // eight at a time, then one at a time up to the stop.
            while let Some(chunk) = self.b.get(self.i..self.i + 8) {
                let stops = string_stops(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
                if stops != 0 {
                    self.i += (stops.trailing_zeros() / 8) as usize;
                    break;
                }
                self.i += 8;
            }
            while self.b.get(self.i).is_some_and(|c| !STRING_STOP[*c as usize]) {
                self.i += 1;
            }
            let c = self.peek()?;
            self.i += 1;
            match c {
                b'"' => return Ok(escaped),
                b'\\' => {
                    escaped = true;
                    match self.peek()? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 1,
                        b'u' => {
                            self.i += 1;
                            match self.hex4()? {
                                0xDC00..=0xDFFF => return Err(()),
                                0xD800..=0xDBFF => {
                                    self.eat(b'\\')?;
                                    self.eat(b'u')?;
                                    if !(0xDC00..=0xDFFF).contains(&self.hex4()?) {
                                        return Err(());
                                    }
                                }
                                _ => {}
                            }
                        }
                        _ => return Err(()),
                    }
                }
                _ => return Err(()),
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, Bad> {
        let h = self.b.get(self.i..self.i + 4).ok_or(())?;
        let s = std::str::from_utf8(h).map_err(|_| ())?;
        if !s.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(());
        }
        self.i += 4;
        u32::from_str_radix(s, 16).map_err(|_| ())
    }

    /// JSON's number grammar; a number too big for an f64 does not parse.
    fn number(&mut self) -> Result<(), Bad> {
        let start = self.i;
        let digits = |s: &mut Self| {
            let from = s.i;
            while s.b.get(s.i).is_some_and(u8::is_ascii_digit) {
                s.i += 1;
            }
            s.i - from
        };
        if self.peek()? == b'-' {
            self.i += 1;
        }
        let int = match self.peek()? {
            b'0' => {
                self.i += 1;
                1
            }
            b'1'..=b'9' => digits(self),
            _ => return Err(()),
        };
        // Without an exponent a number is finite unless its integer part
        // alone is out of f64's range (1.8e308).
        let mut plain = int <= 300;
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            if digits(self) == 0 {
                return Err(());
            }
        }
        if let Some(b'e' | b'E') = self.b.get(self.i) {
            self.i += 1;
            plain = false;
            if let Some(b'+' | b'-') = self.b.get(self.i) {
                self.i += 1;
            }
            if digits(self) == 0 {
                return Err(());
            }
        }
        if !plain {
            let text = std::str::from_utf8(&self.b[start..self.i]).map_err(|_| ())?;
            if !text.parse::<f64>().map_err(|_| ())?.is_finite() {
                return Err(());
            }
        }
        Ok(())
    }
}

fn unescape(raw: &[u8]) -> Result<String, Bad> {
    if !raw.contains(&b'\\') {
        return String::from_utf8(raw.to_vec()).map_err(|_| ());
    }
    let mut quoted = Vec::with_capacity(raw.len() + 2);
    quoted.push(b'"');
    quoted.extend_from_slice(raw);
    quoted.push(b'"');
    serde_json::from_slice(&quoted).map_err(|_| ())
}

impl<'de> serde::de::DeserializeSeed<'de> for &Projection {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        if self.all {
            return serde::Deserialize::deserialize(d);
        }
        d.deserialize_any(ProjectingVisitor(self))
    }
}

struct ProjectingVisitor<'a>(&'a Projection);

impl<'de> serde::de::Visitor<'de> for ProjectingVisitor<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map(Value::Number).unwrap_or(Value::Null))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        // Patterns apply to each element of an array.
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(self.0)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(k) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match self.0.get(&k) {
                Some(child) => {
                    out.insert(k.into_owned(), map.next_value_seed(child)?);
                }
                None => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(Value::Object(out))
    }
}

/// A mapping's filters as the pipeline runs them (AWS's default: patterns
/// see `{"value": ...}`). A record whose value is a JSON object is matched
/// straight off its bytes: one pass checks that it is JSON exactly as
/// serde_json would, and notes where the scalars of the fields the patterns
/// name are; the patterns then run on those notes. No `Value` is built.
/// Everything else (values that are not objects, patterns on the value as a
/// whole, arrays of objects under a nested rule) takes `Projection`'s path,
/// which gives the same answers more slowly.
#[derive(Clone, Debug)]
pub struct ValueFilters {
    patterns: Vec<Pattern>,
    projection: Projection,
    nodes: Vec<Node>,
    /// The document's `value` field, when a pattern names it.
    value: Option<usize>,
    slots: usize,
    compiled: Vec<FastObj>,
}

/// A field path some pattern names; node 0 is the document.
#[derive(Clone, Debug, Default)]
struct Node {
    children: Vec<(String, usize)>,
    /// A leaf rule compares this field's scalars.
    slot: Option<usize>,
}

/// `Obj` with its fields resolved to nodes and slots.
#[derive(Clone, Debug)]
struct FastObj {
    fields: Vec<FastRule>,
    ors: Vec<Vec<FastObj>>,
}

#[derive(Clone, Debug)]
enum FastRule {
    Nested(usize, FastObj),
    Leaf(usize, Vec<Matcher>),
}

/// What a nested rule sees at its node.
const ABSENT: u8 = 0; // missing, or a scalar: its fields are all missing
const OBJECT: u8 = 1;
const ARRAY: u8 = 2; // an array without objects: a nested rule never matches it

/// Where one scalar of the record is (a string without its quotes).
#[derive(Clone, Copy, Debug)]
struct Raw {
    kind: Kind,
    start: usize,
    end: usize,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Null,
    True,
    False,
    Num,
    Str,
    EscapedStr,
}

/// One record's notes, reused between records (per thread).
#[derive(Default)]
struct Notes {
    state: Vec<u8>,
    /// Per slot: the range of `scalars` found there (empty: none, which
    /// is also what an object or a missing field amounts to for a leaf).
    slots: Vec<(usize, usize)>,
    scalars: Vec<Raw>,
}

thread_local! {
    static NOTES: std::cell::RefCell<Notes> = std::cell::RefCell::new(Notes::default());
}

impl ValueFilters {
    pub fn new(patterns: &[Pattern]) -> ValueFilters {
        let mut f = ValueFilters {
            patterns: patterns.to_vec(),
            projection: Projection::of(patterns),
            nodes: vec![Node::default()],
            value: None,
            slots: 0,
            compiled: vec![],
        };
        f.compiled = patterns.iter().map(|p| f.resolve(&p.root, 0)).collect();
        f.value = f.nodes[0].children.iter().find(|(k, _)| k == "value").map(|(_, n)| *n);
        f
    }

    fn resolve(&mut self, o: &Obj, at: usize) -> FastObj {
        let mut fields = Vec::with_capacity(o.fields.len());
        for (k, r) in &o.fields {
            let n = match self.nodes[at].children.iter().find(|(name, _)| name == k) {
                Some((_, n)) => *n,
                None => {
                    self.nodes.push(Node::default());
                    let n = self.nodes.len() - 1;
                    self.nodes[at].children.push((k.clone(), n));
                    n
                }
            };
            fields.push(match r {
                Rule::Nested(inner) => FastRule::Nested(n, self.resolve(inner, n)),
                Rule::Leaf(ms) => {
                    let slot = *self.nodes[n].slot.get_or_insert(self.slots);
                    if slot == self.slots {
                        self.slots += 1;
                    }
                    FastRule::Leaf(slot, ms.clone())
                }
            });
        }
        let ors = o.ors.iter().map(|alts| alts.iter().map(|a| self.resolve(a, at)).collect()).collect();
        FastObj { fields, ors }
    }

    /// Whether any pattern matches the record with this value (no
    /// patterns: every record).
    pub fn admits(&self, value: Option<&[u8]>) -> bool {
        if self.patterns.is_empty() {
            return true;
        }
        NOTES.with(|cell| {
            let notes = &mut *cell.borrow_mut();
            match self.note(value, notes) {
                Some(bytes) => self.compiled.iter().any(|p| eval(p, OBJECT, notes, bytes)),
                None => {
                    let doc = self.projection.value_document(value);
                    self.patterns.iter().any(|p| p.matches(&doc))
                }
            }
        })
    }

    /// Fills the notes for this record; None: take the tree path.
    fn note<'a>(&self, value: Option<&'a [u8]>, notes: &mut Notes) -> Option<&'a [u8]> {
        notes.state.clear();
        notes.state.resize(self.nodes.len(), ABSENT);
        notes.slots.clear();
        notes.slots.resize(self.slots, (0, 0));
        notes.scalars.clear();
        let Some(v) = self.value else { return Some(&[][..]) };
        if self.nodes[v].slot.is_some() {
            return None;
        }
        // No value, or one that is not UTF-8: `value` is missing.
        let Some(bytes) = value.filter(|b| std::str::from_utf8(b).is_ok()) else { return Some(&[][..]) };
        let mut s = Scan { b: bytes, i: 0, depth: 0 };
        s.ws();
        if s.peek() != Ok(b'{') {
            return None;
        }
        notes.state[v] = OBJECT;
        s.note_object(self, v, notes).ok()?;
        s.ws();
        (s.i == bytes.len()).then_some(bytes)
    }

    /// The child of `node` named by a raw (still escaped) JSON key.
    fn child(&self, node: usize, raw: &[u8], escaped: bool) -> Option<usize> {
        let children = &self.nodes[node].children;
        if children.is_empty() {
            return None;
        }
        if !escaped {
            let direct = children.iter().find(|(n, _)| n.as_bytes() == raw).map(|(_, c)| *c);
            // Most keys are nobody's: only one with a dot is looked at again.
            return direct.or_else(|| self.dotted(node, dotted_key(raw)?));
        }
        let key = unescape(raw).ok()?;
        children.iter().find(|(n, _)| *n == key).map(|(_, c)| *c).or_else(|| self.dotted(node, &key))
    }

    /// A record key with dots names a nested field (see `Projection::dotted`).
    fn dotted(&self, node: usize, key: &str) -> Option<usize> {
        if !key.contains('.') {
            return None;
        }
        let mut n = node;
        for seg in key.split('.') {
            n = self.nodes[n].children.iter().find(|(name, _)| name == seg).map(|(_, c)| *c)?;
        }
        Some(n)
    }

    /// Forgets what was noted under `node` (a repeated key: the last wins).
    fn clear(&self, node: usize, notes: &mut Notes) {
        notes.state[node] = ABSENT;
        if let Some(s) = self.nodes[node].slot {
            notes.slots[s] = (0, 0);
        }
        for (_, c) in &self.nodes[node].children {
            self.clear(*c, notes);
        }
    }
}

fn eval(o: &FastObj, state: u8, notes: &Notes, b: &[u8]) -> bool {
    if state == ARRAY {
        return false;
    }
    o.fields.iter().all(|r| match r {
        FastRule::Nested(n, inner) => eval(inner, notes.state[*n], notes, b),
        FastRule::Leaf(s, ms) => {
            let (lo, hi) = notes.slots[*s];
            let vals = &notes.scalars[lo..hi];
            ms.iter().any(|m| match m {
                Matcher::Exists(want) => vals.is_empty() != *want,
                m => vals.iter().any(|v| match_raw(m, v, b)),
            })
        }
    }) && o.ors.iter().all(|alts| alts.iter().any(|a| eval(a, state, notes, b)))
}

/// `match_scalar` on a scalar still in the record's bytes.
fn match_raw(m: &Matcher, v: &Raw, b: &[u8]) -> bool {
    match m {
        Matcher::Exact(p) => match (p, v.kind) {
            (Value::Null, Kind::Null) => true,
            (Value::Bool(x), Kind::True) => *x,
            (Value::Bool(x), Kind::False) => !*x,
            (Value::Number(x), Kind::Num) => x.as_f64() == Some(parse_number(&b[v.start..v.end])),
            (Value::String(s), Kind::Str) => &b[v.start..v.end] == s.as_bytes(),
            (Value::String(s), Kind::EscapedStr) => unescape(&b[v.start..v.end]).is_ok_and(|t| t == *s),
            _ => false,
        },
        Matcher::Numeric(conds) => v.kind == Kind::Num && match_num(conds, parse_number(&b[v.start..v.end])),
        Matcher::Exists(want) => *want,
        Matcher::AnyOf(all) => all.iter().any(|m| match_raw(m, v, b)),
        Matcher::AnythingBut(inner) => !match_raw(inner, v, b),
        m => match v.kind {
            Kind::Str => std::str::from_utf8(&b[v.start..v.end]).is_ok_and(|s| match_str(m, s)),
            Kind::EscapedStr => unescape(&b[v.start..v.end]).is_ok_and(|s| match_str(m, &s)),
            _ => false,
        },
    }
}

/// A JSON number (already checked) as serde_json makes it an f64. Short
/// numbers take the same exact steps serde_json takes (the digits as an
/// integer below 2^53, then one multiplication or division by an exact
/// power of ten); anything longer is handed to serde_json itself.
fn parse_number(t: &[u8]) -> f64 {
    const POW10: [f64; 23] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19,
        1e20, 1e21, 1e22,
    ];
    let slow = || serde_json::from_slice::<f64>(t).unwrap_or(f64::NAN);
    let (neg, digits) = match t.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, t),
    };
    let mut m: u64 = 0;
    let mut i = 0;
    while i < digits.len() && digits[i].is_ascii_digit() {
        if i >= 18 {
            return slow();
        }
        m = m * 10 + (digits[i] - b'0') as u64;
        i += 1;
    }
    if i == digits.len() {
        // An integer: serde_json keeps it as one and converts with `as`.
        let f = m as f64;
        return if neg { -f } else { f };
    }
    let mut exp: i32 = 0;
    if digits[i] == b'.' {
        i += 1;
        while i < digits.len() && digits[i].is_ascii_digit() {
            if m >= 1 << 49 {
                return slow();
            }
            m = m * 10 + (digits[i] - b'0') as u64;
            exp -= 1;
            i += 1;
        }
    }
    if i < digits.len() {
        return slow(); // an exponent
    }
    if m >= 1 << 53 || exp < -22 {
        return slow();
    }
    let f = (m as f64) / POW10[(-exp) as usize];
    if neg {
        -f
    } else {
        f
    }
}

impl Scan<'_> {
    /// At `{` of an object at `node`: checks it and notes its named fields.
    fn note_object(&mut self, f: &ValueFilters, node: usize, notes: &mut Notes) -> Result<(), Bad> {
        self.members(|s, key, escaped| match f.child(node, key, escaped) {
            None => s.value(),
            Some(c) => s.note_value(f, c, notes),
        })
    }

    /// The value of a named field.
    fn note_value(&mut self, f: &ValueFilters, node: usize, notes: &mut Notes) -> Result<(), Bad> {
        f.clear(node, notes);
        let nested = !f.nodes[node].children.is_empty();
        let slot = f.nodes[node].slot;
        match self.peek()? {
            b'{' if nested => {
                notes.state[node] = OBJECT;
                self.note_object(f, node, notes)?;
            }
            b'{' => self.value()?,
            b'[' => {
                if nested {
                    notes.state[node] = ARRAY;
                }
                let from = notes.scalars.len();
                self.elements(|s| {
                    match s.peek()? {
                        // Each element is matched as an object of its own:
                        // the tree path knows how.
                        b'{' if nested => return Err(()),
                        b'{' | b'[' => s.value()?,
                        _ => {
                            let r = s.scalar()?;
                            if slot.is_some() {
                                notes.scalars.push(r);
                            }
                        }
                    }
                    Ok(())
                })?;
                if let Some(s) = slot {
                    notes.slots[s] = (from, notes.scalars.len());
                }
            }
            _ => {
                let r = self.scalar()?;
                if let Some(s) = slot {
                    notes.slots[s] = (notes.scalars.len(), notes.scalars.len() + 1);
                    notes.scalars.push(r);
                }
            }
        }
        Ok(())
    }

    /// At a string, number, boolean or null: checks it and says where it is.
    fn scalar(&mut self) -> Result<Raw, Bad> {
        let start = self.i;
        let kind = match self.peek()? {
            b'"' => {
                let escaped = self.string()?;
                let kind = if escaped { Kind::EscapedStr } else { Kind::Str };
                return Ok(Raw { kind, start: start + 1, end: self.i - 1 });
            }
            b't' => {
                self.word(b"true")?;
                Kind::True
            }
            b'f' => {
                self.word(b"false")?;
                Kind::False
            }
            b'n' => {
                self.word(b"null")?;
                Kind::Null
            }
            b'-' | b'0'..=b'9' => {
                self.number()?;
                Kind::Num
            }
            _ => return Err(()),
        };
        Ok(Raw { kind, start, end: self.i })
    }
}

/// The record's metadata, for mappings that opt in: what a pattern can
/// match besides `value`. Key and header values are decoded like the value.
pub struct RecordMeta<'a> {
    pub key: Option<&'a [u8]>,
    pub headers: Vec<(&'a str, Option<&'a [u8]>)>,
    pub topic: &'a str,
    pub partition: i32,
    pub timestamp_ms: i64,
}

/// `{"value", "key", "headers": {name: value}, "topic", "partition", "timestamp"}`.
pub fn record_document(value: Option<&[u8]>, meta: &RecordMeta<'_>) -> Value {
    let mut doc = match value_document(value) {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    if let Some(k) = decode(meta.key) {
        doc.insert("key".into(), k);
    }
    let headers: Map<String, Value> =
        meta.headers.iter().filter_map(|(n, v)| decode(*v).map(|v| (n.to_string(), v))).collect();
    doc.insert("headers".into(), Value::Object(headers));
    doc.insert("topic".into(), Value::String(meta.topic.into()));
    doc.insert("partition".into(), meta.partition.into());
    doc.insert("timestamp".into(), meta.timestamp_ms.into());
    Value::Object(doc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn m(p: &str, e: Value) -> bool {
        Pattern::compile(p).unwrap_or_else(|e| panic!("{p}: {e}")).matches(&e)
    }
    fn err(p: &str) -> String {
        Pattern::compile(p).err().unwrap_or_else(|| panic!("{p} compiled"))
    }

    #[test]
    fn exact_values_and_or_within_arrays() {
        assert!(m(r#"{"a": ["x", "y"]}"#, json!({"a": "y"})));
        assert!(!m(r#"{"a": ["x"]}"#, json!({"a": "X"})));
        assert!(m(r#"{"a": [300]}"#, json!({"a": 300.0})), "numbers by value");
        assert!(!m(r#"{"a": [300]}"#, json!({"a": "300"})));
        assert!(m(r#"{"a": [true]}"#, json!({"a": true})));
        assert!(m(r#"{"a": [null]}"#, json!({"a": null})));
        assert!(!m(r#"{"a": [null]}"#, json!({"a": "null"})), "[null] is not \"null\"");
        assert!(!m(r#"{"a": [""]}"#, json!({"a": null})), "\"\" is not null");
        assert!(!m(r#"{"a": [null]}"#, json!({})), "null is not missing");
        assert!(m(r#"{"a": ["x"]}"#, json!({"a": ["q", "x"]})), "event arrays match on any overlap");
    }

    #[test]
    fn nested_fields_and_arrays_of_objects() {
        let p = r#"{"value": {"order": {"type": ["refund"]}, "n": [1]}}"#;
        assert!(m(p, json!({"value": {"order": {"type": "refund"}, "n": 1}})));
        assert!(!m(p, json!({"value": {"order": {"type": "refund"}, "n": 2}})), "fields AND");
        assert!(m(r#"{"items": {"sku": ["b"]}}"#, json!({"items": [{"sku": "a"}, {"sku": "b"}]})));
    }

    #[test]
    fn prefix_suffix_and_ignore_case() {
        assert!(m(r#"{"a": [{"prefix": "ERR"}]}"#, json!({"a": "ERROR x"})));
        assert!(!m(r#"{"a": [{"prefix": "ERR"}]}"#, json!({"a": "err"})));
        assert!(m(r#"{"a": [{"prefix": {"equals-ignore-case": "ERR"}}]}"#, json!({"a": "error"})));
        assert!(m(r#"{"a": [{"suffix": ".png"}]}"#, json!({"a": "x.png"})));
        assert!(m(r#"{"a": [{"suffix": {"equals-ignore-case": ".PNG"}}]}"#, json!({"a": "x.png"})));
        assert!(m(r#"{"a": [{"equals-ignore-case": "AbC"}]}"#, json!({"a": "aBc"})));
        assert!(!m(r#"{"a": [{"prefix": "1"}]}"#, json!({"a": 12})), "prefix is for strings");
    }

    #[test]
    fn anything_but_in_all_its_forms() {
        assert!(m(r#"{"a": [{"anything-but": "x"}]}"#, json!({"a": "y"})));
        assert!(!m(r#"{"a": [{"anything-but": "x"}]}"#, json!({"a": "x"})));
        assert!(m(r#"{"a": [{"anything-but": ["x", "y"]}]}"#, json!({"a": null})), "matches null");
        assert!(m(r#"{"a": [{"anything-but": ["x"]}]}"#, json!({"a": 5})), "matches numbers");
        assert!(m(r#"{"a": [{"anything-but": ["x"]}]}"#, json!({"a": true})), "matches booleans");
        assert!(!m(r#"{"a": [{"anything-but": ["x"]}]}"#, json!({})), "never a missing field");
        assert!(!m(r#"{"a": [{"anything-but": [5]}]}"#, json!({"a": 5.0})));
        assert!(m(r#"{"a": [{"anything-but": {"prefix": "in"}}]}"#, json!({"a": "out"})));
        assert!(!m(r#"{"a": [{"anything-but": {"prefix": "in"}}]}"#, json!({"a": "inner"})));
        assert!(!m(r#"{"a": [{"anything-but": {"suffix": ".tmp"}}]}"#, json!({"a": "x.tmp"})));
        assert!(!m(r#"{"a": [{"anything-but": {"equals-ignore-case": ["X", "y"]}}]}"#, json!({"a": "Y"})));
        assert!(m(r#"{"a": [{"anything-but": {"equals-ignore-case": "X"}}]}"#, json!({"a": "z"})));
        assert!(!m(r#"{"a": [{"anything-but": {"wildcard": "*.tmp"}}]}"#, json!({"a": "a.tmp"})));
        // Lists of prefixes and suffixes: none of them.
        let prefixes = r#"{"a": [{"anything-but": {"prefix": ["in", "pre"]}}]}"#;
        assert!(m(prefixes, json!({"a": "out"})));
        assert!(!m(prefixes, json!({"a": "inner"})));
        assert!(!m(prefixes, json!({"a": "prefix"})));
        let suffixes = r#"{"a": [{"anything-but": {"suffix": [".tmp", ".bak"]}}]}"#;
        assert!(m(suffixes, json!({"a": "x.txt"})));
        assert!(!m(suffixes, json!({"a": "x.bak"})));
        assert!(m(r#"{"a": [{"anything-but": {"wildcard": ["*.tmp", "x*"]}}]}"#, json!({"a": "a.png"})));
    }

    #[test]
    fn numeric_comparisons_and_ranges() {
        assert!(m(r#"{"a": [{"numeric": [">", 0, "<=", 5]}]}"#, json!({"a": 5})));
        assert!(!m(r#"{"a": [{"numeric": [">", 0, "<=", 5]}]}"#, json!({"a": 0})));
        assert!(m(r#"{"a": [{"numeric": ["=", 3.5]}]}"#, json!({"a": 3.5})));
        assert!(m(r#"{"a": [{"numeric": ["<", 10]}]}"#, json!({"a": -1e9})));
        assert!(!m(r#"{"a": [{"numeric": ["=", 300]}]}"#, json!({"a": "300"})), "numeric never matches a string");
    }

    #[test]
    fn exists_true_and_false() {
        assert!(m(r#"{"a": [{"exists": true}]}"#, json!({"a": 0})));
        assert!(m(r#"{"a": [{"exists": true}]}"#, json!({"a": null})));
        assert!(!m(r#"{"a": [{"exists": true}]}"#, json!({"a": []})), "not on []");
        assert!(!m(r#"{"a": [{"exists": true}]}"#, json!({"a": {"b": 1}})), "not on an object");
        assert!(m(r#"{"a": [{"exists": false}]}"#, json!({"b": 1})));
        assert!(!m(r#"{"a": [{"exists": false}]}"#, json!({"a": "x"})));
        assert!(m(r#"{"a": {"b": [{"exists": false}]}}"#, json!({})), "absent parents");
    }

    #[test]
    fn cidr_v4_and_v6() {
        assert!(m(r#"{"ip": [{"cidr": "10.0.0.0/24"}]}"#, json!({"ip": "10.0.0.255"})));
        assert!(!m(r#"{"ip": [{"cidr": "10.0.0.0/24"}]}"#, json!({"ip": "10.0.1.0"})));
        assert!(m(r#"{"ip": [{"cidr": "2001:db8::/32"}]}"#, json!({"ip": "2001:db8:1::1"})));
        assert!(!m(r#"{"ip": [{"cidr": "2001:db8::/32"}]}"#, json!({"ip": "10.0.0.1"})));
        assert!(m(r#"{"ip": [{"cidr": "0.0.0.0/0"}]}"#, json!({"ip": "1.2.3.4"})));
    }

    #[test]
    fn wildcards_with_escapes() {
        assert!(m(r#"{"k": [{"wildcard": "dir/*.png"}]}"#, json!({"k": "dir/a/b.png"})));
        assert!(!m(r#"{"k": [{"wildcard": "dir/*.png"}]}"#, json!({"k": "dir/a.jpg"})));
        assert!(m(r#"{"k": [{"wildcard": "a\\*b"}]}"#, json!({"k": "a*b"})));
        assert!(!m(r#"{"k": [{"wildcard": "a\\*b"}]}"#, json!({"k": "axb"})));
        assert!(m(r#"{"k": [{"wildcard": "*"}]}"#, json!({"k": ""})));
        assert!(m(r#"{"k": [{"wildcard": "a*b*c"}]}"#, json!({"k": "abxbxc"})));
    }

    #[test]
    fn or_between_field_sets() {
        let p = r#"{"value": {"$or": [{"a": [1]}, {"b": [{"prefix": "x"}]}]}}"#;
        assert!(m(p, json!({"value": {"a": 1}})));
        assert!(m(p, json!({"value": {"b": "xy"}})));
        assert!(!m(p, json!({"value": {"a": 2, "b": "y"}})));
    }

    #[test]
    fn invalid_patterns_say_why() {
        assert_eq!(err("[1]"), "Event pattern is not valid. Reason: Filter is not an object");
        assert!(err(r#"{"a": "x"}"#).contains("\"a\" must be an object or an array"));
        assert!(err(r#"{"a": []}"#).contains("Empty arrays are not allowed"));
        assert!(err(r#"{"a": [{"bogus": 1}]}"#).contains("Unrecognized match type bogus"));
        assert!(err(r#"{"a": [{"prefix": 1}]}"#).contains("prefix match pattern must be a string"));
        assert!(err(r#"{"a": [{"numeric": [">", "x"]}]}"#).contains("Value of > must be numeric"));
        assert!(err(r#"{"a": [{"numeric": ["<", 5, ">", 1]}]}"#).contains("Bad numeric range"));
        assert!(err(r#"{"a": [{"exists": "yes"}]}"#).contains("exists match pattern must be either true or false."));
        assert!(err(r#"{"a": [{"cidr": "10.0.0.0"}]}"#).contains("Malformed CIDR"));
        assert!(err(r#"{"a": [{"wildcard": "a**"}]}"#).contains("Consecutive wildcard"));
        assert!(err(r#"{"a": [{"wildcard": "a\\b"}]}"#).contains("Invalid escape"));
        assert!(err(r#"{"a": [{"wildcard": "*a*b*c*d*e*"}]}"#).contains("Rule is too complex"));
        assert!(Pattern::compile(r#"{"a": [{"wildcard": "*a*b*c*d*e"}]}"#).is_ok(), "five wildcards are fine");
        assert!(
            Pattern::compile(r#"{"a": [{"wildcard": "\\*\\*\\*\\*\\*\\*x"}]}"#).is_ok(),
            "escaped stars are literal"
        );
        assert!(err(r#"{"a": [{"anything-but": {"prefix": ""}}]}"#).contains("Null prefix not allowed"));
        assert!(err(r#"{"a": [{"anything-but": {"suffix": ["x", ""]}}]}"#).contains("Null suffix not allowed"));
        assert!(err(r#"{"a": [{"anything-but": {"prefix": []}}]}"#).contains("Empty arrays"));
        assert!(err(r#"{"a": [{"anything-but": [true]}]}"#).contains("anything-but list"));
        assert!(err(r#"{"$or": [{"a": [1]}]}"#).contains("at least 2"));
        assert!(err("{not json").starts_with("Event pattern is not valid. Reason: "));
        let nested = r#"{"a": {"$or": [{"x":[1]},{"x":[2]},{"x":[3]},{"x":[4]},{"x":[5]},{"x":[6]},{"x":[7]},{"x":[8]},{"x":[9]},{"x":[10]},{"x":[11]}]},
                        "b": {"$or": [{"x":[1]},{"x":[2]},{"x":[3]},{"x":[4]},{"x":[5]},{"x":[6]},{"x":[7]},{"x":[8]},{"x":[9]},{"x":[10]},{"x":[11]}]},
                        "c": {"$or": [{"x":[1]},{"x":[2]},{"x":[3]},{"x":[4]},{"x":[5]},{"x":[6]},{"x":[7]},{"x":[8]},{"x":[9]},{"x":[10]}]}}"#;
        assert!(err(nested).contains("combinations"), "{}", err(nested));
    }

    #[test]
    fn record_values_become_documents() {
        assert_eq!(value_document(Some(br#"{"a":1}"#)), json!({"value": {"a": 1}}));
        assert_eq!(value_document(Some(b"ERROR disk full")), json!({"value": "ERROR disk full"}));
        assert_eq!(value_document(Some(&[0xff, 0xfe])), json!({}));
        assert_eq!(value_document(None), json!({}));
        let p = Pattern::compile(r#"{"value": [{"prefix": "ERROR"}]}"#).unwrap();
        assert!(p.matches(&value_document(Some(b"ERROR disk full"))));
    }

    #[test]
    fn the_mismatch_names_the_field() {
        let p = Pattern::compile(r#"{"value": {"type": ["order"], "amount": [{"numeric": [">", 10]}]}}"#).unwrap();
        assert_eq!(p.first_mismatch(&json!({"value": {"type": "order", "amount": 5}})), Some("value.amount".into()));
        assert_eq!(p.first_mismatch(&json!({"value": {"type": "order", "amount": 50}})), None);
    }
}

/// A record as the filter tester shows it (read from the topic).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Sample {
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// With a schema registry: how the key and value were decoded (they are
    /// then the decoded JSON text), or why the record would fail.
    #[serde(default)]
    pub schema: Option<String>,
}

impl Sample {
    /// The document the mapping's filters see for this record.
    pub fn document(&self, topic: &str, with_metadata: bool) -> Value {
        if !with_metadata {
            return value_document(self.value.as_deref());
        }
        let meta = RecordMeta {
            key: self.key.as_deref(),
            headers: self.headers.iter().map(|(k, v)| (k.as_str(), v.as_deref())).collect(),
            topic,
            partition: self.partition,
            timestamp_ms: self.timestamp_ms,
        };
        record_document(self.value.as_deref(), &meta)
    }
}

#[cfg(test)]
mod test_input {
    /// A repeatable stream of pseudo-random numbers (xorshift).
    pub fn numbers(mut x: u64) -> impl FnMut() -> u64 {
        move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        }
    }

    /// `rounds` records made from the seeds in turn, each with one to three
    /// bytes of `alphabet` flipped in, inserted or cut out.
    pub fn mutations(seeds: &[&str], alphabet: &[u8], rounds: usize, x: u64) -> Vec<Vec<u8>> {
        let mut next = numbers(x);
        (0..rounds)
            .map(|round| {
                let mut b = seeds[round % seeds.len()].as_bytes().to_vec();
                for _ in 0..1 + next() % 3 {
                    let at = (next() as usize) % (b.len() + 1);
                    let c = alphabet[(next() as usize) % alphabet.len()];
                    match next() % 3 {
                        0 if at < b.len() => b[at] = c,
                        1 => b.insert(at, c),
                        _ if at < b.len() => {
                            b.remove(at);
                        }
                        _ => {}
                    }
                }
                b
            })
            .collect()
    }
}

#[cfg(test)]
mod projection_tests {
    use super::*;

    /// Matching the projected document gives the same answer as matching
    /// the whole one, for every pattern shape.
    #[test]
    fn projected_documents_match_like_whole_ones() {
        let patterns = super::value_filter_tests::PATTERNS;
        let records: [&[u8]; 10] = [
            br#"{"type": "refund", "other": {"deep": [1, 2, {"x": 3}]}}"#,
            br#"{"a": {"b": 2, "c": "skip"}, "t": "b"}"#,
            br#"{"a": [{"b": 0}, {"b": 5}]}"#,
            br#"{"items": [{"sku": "xy"}, {"sku": "z"}], "gone": null}"#,
            br#"{"o": {}, "x": 1, "y": {"z": null}}"#,
            br#"{"o": [], "t": "a", "y": {"z": 0}}"#,
            b"plain text",
            b"{not json",
            b"\xff\xfe",
            br#"[{"type": "refund"}]"#,
        ];
        for p in patterns {
            let compiled = Pattern::compile(p).unwrap();
            let proj = Projection::of(std::slice::from_ref(&compiled));
            for r in records {
                let whole = compiled.matches(&value_document(Some(r)));
                let projected = compiled.matches(&proj.value_document(Some(r)));
                assert_eq!(whole, projected, "{p} on {}", String::from_utf8_lossy(r));
            }
            assert_eq!(
                compiled.matches(&value_document(None)),
                compiled.matches(&proj.value_document(None)),
                "{p} on no value"
            );
        }
    }

    /// The scanner takes a record as JSON exactly when serde_json does, and
    /// keeps the named fields as serde_json parses them.
    #[test]
    fn the_scanner_accepts_what_serde_json_accepts() {
        let root = Projection::of(&[Pattern::compile(r#"{"value": {"k": [1], "n": {"m": [1]}}}"#).unwrap()]);
        let p = root.get("value").unwrap().clone();
        let deep = |n: usize| format!("{{\"s\": {}1{}}}", "[".repeat(n), "]".repeat(n));
        let mut cases: Vec<String> = [
            r#"{"k": 1, "skip": "a\"b\\c\/\b\f\n\r\t\u00e9"}"#,
            r#"{"skip": "\ud83d\ude00", "k": 2}"#,
            r#"{"skip": "\ud83d", "k": 2}"#,
            r#"{"skip": "\ude00", "k": 2}"#,
            r#"{"skip": "\ud83d\u0041", "k": 2}"#,
            r#"{"skip": "\x", "k": 2}"#,
            "{\"skip\": \"tab\there\", \"k\": 2}",
            r#"{"skip": 1e400, "k": 2}"#,
            r#"{"skip": -1.7976931348623157e308, "k": 2}"#,
            r#"{"skip": 0e999999, "k": 2}"#,
            r#"{"skip": 123456789012345678901234567890, "k": 2}"#,
            r#"{"skip": 01, "k": 2}"#,
            r#"{"skip": 1., "k": 2}"#,
            r#"{"skip": .5, "k": 2}"#,
            r#"{"skip": -, "k": 2}"#,
            r#"{"skip": 1e+, "k": 2}"#,
            r#"{"skip": [1, 2,], "k": 2}"#,
            r#"{"skip": {"a": 1,}, "k": 2}"#,
            r#"{"skip": tru, "k": 2}"#,
            r#"{"skip": nul}"#,
            r#"{"k": 1} x"#,
            r#"  {"k": 1}  "#,
            r#"{"k": 1, "k": {"z": 2}}"#,
            r#"{"\u006b": 5, "n": {"m": 1, "x": [[]]}}"#,
            r#"{"n": [{"m": 1}, 2]}"#,
            r#"{"n": {"m": [1, {"q": 2}]}, }"#,
            r#"{}"#,
            r#"{"#,
            r#"{"k" 1}"#,
            r#"{"k": 1 "n": 2}"#,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for n in [100, 126, 127, 128, 129, 200] {
            cases.push(deep(n));
        }
        // Long numbers without an exponent: finite up to 308 integer digits.
        for digits in [300, 308, 309, 310, 400] {
            cases.push(format!("{{\"skip\": 1{}.5, \"k\": 2}}", "0".repeat(digits - 1)));
            cases.push(format!("{{\"skip\": -9{}, \"k\": 2}}", "9".repeat(digits - 1)));
        }
        for c in &cases {
            let whole = serde_json::from_str::<Value>(c).ok();
            let scanned = Scan { b: c.as_bytes(), i: 0, depth: 0 }.document(&p);
            assert_eq!(whole.is_some(), scanned.is_some(), "accepts {c:?}: serde_json {whole:?}");
            if let (Some(w), Some(s)) = (whole, scanned) {
                assert_eq!(s.get("k"), w.get("k"), "{c}");
                assert_eq!(s.pointer("/n/m"), w.pointer("/n/m"), "{c}");
            }
        }
    }

    /// Mutated records (bytes flipped, inserted, cut): the scanner and
    /// serde_json still agree on every one.
    #[test]
    fn the_scanner_agrees_with_serde_json_on_mutated_records() {
        let root = Projection::of(&[Pattern::compile(r#"{"value": {"k": [1], "n": {"m": [1]}}}"#).unwrap()]);
        let p = root.get("value").unwrap().clone();
        let seeds = [
            r#"{"k": [1, 2.5e3, -0], "n": {"m": "\u00e9\ud83d\ude00", "z": [true, false, null]}, "s": "x\ny"}"#,
            r#"{"a": {"b": [[{}], []]}, "k": {"n": 1}, "n": [{"m": 1e10}, "str"]}"#,
        ];
        let alphabet: &[u8] = b"{}[]\",:0123456789-+.eEtrufalsn \\u\t\x01abcdef";
        let mut accepted = 0;
        for b in super::test_input::mutations(&seeds, alphabet, 40_000, 0x9E37_79B9_7F4A_7C15) {
            let Ok(text) = std::str::from_utf8(&b) else { continue };
            let whole = serde_json::from_str::<Value>(text).ok().filter(Value::is_object);
            let scanned = Scan { b: text.as_bytes(), i: 0, depth: 0 }.document(&p);
            assert_eq!(whole.is_some(), scanned.is_some(), "accepts {text:?}");
            if let (Some(w), Some(s)) = (whole, scanned) {
                accepted += 1;
                assert_eq!(s.get("k"), w.get("k"), "{text}");
                assert_eq!(s.pointer("/n/m"), w.pointer("/n/m"), "{text}");
            }
        }
        assert!(accepted > 1_000, "the mutations keep enough records valid ({accepted})");
    }
}

#[cfg(test)]
mod value_filter_tests {
    use super::*;

    pub(super) const PATTERNS: [&str; 17] = [
        r#"{"value": {"type": ["refund"]}}"#,
        r#"{"value": {"a": {"b": [{"numeric": [">", 1]}]}}}"#,
        r#"{"value": {"items": {"sku": [{"prefix": "x"}]}}}"#,
        r#"{"value": {"gone": [{"exists": false}]}}"#,
        r#"{"value": {"o": [{"exists": true}]}}"#,
        r#"{"value": {"t": [{"anything-but": ["a", 1]}]}}"#,
        r#"{"value": [{"exists": false}]}"#,
        r#"{"value": ["plain text"]}"#,
        r#"{"$or": [{"value": {"x": [1]}}, {"value": {"y": {"z": [null]}}}]}"#,
        r#"{"value": {"n": [0.5, 12, -3, 1e2, {"numeric": ["=", 100]}], "s": ["é", "a\"b"]}}"#,
        r#"{"value": {"t": [true], "f": [false], "z": [null], "e": [""]}}"#,
        r#"{"value": {"s": [{"prefix": {"equals-ignore-case": "AB"}}, {"suffix": "yz"}, {"wildcard": "q*w"}]}}"#,
        r#"{"value": {"ip": [{"cidr": "10.0.0.0/8"}], "s": [{"anything-but": {"prefix": "a"}}]}}"#,
        r#"{"value": {"a": [1], "$or": [{"a": {"b": [2]}}, {"c": [{"exists": true}]}]}}"#,
        r#"{"key": [{"exists": false}], "value": {"k": [{"exists": false}]}}"#,
        r#"{"value": {"k": [{"equals-ignore-case": "ÉCOLE"}]}}"#,
        r#"{"value": {"a": {"b": {"c": [{"exists": false}]}}}}"#,
    ];

    const RECORDS: [&str; 24] = [
        r#"{"type": "refund", "other": {"deep": [1, 2, {"x": 3}]}}"#,
        r#"{"a": {"b": 2, "c": "skip"}, "t": "b"}"#,
        r#"{"a": [{"b": 0}, {"b": 5}]}"#,
        r#"{"a": [1, 2], "c": 1}"#,
        r#"{"a": 1, "c": 0}"#,
        r#"{"items": [{"sku": "xy"}, {"sku": "z"}], "gone": null}"#,
        r#"{"o": {}, "x": 1, "y": {"z": null}}"#,
        r#"{"o": [], "t": "a", "y": {"z": 0}}"#,
        r#"{"o": [[1], {}], "t": 1}"#,
        r#"{"o": [[], 2], "t": [1, "b"]}"#,
        r#"{"n": 100, "s": "\u00e9"}"#,
        r#"{"n": 1.0e2, "s": "a\"b"}"#,
        r#"{"n": [0.50, -3.0], "s": ["x", "é"]}"#,
        r#"{"n": 12.000000000000001, "t": true, "f": false, "z": null, "e": ""}"#,
        r#"{"t": "true", "f": 0, "z": "null", "e": null}"#,
        r#"{"s": "abcdeyz", "ip": "10.1.2.3"}"#,
        r#"{"s": "qXXw", "ip": "11.0.0.1"}"#,
        r#"{"s": "ABc", "ip": "::1", "k": "école"}"#,
        r#"{"k": "ECOLE", "\u0073": "aa"}"#,
        r#"{"a": {"b": 2}, "a": 7}"#,
        r#"{"a": {"b": {"c": 1}}, "a": {"b": 3}}"#,
        r#"{"a": {"b": {"c": 1}}}"#,
        r#"{"value": 1, "x": 1}"#,
        r#"  {"x": 1, "y": {"z": null}}  "#,
    ];

    fn both(p: &[Pattern], r: Option<&[u8]>) -> (bool, bool) {
        let doc = value_document(r);
        (ValueFilters::new(p).admits(r), p.iter().any(|p| p.matches(&doc)))
    }

    /// Dotted keys, in a pattern or in a record, name nested fields (as
    /// EventBridge flattens paths), on every matching path alike.
    #[test]
    fn dotted_keys_name_nested_fields() {
        let dotted = Pattern::compile(r#"{"value": {"order.kind": ["book"]}}"#).unwrap();
        let nested = Pattern::compile(r#"{"value": {"order": {"kind": ["book"]}}}"#).unwrap();
        for p in [&dotted, &nested] {
            for (record, want) in [
                (&br#"{"order": {"kind": "book"}}"#[..], true),
                (&br#"{"order.kind": "book"}"#[..], true),
                (&br#"{"order": {"kind": "pen"}}"#[..], false),
                (&br#"{"order.kind": "pen"}"#[..], false),
                (&br#"{"orderXkind": "book"}"#[..], false),
            ] {
                let ps = std::slice::from_ref(p);
                assert_eq!(both(ps, Some(record)), (want, want), "{}", String::from_utf8_lossy(record));
                let projected = Projection::of(ps).value_document(Some(record));
                assert_eq!(p.matches(&projected), want, "projected: {projected}");
            }
        }
        let merged = Pattern::compile(r#"{"value": {"a.b": [1], "a": {"c": [2]}}}"#).unwrap();
        assert!(merged.matches(&serde_json::json!({"value": {"a": {"b": 1, "c": 2}}})));
        assert!(!merged.matches(&serde_json::json!({"value": {"a": {"b": 1}}})));
        let conflict = Pattern::compile(r#"{"a.b": [1], "a": [2]}"#).unwrap_err();
        assert!(conflict.contains("names a field another key"), "{conflict}");
    }

    /// Matching off the bytes answers as matching the parsed document does,
    /// pattern by pattern and all together, on objects and on everything else.
    #[test]
    fn matching_off_the_bytes_is_matching_the_document() {
        let all: Vec<Pattern> = PATTERNS.iter().map(|p| Pattern::compile(p).unwrap()).collect();
        let mut others: Vec<&[u8]> =
            vec![b"plain text", b"{not json", b"\xff\xfe", br#"[{"type": "refund"}]"#, b"17", b""];
        others.extend(RECORDS.iter().map(|r| r.as_bytes()));
        let mut matched = 0;
        for (i, p) in all.iter().enumerate() {
            for r in &others {
                let (fast, tree) = both(std::slice::from_ref(p), Some(r));
                assert_eq!(fast, tree, "{} on {}", PATTERNS[i], String::from_utf8_lossy(r));
                matched += fast as usize;
            }
            let (fast, tree) = both(std::slice::from_ref(p), None);
            assert_eq!(fast, tree, "{} on no value", PATTERNS[i]);
        }
        for r in &others {
            let (fast, tree) = both(&all, Some(r));
            assert_eq!(fast, tree, "all patterns on {}", String::from_utf8_lossy(r));
        }
        assert!(matched > 40, "the cases exercise matches as well as misses ({matched})");
    }

    /// Mutated records: still the same answers, valid JSON or not.
    #[test]
    fn mutated_records_get_the_same_answers() {
        let all: Vec<Pattern> = PATTERNS.iter().map(|p| Pattern::compile(p).unwrap()).collect();
        let filters: Vec<ValueFilters> = all.iter().map(|p| ValueFilters::new(std::slice::from_ref(p))).collect();
        let alphabet: &[u8] = b"{}[]\",:0123456789-+.eEtrufalsn \\uabcdexyz";
        let mut hits = 0;
        for b in super::test_input::mutations(&RECORDS, alphabet, 20_000, 0x2545_F491_4F6C_DD1D) {
            let doc = value_document(Some(&b));
            for (p, f) in all.iter().zip(&filters) {
                let fast = f.admits(Some(&b));
                assert_eq!(fast, p.matches(&doc), "{p:?} on {}", String::from_utf8_lossy(&b));
                hits += fast as usize;
            }
        }
        assert!(hits > 10_000, "mutations keep many records matching ({hits})");
    }

    /// Numbers become the same f64 serde_json makes of them.
    #[test]
    fn numbers_parse_as_serde_json_parses_them() {
        let mut next = super::test_input::numbers(0x9E37_79B9_7F4A_7C15);
        let mut cases: Vec<String> = [
            "0",
            "-0",
            "0.0",
            "-0.5",
            "12.000000000000001",
            "9007199254740993",
            "123456789012345678",
            "1234567890123456789",
            "0.1",
            "0.30000000000000004",
            "1e2",
            "-2.5E-3",
            "3.141592653589793238",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for _ in 0..50_000 {
            let int = next() % 10u64.pow((next() % 19) as u32 + 1);
            let frac_len = (next() % 20) as usize;
            let frac: String = (0..frac_len).map(|_| char::from(b'0' + (next() % 10) as u8)).collect();
            let sign = if next().is_multiple_of(2) { "-" } else { "" };
            cases.push(if frac.is_empty() { format!("{sign}{int}") } else { format!("{sign}{int}.{frac}") });
        }
        for c in &cases {
            let want = serde_json::from_str::<Value>(c).unwrap().as_f64().unwrap();
            assert_eq!(parse_number(c.as_bytes()).to_bits(), want.to_bits(), "{c}");
        }
    }
}
