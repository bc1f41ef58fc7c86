//! Moving a mapping's consumer group to a new position: the plan (what each
//! partition's committed offset is now and would be after), and the commit
//! of that plan. Both talk to Kafka with a client that never joins the group;
//! the service stops the mapping's pollers around the commit (a group with
//! members refuses commits from outside it).

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sluice_app::reset::{PartitionReset, ResetRequest, Strategy};
use sluice_app::spec::{FieldError, StartingPosition};

use crate::kafka_auth::AuthContext;

const TIMEOUT: Duration = Duration::from_secs(10);
/// How long a commit may be refused because of members before giving up.
const MEMBER_TIMEOUT: Duration = Duration::from_secs(15);

fn is_member_error(e: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    matches!(e.rdkafka_error_code(), Some(C::UnknownMemberId | C::IllegalGeneration | C::RebalanceInProgress))
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("invalid")]
    Invalid(Vec<FieldError>),
    #[error("{0}")]
    Kafka(String),
}

impl From<rdkafka::error::KafkaError> for PlanError {
    fn from(e: rdkafka::error::KafkaError) -> Self {
        PlanError::Kafka(e.to_string())
    }
}

/// Where to reset, as the mapping names it.
pub struct Target<'a> {
    pub servers: &'a str,
    pub group: &'a str,
    pub topic: &'a str,
    /// Where a partition without a committed offset would start.
    pub start: StartingPosition,
    pub auth: &'a crate::kafka_auth::KafkaAuth,
}

fn client(t: &Target) -> Result<BaseConsumer<AuthContext>, PlanError> {
    Ok(t.auth.consumer(
        ClientConfig::new()
            .set("bootstrap.servers", t.servers)
            .set("group.id", t.group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false"),
    )?)
}

/// Per chosen partition: the offset now and after. Blocking (run it off the
/// async runtime).
pub fn plan(t: &Target, req: &ResetRequest) -> Result<Vec<PartitionReset>, PlanError> {
    let c = client(t)?;
    let md = c.fetch_metadata(Some(t.topic), TIMEOUT)?;
    let parts: Vec<i32> = md
        .topics()
        .iter()
        .find(|x| x.name() == t.topic)
        .map(|x| x.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default();
    if parts.is_empty() {
        return Err(PlanError::Kafka(format!(
            "topic `{}` does not exist on {} (or has no partitions)",
            t.topic, t.servers
        )));
    }
    let mut chosen: Vec<i32> = match (&req.partitions, req.strategy) {
        (Some(ps), _) => ps.clone(),
        (None, Strategy::Offsets) => req.offsets.iter().flatten().filter_map(|(k, _)| k.parse().ok()).collect(),
        (None, _) => parts.clone(),
    };
    chosen.sort_unstable();
    chosen.dedup();
    let known = |p: &i32| parts.contains(p);
    let mut errs = Vec::new();
    if let Some(p) = chosen.iter().find(|p| !known(p)) {
        errs.push(FieldError::new(
            "Partitions",
            format!(
                "partition {p} does not exist: `{}` has {} partitions (0 to {})",
                t.topic,
                parts.len(),
                parts.len() - 1
            ),
        ));
    }
    if req.strategy == Strategy::Offsets {
        for p in &chosen {
            if req.offset_for(*p).is_none() {
                errs.push(FieldError::new("Offsets", format!("names no offset for partition {p}")));
            }
        }
    }
    if !errs.is_empty() {
        return Err(PlanError::Invalid(errs));
    }
    let mut tpl = TopicPartitionList::new();
    for p in &chosen {
        tpl.add_partition(t.topic, *p);
    }
    let committed = c.committed_offsets(tpl, TIMEOUT)?;
    let by_time = match (req.strategy, req.timestamp) {
        (Strategy::AtTimestamp, Some(ts)) => {
            let mut q = TopicPartitionList::new();
            for p in &chosen {
                q.add_partition_offset(t.topic, *p, Offset::Offset(ts))?;
            }
            Some(c.offsets_for_times(q, TIMEOUT)?)
        }
        _ => None,
    };
    let mut out = Vec::new();
    for p in chosen {
        let (low, high) = c.fetch_watermarks(t.topic, p, TIMEOUT)?;
        let before = match committed.find_partition(t.topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => Some(o),
            _ => None,
        };
        // Where the group stands: its commit, or where it would start.
        let now = before.unwrap_or(match t.start {
            StartingPosition::TrimHorizon => low,
            _ => high,
        });
        let mut note = None;
        let asked = match req.strategy {
            Strategy::TrimHorizon => low,
            Strategy::Latest => high,
            Strategy::Offsets => req.offset_for(p).unwrap_or(now),
            // Saturating: a shift near i64's ends clamps like any other overshoot.
            Strategy::ShiftBy => now.saturating_add(req.shift_by.unwrap_or(0)),
            Strategy::AtTimestamp => {
                let ts = req.timestamp.unwrap_or(0);
                match by_time.as_ref().and_then(|r| r.find_partition(t.topic, p)).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) if o >= 0 && o < high => {
                        // Some brokers answer a time past the last record with
                        // an early offset; rewinding on that would re-process
                        // the partition. The last record's time settles it.
                        match last_timestamp(t, p, high) {
                            Some(last) if last < ts => {
                                note = Some(format!(
                                    "no record at or after the time (the last is from {}): the end",
                                    sluice_app::spec::format_unix(last / 1000)
                                ));
                                high
                            }
                            _ => o,
                        }
                    }
                    // No record at or after the time: the end.
                    _ => high,
                }
            }
        };
        let after = asked.clamp(low, high);
        if after != asked {
            note = Some(if asked < low {
                format!("{asked} is before the earliest offset still in the partition ({low}): clamped to it")
            } else {
                format!("{asked} is past the end of the partition ({high}): clamped to it")
            });
        }
        let delta = after.saturating_sub(now);
        out.push(PartitionReset {
            partition: p,
            before,
            after,
            delta,
            earliest_offset: low,
            end_offset: high,
            reprocessed: delta.saturating_neg().max(0),
            skipped: delta.max(0),
            note,
        });
    }
    Ok(out)
}

/// Joins the group (its pollers are stopped, so this client is its only
/// member and gets every partition), commits, and leaves.
fn commit_as_member(t: &Target, tpl: &TopicPartitionList) -> Result<(), PlanError> {
    let c = t.auth.consumer(
        ClientConfig::new()
            .set("bootstrap.servers", t.servers)
            .set("group.id", t.group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("session.timeout.ms", "10000"),
    )?;
    c.subscribe(&[t.topic])?;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let wanted = tpl.count();
    while c.assignment().map(|a| a.count()).unwrap_or(0) < wanted {
        if std::time::Instant::now() > deadline {
            return Err(PlanError::Kafka("could not join the consumer group to commit the new offsets".into()));
        }
        // Records fetched meanwhile are not looked at, and nothing is stored.
        let _ = c.poll(Duration::from_millis(100));
    }
    c.commit(tpl, CommitMode::Sync)?;
    c.unsubscribe();
    Ok(())
}

/// The timestamp (ms) of the record before `end`, if it can be read.
fn last_timestamp(t: &Target, partition: i32, end: i64) -> Option<i64> {
    if end <= 0 {
        return None;
    }
    let c = client(t).ok()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(t.topic, partition, Offset::Offset(end - 1)).ok()?;
    c.assign(&tpl).ok()?;
    let deadline = std::time::Instant::now() + TIMEOUT;
    while std::time::Instant::now() < deadline {
        match c.poll(Duration::from_millis(200)) {
            Some(Ok(m)) if m.partition() == partition => return m.timestamp().to_millis(),
            _ => continue,
        }
    }
    None
}

/// Commits the plan's offsets for the group and reads them back.
pub fn commit(t: &Target, plan: &[PartitionReset]) -> Result<(), PlanError> {
    let c = client(t)?;
    let mut tpl = TopicPartitionList::new();
    for p in plan {
        tpl.add_partition_offset(t.topic, p.partition, Offset::Offset(p.after))?;
    }
    // A member that left without saying so (killed, or a broker slow to
    // drop it) keeps the group from taking commits from outside until its
    // session times out: wait that long, not longer.
    // Brokers that refuse commits from outside the group for good (the
    // librdkafka mock cluster does once a group has existed) take them from
    // a member: join, commit, leave.
    let deadline = std::time::Instant::now() + MEMBER_TIMEOUT;
    loop {
        match c.commit(&tpl, CommitMode::Sync) {
            Ok(()) => break,
            Err(e) if is_member_error(&e) && std::time::Instant::now() < deadline => {
                if commit_as_member(t, &tpl).is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => return Err(e.into()),
        }
    }
    let back = c.committed_offsets(tpl, TIMEOUT)?;
    for p in plan {
        let got = back.find_partition(t.topic, p.partition).map(|e| e.offset());
        if got != Some(Offset::Offset(p.after)) {
            return Err(PlanError::Kafka(format!(
                "the broker did not keep offset {} for partition {} (it reports {got:?})",
                p.after, p.partition
            )));
        }
    }
    Ok(())
}
