//! Audit records (`audit.events.v1`): every action and every view of patient data through an
//! API, with the authenticated actor ([`crate::auth::Caller`]) and the reason the caller gave.
//!
//! The services write them with the action they record (in the same transaction) or, for a
//! view, before the data is returned: a view whose audit record Kafka did not confirm is not
//! answered.

use crate::auth::Caller;
use sluice_model::AuditEvent;

/// What was acted on or looked at.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// `dead_letter`, `review_item` or `record`.
    pub kind: &'static str,
    pub id: &'a str,
}

/// An audit record of `action` by `caller` on `subject`, now.
pub fn event(service: &str, caller: &Caller, action: &str, subject: Subject<'_>, reason: &str, peer: Option<String>) -> AuditEvent {
    let at = crate::now_micros();
    AuditEvent {
        audit_id: sluice_model::ids::uuid_from(&[
            b"audit",
            service.as_bytes(),
            action.as_bytes(),
            subject.id.as_bytes(),
            caller.actor.as_bytes(),
            &at.to_be_bytes(),
        ]),
        at,
        service: service.to_owned(),
        action: action.to_owned(),
        subject_kind: subject.kind.to_owned(),
        subject_id: subject.id.to_owned(),
        actor: caller.actor.clone(),
        roles: caller.role_names(),
        authentication: caller.authentication.to_owned(),
        reason: reason.to_owned(),
        peer,
        target_topic: None,
        related_id: None,
    }
}

/// The reason a caller gives must say something: at least a few characters, at most 500.
pub fn valid_reason(reason: &str) -> bool {
    let r = reason.trim();
    r.chars().count() >= 3 && r.chars().count() <= 500
}
