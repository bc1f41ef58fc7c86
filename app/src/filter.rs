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

fn compile_obj(map: &Map<String, Value>, depth: usize) -> Result<Obj, String> {
    if depth > 32 {
        return Err(invalid("the pattern is nested too deeply"));
    }
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
                "prefix" => Matcher::Prefix(string_arg("anything-but prefix", a)?, false),
                "suffix" => Matcher::Suffix(string_arg("anything-but suffix", a)?, false),
                "equals-ignore-case" => match a {
                    Value::String(s) => Matcher::EqualsIgnoreCase(s.to_lowercase()),
                    Value::Array(list) if !list.is_empty() => Matcher::AnyOf(
                        list.iter()
                            .map(|x| string_arg("anything-but equals-ignore-case", x).map(|s| Matcher::EqualsIgnoreCase(s.to_lowercase())))
                            .collect::<Result<_, _>>()?,
                    ),
                    _ => return Err(invalid("anything-but equals-ignore-case match pattern must be a string or a list of strings")),
                },
                "wildcard" => match a {
                    Value::String(s) => Matcher::Wildcard(compile_wildcard(s)?),
                    Value::Array(list) if !list.is_empty() => Matcher::AnyOf(
                        list.iter()
                            .map(|x| string_arg("anything-but wildcard", x).and_then(|s| compile_wildcard(&s)).map(Matcher::Wildcard))
                            .collect::<Result<_, _>>()?,
                    ),
                    _ => return Err(invalid("anything-but wildcard match pattern must be a string or a list of strings")),
                },
                other => return Err(invalid(format!("Unsupported anything-but pattern: {other}"))),
            }
        }
        _ => return Err(invalid(format!("\"{field}\": Value of anything-but must be an array or single string/number value."))),
    };
    Ok(Matcher::AnythingBut(Box::new(inner)))
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
        let n = pair[1].as_f64().ok_or_else(|| invalid(format!("Value of {} must be numeric", pair[0].as_str().unwrap_or(""))))?;
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
    let bits: u8 = bits.parse().ok().filter(|b| *b <= max).ok_or_else(|| invalid(format!("Malformed CIDR, mask bits must be a number from 0 to {max}: {s}")))?;
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
                _ => return Err(invalid(format!("Invalid escape in wildcard pattern {s:?}: only \\* and \\\\ are allowed"))),
            },
            '*' if prev_star => return Err(invalid(format!("Consecutive wildcard characters in {s:?}"))),
            '*' => prev_star = true,
            _ => prev_star = false,
        }
    }
    Ok(s.to_string())
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
        Matcher::Prefix(p, ci) => v.as_str().is_some_and(|s| if *ci { s.to_lowercase().starts_with(p) } else { s.starts_with(p.as_str()) }),
        Matcher::Suffix(p, ci) => v.as_str().is_some_and(|s| if *ci { s.to_lowercase().ends_with(p) } else { s.ends_with(p.as_str()) }),
        Matcher::EqualsIgnoreCase(p) => v.as_str().is_some_and(|s| s.to_lowercase() == *p),
        Matcher::Numeric(conds) => v.as_f64().is_some_and(|x| {
            v.is_number()
                && conds.iter().all(|(op, n)| match op {
                    Op::Eq => x == *n,
                    Op::Lt => x < *n,
                    Op::Le => x <= *n,
                    Op::Gt => x > *n,
                    Op::Ge => x >= *n,
                })
        }),
        Matcher::Exists(b) => *b,
        Matcher::Cidr(c) => v.as_str().and_then(|s| s.parse::<IpAddr>().ok()).is_some_and(|ip| in_cidr(c, ip)),
        Matcher::Wildcard(p) => v.as_str().is_some_and(|s| wildcard_match(p, s)),
        Matcher::AnyOf(all) => all.iter().any(|m| match_scalar(m, v)),
        Matcher::AnythingBut(inner) => !match_scalar(inner, v),
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
    let field = |k: &str| v.and_then(|v| v.as_object()).and_then(|m| m.get(k));
    o.fields.iter().all(|(k, r)| match r {
        Rule::Nested(inner) => match_obj(inner, field(k)),
        Rule::Leaf(ms) => match_leaf(ms, field(k)),
    }) && o.ors.iter().all(|alts| alts.iter().any(|a| match_obj(a, v)))
}

fn first_mismatch(o: &Obj, v: Option<&Value>, path: &str) -> Option<String> {
    if match_obj(o, v) {
        return None;
    }
    let field = |k: &str| v.and_then(|v| v.as_object()).and_then(|m| m.get(k));
    for (k, r) in &o.fields {
        let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
        match r {
            Rule::Nested(inner) if !match_obj(inner, field(k)) => {
                return Some(first_mismatch(inner, field(k), &p).unwrap_or(p));
            }
            Rule::Leaf(ms) if !match_leaf(ms, field(k)) => return Some(p),
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
        self.children.iter().find(|(n, _)| n == k).map(|(_, p)| p)
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
            return self.children.iter().find(|(n, _)| n.as_bytes() == raw).map(|(_, p)| p);
        }
        self.get(&unescape(raw).ok()?)
    }
}

/// serde_json's nesting limit: a document nested deeper does not parse.
const MAX_DEPTH: u32 = 127;

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

impl Scan<'_> {
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
        self.enter()?;
        let mut out = Map::new();
        if self.peek()? == b'}' {
            self.i += 1;
            self.depth -= 1;
            return Ok(Value::Object(out));
        }
        loop {
            self.ws();
            let start = self.i + 1;
            self.string()?;
            let key = &self.b[start..self.i - 1];
            self.ws();
            self.eat(b':')?;
            self.ws();
            let from = self.i;
            match p.get_raw(key) {
                None => self.value()?,
                Some(c) if !c.all && self.peek()? == b'{' => {
                    let v = self.object(c)?;
                    out.insert(unescape(key)?, v);
                }
                Some(c) => {
                    self.value()?;
                    // Checked above; small, so parsed again as a value.
                    let mut de = serde_json::Deserializer::from_slice(&self.b[from..self.i]);
                    let v = serde::de::DeserializeSeed::deserialize(c, &mut de).map_err(|_| ())?;
                    out.insert(unescape(key)?, v);
                }
            }
            self.ws();
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    self.depth -= 1;
                    return Ok(Value::Object(out));
                }
                _ => return Err(()),
            }
        }
    }

    /// Checks one value and moves past it.
    fn value(&mut self) -> Result<(), Bad> {
        match self.peek()? {
            b'{' => {
                self.enter()?;
                if self.peek()? != b'}' {
                    loop {
                        self.ws();
                        self.string()?;
                        self.ws();
                        self.eat(b':')?;
                        self.ws();
                        self.value()?;
                        self.ws();
                        if self.peek()? != b',' {
                            break;
                        }
                        self.i += 1;
                    }
                }
                self.eat(b'}')?;
                self.depth -= 1;
            }
            b'[' => {
                self.enter()?;
                if self.peek()? != b']' {
                    loop {
                        self.value()?;
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
            }
            b'"' => self.string()?,
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

    /// At `"`: past the closing quote. Control characters, unknown escapes
    /// and lone surrogates are errors, as in serde_json.
    fn string(&mut self) -> Result<(), Bad> {
        self.eat(b'"')?;
        loop {
            let c = self.peek()?;
            self.i += 1;
            match c {
                b'"' => return Ok(()),
                b'\\' => match self.peek()? {
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
                },
                0..=0x1F => return Err(()),
                _ => {}
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
        let mut plain = int <= 18;
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            plain = false;
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
mod projection_tests {
    use super::*;

    /// Matching the projected document gives the same answer as matching
    /// the whole one, for every pattern shape.
    #[test]
    fn projected_documents_match_like_whole_ones() {
        let patterns = [
            r#"{"value": {"type": ["refund"]}}"#,
            r#"{"value": {"a": {"b": [{"numeric": [">", 1]}]}}}"#,
            r#"{"value": {"items": {"sku": [{"prefix": "x"}]}}}"#,
            r#"{"value": {"gone": [{"exists": false}]}}"#,
            r#"{"value": {"o": [{"exists": true}]}}"#,
            r#"{"value": {"t": [{"anything-but": ["a"]}]}}"#,
            r#"{"value": [{"exists": false}]}"#,
            r#"{"value": ["plain text"]}"#,
            r#"{"$or": [{"value": {"x": [1]}}, {"value": {"y": {"z": [null]}}}]}"#,
        ];
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
            assert_eq!(compiled.matches(&value_document(None)), compiled.matches(&proj.value_document(None)), "{p} on no value");
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
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut accepted = 0;
        for round in 0..40_000 {
            let mut b = seeds[round % 2].as_bytes().to_vec();
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
