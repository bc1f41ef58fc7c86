//! Log lines per mapping: a mapping's `LoggingConfig.SystemLogLevel`
//! (AWS's DEBUG, INFO or WARN) decides which of its lines are written,
//! whatever `SLUICE_LOG` says for the rest. A line is the mapping's when it
//! is logged inside a `mapping` span (the pollers and pipelines run in one)
//! or carries a `mapping` field. A leaf: it names no other module.

use std::collections::HashMap;
use std::sync::RwLock;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, Filter};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;
use uuid::Uuid;

static LEVELS: RwLock<Option<HashMap<Uuid, Level>>> = RwLock::new(None);

/// The span a mapping's work runs in.
#[macro_export]
macro_rules! mapping_span {
    ($id:expr) => {
        tracing::info_span!("mapping", mapping = %$id)
    };
}

/// Sets (or, with None, clears) a mapping's own log level.
pub fn set_level(id: Uuid, level: Option<Level>) {
    let mut l = LEVELS.write().unwrap_or_else(|e| e.into_inner());
    let map = l.get_or_insert_with(HashMap::new);
    match level {
        Some(level) => map.insert(id, level),
        None => map.remove(&id),
    };
}

/// AWS's SystemLogLevel names.
pub fn parse_level(s: &str) -> Option<Level> {
    match s {
        "DEBUG" => Some(Level::DEBUG),
        "INFO" => Some(Level::INFO),
        "WARN" => Some(Level::WARN),
        _ => None,
    }
}

fn level_of(id: Uuid) -> Option<Level> {
    LEVELS.read().unwrap_or_else(|e| e.into_inner()).as_ref()?.get(&id).copied()
}

/// The mapping a span belongs to (kept in its extensions).
struct MappingOf(Uuid);

/// Finds a `mapping` field's UUID.
struct FindMapping(Option<Uuid>);

impl Visit for FindMapping {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "mapping" {
            self.0 = Uuid::parse_str(&format!("{value:?}")).ok();
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "mapping" {
            self.0 = Uuid::parse_str(value).ok();
        }
    }
}

/// `SLUICE_LOG` for everything, a mapping's own level for its lines.
pub struct MappingLevels {
    env: EnvFilter,
}

impl MappingLevels {
    pub fn new(env: EnvFilter) -> MappingLevels {
        MappingLevels { env }
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Filter<S> for MappingLevels {
    fn enabled(&self, meta: &Metadata<'_>, cx: &Context<'_, S>) -> bool {
        // Spans always: a mapping's span must exist for its lines to find it.
        // Events the environment drops may still be a DEBUG mapping's.
        meta.is_span() || *meta.level() <= Level::DEBUG || self.env.enabled(meta, cx.clone())
    }

    fn event_enabled(&self, event: &Event<'_>, cx: &Context<'_, S>) -> bool {
        let mut found = FindMapping(None);
        event.record(&mut found);
        let mapping = found.0.or_else(|| {
            cx.lookup_current()?.scope().find_map(|span| span.extensions().get::<MappingOf>().map(|m| m.0))
        });
        match mapping.and_then(level_of) {
            Some(level) => *event.metadata().level() <= level,
            None => self.env.enabled(event.metadata(), cx.clone()),
        }
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> Interest {
        // Asked per line: whether it is written depends on whose it is.
        let _ = Filter::<S>::callsite_enabled(&self.env, meta);
        Interest::sometimes()
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        let env = Filter::<S>::max_level_hint(&self.env).unwrap_or(LevelFilter::TRACE);
        Some(env.max(LevelFilter::DEBUG))
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, cx: Context<'_, S>) {
        if attrs.metadata().name() == "mapping" {
            let mut found = FindMapping(None);
            attrs.record(&mut found);
            if let (Some(m), Some(span)) = (found.0, cx.span(id)) {
                span.extensions_mut().insert(MappingOf(m));
            }
        }
        self.env.on_new_span(attrs, id, cx);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, cx: Context<'_, S>) {
        self.env.on_record(id, values, cx);
    }

    fn on_enter(&self, id: &Id, cx: Context<'_, S>) {
        self.env.on_enter(id, cx);
    }

    fn on_exit(&self, id: &Id, cx: Context<'_, S>) {
        self.env.on_exit(id, cx);
    }

    fn on_close(&self, id: Id, cx: Context<'_, S>) {
        self.env.on_close(id, cx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::Layer;

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_mappings_level_decides_its_lines_and_sluice_log_the_rest() {
        let lines = Lines::default();
        let out = lines.clone();
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(move || out.clone())
            .with_ansi(false)
            .with_filter(MappingLevels::new(EnvFilter::new("info")));
        let quiet = Uuid::new_v4();
        let chatty = Uuid::new_v4();
        set_level(quiet, Some(Level::WARN));
        set_level(chatty, parse_level("DEBUG"));
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
            crate::mapping_span!(quiet).in_scope(|| {
                tracing::info!("quiet-info");
                tracing::warn!("quiet-warn");
            });
            crate::mapping_span!(chatty).in_scope(|| tracing::debug!("chatty-debug"));
            tracing::info!(mapping = %quiet, "quiet-by-field");
            tracing::info!("plain-info");
            tracing::debug!("plain-debug");
        });
        set_level(quiet, None);
        set_level(chatty, None);
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        for (line, shown) in [
            ("quiet-info", false),
            ("quiet-warn", true),
            ("chatty-debug", true),
            ("quiet-by-field", false),
            ("plain-info", true),
            ("plain-debug", false),
        ] {
            assert_eq!(text.contains(line), shown, "{line} in:\n{text}");
        }
    }
}
