//! Filter: which records reach the function (`FilterCriteria`). A record is
//! invoked if any pattern matches; the others are counted and committed with
//! the records around them, as AWS does.

use rdkafka::message::{Headers, Message, OwnedMessage};
use sluice_app::filter::{record_document, value_document, Pattern, RecordMeta, ValueFilters};
use sluice_app::spec::MappingSpec;

#[derive(Default)]
pub struct Filter {
    /// None: every record passes.
    pub patterns: Vec<Pattern>,
    /// `patterns`, ready to match records' value bytes directly (None: parse
    /// each value into a document first).
    pub value_filters: Option<ValueFilters>,
    /// Patterns also see key, headers, topic, partition, timestamp.
    pub on_metadata: bool,
}

impl Filter {
    /// As mappings run: values matched straight off their bytes.
    pub fn new(patterns: Vec<Pattern>, on_metadata: bool) -> Filter {
        Filter { value_filters: Some(ValueFilters::new(&patterns)), patterns, on_metadata }
    }

    /// Every record parsed into a document first (the reference matcher).
    pub fn documents(patterns: Vec<Pattern>, on_metadata: bool) -> Filter {
        Filter { patterns, value_filters: None, on_metadata }
    }

    pub fn from_spec(spec: &MappingSpec) -> Filter {
        // Saved specs passed validation, so every pattern compiles.
        let patterns = spec.filter_criteria.filters.iter().filter_map(|f| Pattern::compile(&f.pattern).ok()).collect();
        Filter::new(patterns, spec.filter_on_record_metadata)
    }

    /// Whether the record passes.
    pub fn admits(&self, m: &OwnedMessage) -> bool {
        self.admits_as(m, m.key(), m.payload())
    }

    /// Whether the record passes with this key and value: its own, or
    /// (schema registry) their decoded JSON text.
    pub fn admits_as(&self, m: &OwnedMessage, key: Option<&[u8]>, value: Option<&[u8]>) -> bool {
        if self.patterns.is_empty() {
            return true;
        }
        if !self.on_metadata {
            if let Some(f) = &self.value_filters {
                return f.admits(value);
            }
        }
        let doc = if self.on_metadata {
            let headers = m.headers().map(|h| h.iter().map(|h| (h.key, h.value)).collect()).unwrap_or_default();
            let meta = RecordMeta {
                key,
                headers,
                topic: m.topic(),
                partition: m.partition(),
                timestamp_ms: m.timestamp().to_millis().unwrap_or(-1),
            };
            record_document(value, &meta)
        } else {
            value_document(value)
        };
        self.patterns.iter().any(|f| f.matches(&doc))
    }
}
