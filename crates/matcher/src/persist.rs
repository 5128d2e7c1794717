//! Records to and from their stored form (`IdentityRecord` in identity.records.v1), and what a
//! reviewer is shown of a record.

use crate::ids;
use crate::index::{Index, NONE, NodeId, RETIRED};
use crate::profile::{Key, Name, Profile};
use crate::text;
use sluice_model::{IdentityRecord, PersonSummary, RecordName};

impl Index {
    /// The stored form of a record.
    pub fn record(&self, id: NodeId) -> IdentityRecord {
        let n = self.node(id);
        IdentityRecord {
            key: n.key.to_string(),
            enterprise_id: if n.epi == [0; 16] { String::new() } else { ids::format(&n.epi) },
            keys: n.keys().skip(1).map(str::to_owned).collect(),
            nhs_number: (n.nhs != 0).then(|| format!("{:010}", n.nhs)),
            names: n
                .names()
                .map(|(f, g, other)| RecordName {
                    family: self.names.get(f).to_owned(),
                    given: self.names.get(g).to_owned(),
                    other,
                })
                .collect(),
            birth_dates: n.dobs().map(|d| d as i32).collect(),
            sex: (n.sex != 0).then(|| char::from(n.sex).to_string()),
            postcodes: n.postcodes().map(text::postcode_text).collect(),
            addresses: n.addrs().map(|a| self.addr_text(a).to_owned()).collect(),
            not_same: n.not_same().iter().map(|o| self.node(*o).key.to_string()).collect(),
            linked: n.linked().iter().map(|o| self.node(*o).key.to_string()).collect(),
            merged_into: match n.merged_into() {
                NONE => None,
                m => Some(self.node(m).key.to_string()),
            },
            held: n.held(),
        }
    }

    /// What a reviewer is shown of a record and the rest of its enterprise id.
    pub fn summary(&self, id: NodeId) -> PersonSummary {
        let r = self.record(id);
        PersonSummary {
            record_keys: std::iter::once(r.key).chain(r.keys).collect(),
            nhs_number: r.nhs_number,
            names: r
                .names
                .iter()
                .map(|n| format!("{}, {}{}", n.family, n.given, if n.other { " (other)" } else { "" }))
                .collect(),
            birth_dates: r
                .birth_dates
                .iter()
                .map(|d| format!("{:04}-{:02}-{:02}", d / 10_000, d / 100 % 100, d % 100))
                .collect(),
            sex: r.sex,
            postcodes: r.postcodes,
            addresses: r.addresses,
        }
    }

    /// Rebuilds the index from stored records (in any order): values, keys, blocks and ids,
    /// with no clustering (each record keeps the enterprise id it was stored with).
    pub fn load(&mut self, records: impl IntoIterator<Item = IdentityRecord>) {
        let journalling = self.journalling();
        self.set_journalling(false);
        // decisions and merges name other records: resolved once every record is in
        type Later = (NodeId, Vec<String>, Vec<String>, Option<String>);
        let mut pending: Vec<Later> = Vec::new();
        for r in records {
            let id = match self.find_key_exact(&r.key) {
                Some(id) => id,
                None => self.push_node(&r.key),
            };
            let mut keys: Vec<Key> = r
                .keys
                .iter()
                .map(|k| Key {
                    key: k.clone(),
                    kind: "mrn",
                })
                .collect();
            if let Some(n) = &r.nhs_number {
                keys.push(Key {
                    key: format!("nhs|{n}"),
                    kind: "nhs_number",
                });
            }
            let profile = Profile {
                names: r
                    .names
                    .iter()
                    .map(|n| Name {
                        family: n.family.clone(),
                        given: n.given.clone(),
                        other: n.other,
                    })
                    .collect(),
                birth_dates: r.birth_dates.iter().map(|d| *d as u32).collect(),
                sex: r.sex.as_deref().and_then(|s| s.bytes().next()).unwrap_or(0),
                postcodes: r.postcodes.iter().map(|p| text::postcode(p)).collect(),
                addresses: r.addresses.clone(),
                nhs: r.nhs_number.as_deref().and_then(|n| n.parse().ok()),
            };
            // names in stored order: the first is the current one
            self.absorb(id, &keys, &profile);
            if let Some(epi) = ids::parse(&r.enterprise_id) {
                self.set_epi(id, epi);
            }
            if r.held {
                self.set_held(id, true);
            }
            if !r.not_same.is_empty() || !r.linked.is_empty() || r.merged_into.is_some() {
                pending.push((id, r.not_same, r.linked, r.merged_into));
            }
        }
        for (id, not_same, linked, merged_into) in pending {
            for k in not_same {
                if let Some(o) = self.find_key_exact(&k) {
                    self.add_not_same(id, o);
                }
            }
            for k in linked {
                if let Some(o) = self.find_key_exact(&k) {
                    self.add_linked(id, o);
                }
            }
            if let Some(m) = merged_into.and_then(|k| self.find_key_exact(&k)) {
                if self.node(id).epi != [0; 16] {
                    self.set_epi(id, [0; 16]);
                }
                let n = self.node_mut(id);
                n.flags |= RETIRED;
                n.more_mut().merged_into = m;
            }
        }
        self.take_dirty();
        self.set_journalling(journalling);
    }
}
