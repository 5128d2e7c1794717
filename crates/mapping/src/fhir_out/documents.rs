//! DocumentReference.

use super::datatypes::{entity_identifier, fhir_time, push_extension};
use super::new_resource;
use serde_json::{Map, Value, json};
use sluice_model::{ClinicalEvent, Document, Observation};

/// Standard base64 (RFC 4648, padded), for putting text content into an Attachment.
pub(super) fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(A[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// An Attachment from an OBX value: ED (`source^type^subtype^encoding^data`) keeps its bytes
/// as sent when they are base64, text values become `text/plain` content.
pub(super) fn attachment(o: &Observation) -> Option<Value> {
    let value = o.values.iter().filter(|v| !v.is_empty()).cloned().collect::<Vec<_>>().join("\n");
    if value.is_empty() {
        return None;
    }
    if o.value_type.as_deref() == Some("ED") {
        let parts: Vec<&str> = value.split('^').collect();
        let (kind, subtype, encoding, data) = (parts.get(1)?, parts.get(2).unwrap_or(&""), parts.get(3)?, parts.get(4)?);
        let is_base64 = !data.is_empty()
            && data
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'\n' | b'\r'));
        if !encoding.eq_ignore_ascii_case("base64") || !is_base64 {
            return None;
        }
        let content_type = match (kind.to_ascii_lowercase().as_str(), subtype.to_ascii_lowercase().as_str()) {
            ("application" | "ap", "pdf") => "application/pdf".to_owned(),
            ("text" | "tx", "rtf") => "text/rtf".to_owned(),
            ("image" | "im", s) if !s.is_empty() => format!("image/{s}"),
            (k, s) if !k.is_empty() && !s.is_empty() => format!("{k}/{s}"),
            _ => "application/octet-stream".to_owned(),
        };
        return Some(json!({"contentType": content_type, "data": data.replace(['\r', '\n'], "")}));
    }
    Some(json!({"contentType": "text/plain; charset=utf-8", "data": base64(value.as_bytes())}))
}

pub(super) fn document_reference(ev: &ClinicalEvent, d: &Document, subject: Option<&Value>) -> Map<String, Value> {
    let mut r = new_resource("DocumentReference", ev, 0);
    match (&d.unique_entity, &d.unique_id) {
        (Some(e), _) => {
            r.insert("masterIdentifier".into(), entity_identifier(e));
        }
        (None, Some(id)) => {
            r.insert("masterIdentifier".into(), json!({"value": id}));
        }
        _ => {}
    }
    // MDM T11 cancels a document; otherwise this is the current version
    let status = if ev.trigger_event == "T11" { "entered-in-error" } else { "current" };
    r.insert("status".into(), json!(status));
    if let Some(doc_status) = d.completion_status.as_deref().and_then(|c| match c {
        "LA" | "AU" => Some("final"),
        "DO" | "DI" | "IP" | "IN" | "PA" => Some("preliminary"),
        "CA" => Some("entered-in-error"),
        _ => None,
    }) {
        r.insert("docStatus".into(), json!(doc_status));
    }
    if let Some(t) = &d.document_type {
        r.insert(
            "type".into(),
            json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0270", "code": t}], "text": t}),
        );
    }
    if let Some(s) = subject {
        r.insert("subject".into(), s.clone());
    }
    // `date` is an instant: only a time with seconds and a zone qualifies
    if let Some(Ok(v)) = d.activity_time.as_ref().map(fhir_time)
        && v.contains('T')
    {
        r.insert("date".into(), json!(v));
    } else if let Some(t) = &d.activity_time {
        push_extension(&mut r, "date", &t.value);
    }
    if let Some(parent) = &d.parent_id {
        let code = match ev.trigger_event.as_str() {
            "T05" | "T06" => "appends",
            _ => "replaces",
        };
        let target = d.parent_entity.as_ref().map_or_else(|| json!({"value": parent}), entity_identifier);
        r.insert("relatesTo".into(), json!([{"code": code, "target": {"identifier": target}}]));
    }
    let mut content: Vec<Value> = ev
        .observations
        .iter()
        .filter_map(attachment)
        .map(|a| json!({"attachment": a}))
        .collect();
    if content.is_empty() {
        // content is required: name the document even when its body is not in the message
        content.push(json!({"attachment": {"title": d.file_name.clone().unwrap_or_else(|| "content not in the message".into())}}));
    } else if let Some(name) = &d.file_name
        && let Some(a) = content[0].get_mut("attachment").and_then(Value::as_object_mut)
    {
        a.insert("title".into(), json!(name));
    }
    r.insert("content".into(), Value::Array(content));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }
}
