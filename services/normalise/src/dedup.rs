//! Telling a resend from a new message, in one place.
//!
//! The rule: an input is skipped as a resend only when it is the same message as one already
//! normalised, that is the same identity (sender, control id, message type; for FHIR the
//! `Bundle.identifier`) *and* the same content digest, which together make the event id. The
//! same identity with another digest is a control id reused for different content: it becomes
//! its own event, flagged `control_id_reused`, counted and logged, and it never replaces or
//! hides the earlier one. Nothing is dropped silently: every skip is counted and logged with the
//! event id it matched (never with patient data).
//!
//! The state is every event id normalise has emitted, with the identity and digest it came from,
//! kept in the compacted `normalise.seen.v1` (written in the same transaction as the events) and
//! rebuilt from it at start-up from committed work only: see [`Seen::trusts`].

use sluice_model::SeenEvent;
use std::collections::{HashMap, HashSet};

/// Event ids already emitted, and the content digests seen under each message identity.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    events: HashSet<String>,
    digests: HashMap<String, HashSet<String>>,
}

/// What to do with one event made from an input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Same identity and same content as an event already emitted: skip it.
    Resend,
    /// Never seen: emit it.
    New,
    /// Same identity as an earlier message with different content: emit it, flagged.
    ControlIdReused,
}

impl Seen {
    pub fn insert(&mut self, event_id: &str, identity: &str, digest: &str) {
        self.events.insert(event_id.to_owned());
        if !identity.is_empty() && !digest.is_empty() {
            self.digests.entry(identity.to_owned()).or_default().insert(digest.to_owned());
        }
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    fn verdict_here(&self, event_id: &str, identity: &str, digest: &str) -> Verdict {
        if self.events.contains(event_id) {
            Verdict::Resend
        } else if !identity.is_empty() && self.digests.get(identity).is_some_and(|d| d.iter().any(|x| x != digest)) {
            Verdict::ControlIdReused
        } else {
            Verdict::New
        }
    }

    /// The verdict against committed state and the open transaction's state together.
    pub fn verdict(&self, pending: &Seen, event_id: &str, identity: &str, digest: &str) -> Verdict {
        match (
            self.verdict_here(event_id, identity, digest),
            pending.verdict_here(event_id, identity, digest),
        ) {
            (Verdict::Resend, _) | (_, Verdict::Resend) => Verdict::Resend,
            (Verdict::ControlIdReused, _) | (_, Verdict::ControlIdReused) => Verdict::ControlIdReused,
            _ => Verdict::New,
        }
    }

    pub fn absorb(&mut self, other: Seen) {
        self.events.extend(other.events);
        for (identity, digests) in other.digests {
            self.digests.entry(identity).or_default().extend(digests);
        }
    }

    /// Whether a `seen` record read back at start-up is committed work. Its raw record's offset
    /// must be below the consumer group's committed offset for that raw partition: the event and
    /// the input's offset were committed in one transaction, so a record at or past the committed
    /// offset came from a transaction that aborted (a broker that does not hide aborted records
    /// from `read_committed` readers would otherwise make normalise skip messages whose events
    /// were never committed). Records written before the raw position was kept are trusted.
    pub fn trusts(record: &SeenEvent, committed: &HashMap<(String, i32), i64>) -> bool {
        if record.raw_topic.is_empty() || record.raw_offset < 0 {
            return true;
        }
        committed
            .get(&(record.raw_topic.clone(), record.raw_partition))
            .is_some_and(|&next| record.raw_offset < next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resend_only_when_identity_and_content_match() {
        let mut seen = Seen::default();
        let pending = Seen::default();
        seen.insert("e1", "id-a", "d1");
        assert_eq!(seen.verdict(&pending, "e1", "id-a", "d1"), Verdict::Resend);
        assert_eq!(seen.verdict(&pending, "e2", "id-a", "d2"), Verdict::ControlIdReused);
        assert_eq!(seen.verdict(&pending, "e3", "id-b", "d1"), Verdict::New);
        // no identity of its own (a FHIR body without an identifier): only content can match
        assert_eq!(seen.verdict(&pending, "e4", "", "d9"), Verdict::New);
    }

    #[test]
    fn the_open_transaction_counts_too() {
        let seen = Seen::default();
        let mut pending = Seen::default();
        pending.insert("e1", "id-a", "d1");
        assert_eq!(seen.verdict(&pending, "e1", "id-a", "d1"), Verdict::Resend);
        assert_eq!(seen.verdict(&pending, "e2", "id-a", "d2"), Verdict::ControlIdReused);
    }

    #[test]
    fn only_committed_work_is_trusted() {
        let committed: HashMap<(String, i32), i64> = [(("hl7v2.raw.v1".to_owned(), 0), 10)].into();
        let at = |offset: i64, partition: i32| SeenEvent {
            raw_topic: "hl7v2.raw.v1".into(),
            raw_partition: partition,
            raw_offset: offset,
            ..Default::default()
        };
        assert!(Seen::trusts(&at(9, 0), &committed));
        assert!(
            !Seen::trusts(&at(10, 0), &committed),
            "at the committed offset: its transaction aborted"
        );
        assert!(!Seen::trusts(&at(3, 1), &committed), "a partition with nothing committed");
        assert!(
            Seen::trusts(&SeenEvent::default(), &committed),
            "records from before positions were kept"
        );
    }
}
