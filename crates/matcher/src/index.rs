//! The index: source records, the keys and blocks that find them, and the enterprise ids
//! they form.
//!
//! A *record* is what one source system knows as one patient (its local record number and
//! authority, or an NHS number when a message carries nothing else). Every message about a
//! record adds what it says (names, aliases, birth dates, postcodes, addresses: union, bounded)
//! and never removes anything, so a record's state depends only on its own messages, which
//! arrive in order on one partition. An *enterprise id* is a cluster of records, recomputed
//! around a record whenever it changes (see [`crate::cluster`]); its id is a function of its
//! members, so the clusters and their ids depend only on the records and the reviewers'
//! decisions, never on the order in which partitions interleave (ADR 0004).
//!
//! Memory: a record is one fixed-size [`Node`] plus its key; names are interned, address lines
//! live in one arena, postcodes are packed in 64 bits, and every lookup structure (keys, NHS
//! numbers, enterprise ids, blocks) is one hash map from a 64-bit hash to the records there.
//!
//! Every change made while processing is journalled, so an aborted Kafka transaction can be
//! undone exactly ([`Index::abort`]); [`Index::commit`] forgets the journal.

use crate::profile::{Key, MAX_VALUES, Profile};
use crate::text;
use crate::weights::Weights;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::Arc;

pub type NodeId = u32;
pub(crate) const NONE: u32 = u32::MAX;
pub(crate) const RETIRED: u8 = 1;
pub(crate) const HELD: u8 = 2;

/// Keys of the posting maps are already hashes; 32-bit ones are spread over the 64 bits
/// hashbrown looks at.
#[derive(Default)]
pub(crate) struct PassHasher(u64);

impl Hasher for PassHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u32(&mut self, v: u32) {
        self.0 = u64::from(v).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type Pass = BuildHasherDefault<PassHasher>;

/// The records under one hash: a key, an NHS number, an enterprise id or a block.
#[derive(Debug, Clone)]
pub(crate) enum Posting {
    One(NodeId),
    Many(Box<[NodeId]>),
    /// A block that grew past `max_block`: too common a value to find candidates with.
    Overflow,
}

impl Posting {
    pub(crate) fn ids(&self) -> &[NodeId] {
        match self {
            Posting::One(x) => std::slice::from_ref(x),
            Posting::Many(v) => v,
            Posting::Overflow => &[],
        }
    }
}

const OVERFLOW: u32 = u32::MAX - 1;

/// Every lookup structure, compact: one map per kind (keys, NHS numbers, enterprise ids,
/// blocks) from a 32-bit hash to the first record there (9 bytes a slot), and a side map for
/// the few hashes with more than one record. A 32-bit hash can collide: every lookup checks the
/// records it finds (keys, NHS numbers, ids), and a block collision only adds a candidate.
#[derive(Default)]
pub(crate) struct Postings {
    one: [HashMap<u32, u32, Pass>; 4],
    many: [HashMap<u32, Box<[u32]>, Pass>; 4],
}

fn split(h: u64) -> (usize, u32) {
    (((h >> 56) as usize).min(3), h as u32)
}

impl Postings {
    pub(crate) fn get(&self, h: u64) -> Option<Posting> {
        let (m, k) = split(h);
        let first = *self.one[m].get(&k)?;
        Some(if first == OVERFLOW {
            Posting::Overflow
        } else if let Some(v) = self.many[m].get(&k) {
            Posting::Many(v.clone())
        } else {
            Posting::One(first)
        })
    }

    pub(crate) fn ids(&self, h: u64) -> &[NodeId] {
        let (m, k) = split(h);
        if let Some(v) = self.many[m].get(&k) {
            return v;
        }
        match self.one[m].get(&k) {
            Some(x) if *x != OVERFLOW => std::slice::from_ref(x),
            _ => &[],
        }
    }

    pub(crate) fn set(&mut self, h: u64, p: Option<Posting>) {
        let (m, k) = split(h);
        match p {
            None => {
                self.one[m].remove(&k);
                self.many[m].remove(&k);
            }
            Some(Posting::One(x)) => {
                self.one[m].insert(k, x);
                self.many[m].remove(&k);
            }
            Some(Posting::Many(v)) => {
                self.one[m].insert(k, v.first().copied().unwrap_or(OVERFLOW));
                self.many[m].insert(k, v);
            }
            Some(Posting::Overflow) => {
                self.one[m].insert(k, OVERFLOW);
                self.many[m].remove(&k);
            }
        }
    }

    pub(crate) fn approx_bytes(&self) -> usize {
        self.one.iter().map(|m| m.capacity() * 9).sum::<usize>()
            + self
                .many
                .iter()
                .map(|m| m.capacity() * 25 + m.values().map(|v| v.len() * 4).sum::<usize>())
                .sum::<usize>()
    }
}

/// What kind of thing a posting hash is of.
#[derive(Clone, Copy)]
pub(crate) enum Of {
    Key,
    Nhs,
    Epi,
    Block(u8),
}

/// A posting hash: the map (top byte) and 32 bits of hash.
pub(crate) fn hash_of(of: Of, parts: &[&[u8]]) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    let map: u64 = match of {
        Of::Key => 0,
        Of::Nhs => 1,
        Of::Epi => 2,
        Of::Block(b) => {
            (10 + b).hash(&mut h);
            3
        }
    };
    for p in parts {
        p.hash(&mut h);
    }
    (map << 56) | u64::from(h.finish() as u32)
}

/// One source record. Fixed size; rare extras live in `more`.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub key: Box<str>,
    /// Its enterprise id (16 bytes of the UUID); all zero before the first clustering.
    pub epi: [u8; 16],
    pub nhs: u64,
    pub postcode: u64,
    /// Address line: offset and length in the arena (length 0: none).
    pub addr: (u32, u16),
    pub family: u32,
    pub given: u32,
    pub dob: u32,
    pub sex: u8,
    pub flags: u8,
    pub more: Option<Box<More>>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct More {
    /// Further local keys (a second MRN, the keys of records merged into this one).
    pub keys: Vec<Box<str>>,
    /// Further names: (family, given, other name).
    pub names: Vec<(u32, u32, bool)>,
    pub dobs: Vec<u32>,
    pub postcodes: Vec<u64>,
    pub addrs: Vec<(u32, u16)>,
    /// Records a reviewer (or an A37 unlink) said are not this person.
    pub not_same: Vec<NodeId>,
    /// Records a reviewer said are this person.
    pub linked: Vec<NodeId>,
    /// The record this one was merged into (MRG), or [`NONE`].
    pub merged_into: NodeId,
}

impl Node {
    fn new(key: &str) -> Node {
        Node {
            key: key.into(),
            epi: [0; 16],
            nhs: 0,
            postcode: 0,
            addr: (0, 0),
            family: 0,
            given: 0,
            dob: 0,
            sex: 0,
            flags: 0,
            more: None,
        }
    }

    pub(crate) fn live(&self) -> bool {
        self.flags & RETIRED == 0
    }

    pub(crate) fn held(&self) -> bool {
        self.flags & HELD != 0
    }

    pub(crate) fn more_mut(&mut self) -> &mut More {
        self.more.get_or_insert_with(|| {
            Box::new(More {
                merged_into: NONE,
                ..Default::default()
            })
        })
    }

    pub(crate) fn keys(&self) -> impl Iterator<Item = &str> {
        std::iter::once(&*self.key).chain(self.more.iter().flat_map(|m| m.keys.iter().map(|k| &**k)))
    }

    pub(crate) fn names(&self) -> impl Iterator<Item = (u32, u32, bool)> + '_ {
        let first = (self.family != 0 || self.given != 0).then_some((self.family, self.given, false));
        first.into_iter().chain(self.more.iter().flat_map(|m| m.names.iter().copied()))
    }

    pub(crate) fn dobs(&self) -> impl Iterator<Item = u32> + '_ {
        (self.dob != 0)
            .then_some(self.dob)
            .into_iter()
            .chain(self.more.iter().flat_map(|m| m.dobs.iter().copied()))
    }

    pub(crate) fn postcodes(&self) -> impl Iterator<Item = u64> + '_ {
        (self.postcode != 0)
            .then_some(self.postcode)
            .into_iter()
            .chain(self.more.iter().flat_map(|m| m.postcodes.iter().copied()))
    }

    pub(crate) fn addrs(&self) -> impl Iterator<Item = (u32, u16)> + '_ {
        (self.addr.1 != 0)
            .then_some(self.addr)
            .into_iter()
            .chain(self.more.iter().flat_map(|m| m.addrs.iter().copied()))
    }

    pub(crate) fn not_same(&self) -> &[NodeId] {
        self.more.as_ref().map(|m| m.not_same.as_slice()).unwrap_or(&[])
    }

    pub(crate) fn linked(&self) -> &[NodeId] {
        self.more.as_ref().map(|m| m.linked.as_slice()).unwrap_or(&[])
    }

    pub(crate) fn merged_into(&self) -> NodeId {
        self.more.as_ref().map(|m| m.merged_into).unwrap_or(NONE)
    }
}

/// Names, each stored once, with its Soundex code.
#[derive(Default)]
pub(crate) struct Interner {
    ids: HashMap<Arc<str>, u32>,
    strs: Vec<Arc<str>>,
    sound: Vec<u16>,
}

impl Interner {
    fn new() -> Interner {
        let mut i = Interner::default();
        i.intern("");
        i
    }

    pub(crate) fn intern(&mut self, s: &str) -> u32 {
        if let Some(id) = self.ids.get(s) {
            return *id;
        }
        let id = self.strs.len() as u32;
        let a: Arc<str> = s.into();
        self.ids.insert(a.clone(), id);
        self.strs.push(a);
        self.sound.push(text::soundex(s));
        id
    }

    pub(crate) fn get(&self, id: u32) -> &str {
        self.strs.get(id as usize).map(|s| &**s).unwrap_or("")
    }

    pub(crate) fn sound(&self, id: u32) -> u16 {
        self.sound.get(id as usize).copied().unwrap_or(0)
    }
}

enum Undo {
    Pushed,
    Node(NodeId, Box<Node>),
    Posting(u64, Option<Posting>),
    Arena(usize),
}

/// See the module documentation.
pub struct Index {
    pub(crate) weights: Arc<Weights>,
    pub(crate) nodes: Vec<Node>,
    pub(crate) postings: Postings,
    pub(crate) names: Interner,
    pub(crate) arena: String,
    journal: Vec<Undo>,
    saved: HashSet<NodeId>,
    /// Whether changes are journalled (off while loading).
    journalling: bool,
    dirty: BTreeSet<NodeId>,
}

/// The blocking rules: records that share a block are compared.
pub const BLOCKS: [&str; 3] = [
    "birth_date+family_name_soundex",
    "birth_date+given_name_soundex",
    "birth_year+family_name_soundex+given_name_soundex",
];

impl Index {
    pub fn new(weights: Arc<Weights>) -> Index {
        Index {
            weights,
            nodes: Vec::new(),
            postings: Postings::default(),
            names: Interner::new(),
            arena: String::new(),
            journal: Vec::new(),
            saved: HashSet::new(),
            journalling: true,
            dirty: BTreeSet::new(),
        }
    }

    pub fn weights(&self) -> &Weights {
        &self.weights
    }

    /// Records in the index, merged ones included.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Turns the undo journal off (bulk loading) or on.
    pub fn set_journalling(&mut self, on: bool) {
        self.journalling = on;
    }

    pub(crate) fn journalling(&self) -> bool {
        self.journalling
    }

    /// The record whose own key is `key` (merged or not).
    pub(crate) fn find_key_exact(&self, key: &str) -> Option<NodeId> {
        let h = hash_of(Of::Key, &[key.as_bytes()]);
        self.posting(h).iter().copied().find(|id| &*self.node(*id).key == key)
    }

    /// The open transaction committed: its changes stay.
    pub fn commit(&mut self) {
        self.journal.clear();
        self.saved.clear();
    }

    /// The open transaction aborted: every change since the last commit is undone.
    pub fn abort(&mut self) {
        let all = std::mem::take(&mut self.journal);
        self.journal_undo(all);
        self.saved.clear();
        self.dirty.clear();
    }

    /// Records changed since the last call, by key order of their ids.
    pub fn take_dirty(&mut self) -> Vec<NodeId> {
        let len = self.nodes.len() as NodeId;
        // a record added and rolled back is gone
        std::mem::take(&mut self.dirty).into_iter().filter(|n| *n < len).collect()
    }

    pub(crate) fn node(&self, id: NodeId) -> &Node {
        // ids come from this index's own postings and nodes
        #[allow(clippy::indexing_slicing)]
        &self.nodes[id as usize]
    }

    /// A record to change: its previous version is journalled once per transaction.
    pub(crate) fn node_mut(&mut self, id: NodeId) -> &mut Node {
        self.dirty.insert(id);
        if self.journalling && self.saved.insert(id) {
            let before = Box::new(self.node(id).clone());
            self.journal.push(Undo::Node(id, before));
        }
        #[allow(clippy::indexing_slicing)]
        &mut self.nodes[id as usize]
    }

    pub(crate) fn push_node(&mut self, key: &str) -> NodeId {
        let id = self.nodes.len() as NodeId;
        self.nodes.push(Node::new(key));
        if self.journalling {
            self.journal.push(Undo::Pushed);
            self.saved.insert(id);
        }
        self.dirty.insert(id);
        self.post(hash_of(Of::Key, &[key.as_bytes()]), id, usize::MAX);
        id
    }

    fn save_posting(&mut self, h: u64) {
        if self.journalling {
            let before = self.postings.get(h);
            self.journal.push(Undo::Posting(h, before));
        }
    }

    /// Adds a record to a posting; a posting longer than `limit` becomes [`Posting::Overflow`].
    pub(crate) fn post(&mut self, h: u64, id: NodeId, limit: usize) {
        let next = match self.postings.get(h) {
            None => Posting::One(id),
            Some(Posting::Overflow) => return,
            Some(p) if p.ids().contains(&id) => return,
            Some(p) if p.ids().len() >= limit => Posting::Overflow,
            Some(p) => {
                let mut v = p.ids().to_vec();
                v.push(id);
                Posting::Many(v.into_boxed_slice())
            }
        };
        self.save_posting(h);
        self.postings.set(h, Some(next));
    }

    pub(crate) fn unpost(&mut self, h: u64, id: NodeId) {
        let next = match self.postings.get(h) {
            Some(p @ (Posting::One(_) | Posting::Many(_))) if p.ids().contains(&id) => {
                let v: Vec<NodeId> = p.ids().iter().copied().filter(|x| *x != id).collect();
                match v.as_slice() {
                    [] => None,
                    [one] => Some(Posting::One(*one)),
                    _ => Some(Posting::Many(v.into_boxed_slice())),
                }
            }
            _ => return,
        };
        self.save_posting(h);
        self.postings.set(h, next);
    }

    pub(crate) fn posting(&self, h: u64) -> &[NodeId] {
        self.postings.ids(h)
    }

    /// The live record that holds `key` (following merges).
    pub fn find_key(&self, key: &str) -> Option<NodeId> {
        let h = hash_of(Of::Key, &[key.as_bytes()]);
        let id = *self.posting(h).iter().find(|id| self.node(**id).keys().any(|k| k == key))?;
        Some(self.follow(id))
    }

    /// The record a merged record now lives on.
    pub(crate) fn follow(&self, mut id: NodeId) -> NodeId {
        for _ in 0..64 {
            match self.node(id).merged_into() {
                NONE => break,
                next => id = next,
            }
        }
        id
    }

    /// Live records with this NHS number.
    pub(crate) fn with_nhs(&self, nhs: u64) -> Vec<NodeId> {
        if nhs == 0 {
            return Vec::new();
        }
        self.posting(hash_of(Of::Nhs, &[&nhs.to_be_bytes()]))
            .iter()
            .copied()
            .filter(|id| self.node(*id).live() && self.node(*id).nhs == nhs)
            .collect()
    }

    /// Live records of an enterprise id.
    pub(crate) fn members(&self, epi: &[u8; 16]) -> Vec<NodeId> {
        if *epi == [0; 16] {
            return Vec::new();
        }
        self.posting(hash_of(Of::Epi, &[epi]))
            .iter()
            .copied()
            .filter(|id| self.node(*id).live() && self.node(*id).epi == *epi)
            .collect()
    }

    pub(crate) fn set_epi(&mut self, id: NodeId, epi: [u8; 16]) {
        let old = self.node(id).epi;
        if old == epi {
            return;
        }
        if old != [0; 16] {
            self.unpost(hash_of(Of::Epi, &[&old]), id);
        }
        self.node_mut(id).epi = epi;
        if epi != [0; 16] {
            self.post(hash_of(Of::Epi, &[&epi]), id, usize::MAX);
        }
    }

    fn blocks_of(&self, family: u32, given: u32, dob: u32) -> [Option<u64>; 3] {
        let (fs, gs) = (self.names.sound(family), self.names.sound(given));
        [
            (dob != 0 && fs != 0).then(|| hash_of(Of::Block(0), &[&dob.to_be_bytes(), &fs.to_be_bytes()])),
            (dob != 0 && gs != 0).then(|| hash_of(Of::Block(1), &[&dob.to_be_bytes(), &gs.to_be_bytes()])),
            (dob != 0 && fs != 0 && gs != 0)
                .then(|| hash_of(Of::Block(2), &[&(dob / 10_000).to_be_bytes(), &fs.to_be_bytes(), &gs.to_be_bytes()])),
        ]
    }

    /// Every block hash of a record.
    fn block_hashes(&self, id: NodeId) -> Vec<u64> {
        let n = self.node(id);
        let mut out = Vec::new();
        for (family, given, _) in n.names() {
            for dob in n.dobs() {
                out.extend(self.blocks_of(family, given, dob).into_iter().flatten());
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Live records sharing a usable block with `id`, in key order (never `id` itself).
    pub(crate) fn candidates(&self, id: NodeId) -> Vec<NodeId> {
        let mut out: Vec<NodeId> = Vec::new();
        for h in self.block_hashes(id) {
            out.extend(self.posting(h).iter().copied().filter(|c| *c != id && self.node(*c).live()));
        }
        out.sort_unstable();
        out.dedup();
        out.sort_by(|a, b| self.node(*a).key.cmp(&self.node(*b).key));
        out
    }

    /// Adds what a message says to a record (union, at most [`MAX_VALUES`] of each), and
    /// posts its new keys and blocks.
    pub(crate) fn absorb(&mut self, id: NodeId, keys: &[Key], p: &Profile) {
        let before: HashSet<u64> = self.block_hashes(id).into_iter().collect();
        for k in keys.iter().filter(|k| !k.is_nhs()) {
            if !self.node(id).keys().any(|x| x == k.key) {
                self.node_mut(id).more_mut().keys.push(k.key.as_str().into());
                self.post(hash_of(Of::Key, &[k.key.as_bytes()]), id, usize::MAX);
            }
        }
        if let Some(nhs) = p.nhs
            && self.node(id).nhs == 0
        {
            self.node_mut(id).nhs = nhs;
            self.post(hash_of(Of::Nhs, &[&nhs.to_be_bytes()]), id, usize::MAX);
        }
        for name in &p.names {
            let (f, g) = (self.names.intern(&name.family), self.names.intern(&name.given));
            if self.node(id).names().any(|(a, b, _)| a == f && b == g) {
                continue;
            }
            let n = self.node_mut(id);
            if n.family == 0 && n.given == 0 && !name.other {
                (n.family, n.given) = (f, g);
            } else if n.more.as_ref().is_none_or(|m| m.names.len() < MAX_VALUES) {
                n.more_mut().names.push((f, g, name.other));
            }
        }
        for d in &p.birth_dates {
            if self.node(id).dobs().any(|x| x == *d) {
                continue;
            }
            let n = self.node_mut(id);
            if n.dob == 0 {
                n.dob = *d;
            } else if n.more.as_ref().is_none_or(|m| m.dobs.len() < MAX_VALUES) {
                n.more_mut().dobs.push(*d);
            }
        }
        if p.sex != 0 && self.node(id).sex == 0 {
            self.node_mut(id).sex = p.sex;
        }
        for pc in &p.postcodes {
            if self.node(id).postcodes().any(|x| x == *pc) {
                continue;
            }
            let n = self.node_mut(id);
            if n.postcode == 0 {
                n.postcode = *pc;
            } else if n.more.as_ref().is_none_or(|m| m.postcodes.len() < MAX_VALUES) {
                n.more_mut().postcodes.push(*pc);
            }
        }
        for line in &p.addresses {
            if self.node(id).addrs().any(|a| self.addr_text(a) == line) {
                continue;
            }
            if self.node(id).more.as_ref().is_some_and(|m| m.addrs.len() >= MAX_VALUES) {
                continue;
            }
            let span = self.store_addr(line);
            let n = self.node_mut(id);
            if n.addr.1 == 0 {
                n.addr = span;
            } else {
                n.more_mut().addrs.push(span);
            }
        }
        let limit = self.weights.file.max_block;
        for h in self.block_hashes(id) {
            if !before.contains(&h) {
                self.post(h, id, limit);
            }
        }
    }

    fn store_addr(&mut self, line: &str) -> (u32, u16) {
        let line = &line[..line.len().min(200)];
        if self.journalling {
            self.journal.push(Undo::Arena(self.arena.len()));
        }
        let at = self.arena.len() as u32;
        self.arena.push_str(line);
        (at, line.len() as u16)
    }

    pub(crate) fn addr_text(&self, (at, len): (u32, u16)) -> &str {
        self.arena.get(at as usize..at as usize + len as usize).unwrap_or("")
    }

    /// Marks a record as the subject of an open review item (its messages are held) or not.
    pub fn set_held(&mut self, id: NodeId, held: bool) {
        if self.node(id).held() != held {
            let n = self.node_mut(id);
            n.flags = if held { n.flags | HELD } else { n.flags & !HELD };
        }
    }

    pub fn is_held(&self, id: NodeId) -> bool {
        self.node(id).held()
    }

    /// The source key of a record.
    pub fn key_of(&self, id: NodeId) -> &str {
        &self.node(id).key
    }

    /// The enterprise id of a record.
    pub fn epi_of(&self, id: NodeId) -> String {
        crate::ids::format(&self.node(id).epi)
    }

    /// The live records of an enterprise id, in key order.
    pub fn records_of(&self, epi: &str) -> Vec<NodeId> {
        let Some(bytes) = crate::ids::parse(epi) else {
            return Vec::new();
        };
        let mut m = self.members(&bytes);
        m.sort_by(|a, b| self.node(*a).key.cmp(&self.node(*b).key));
        m
    }

    /// Approximate heap and table bytes held by the index (for the scale benchmark).
    pub fn approx_bytes(&self) -> usize {
        let nodes = self.nodes.capacity() * std::mem::size_of::<Node>()
            + self
                .nodes
                .iter()
                .map(|n| n.key.len() + n.more.as_ref().map_or(0, |_| 160))
                .sum::<usize>();
        let postings = self.postings.approx_bytes();
        nodes + postings + self.arena.capacity() + self.names.strs.iter().map(|s| s.len() + 48).sum::<usize>()
    }
}

impl Index {
    /// Adds a record without clustering it (for estimating weights and building benchmarks).
    pub fn insert_record(&mut self, keys: &[Key], profile: &Profile) -> Option<NodeId> {
        let first = keys.iter().find(|k| !k.is_nhs()).or(keys.first())?;
        let id = match self.find_key(&first.key) {
            Some(id) => id,
            None => self.push_node(&first.key),
        };
        self.absorb(id, keys, profile);
        self.take_dirty();
        Some(id)
    }
}

impl Index {
    /// A point inside the open transaction to roll back to (for one input whose changes must
    /// be undone while the rest of the transaction stays).
    pub fn savepoint(&mut self) -> usize {
        // changes after this point journal the state they start from again
        self.saved.clear();
        self.journal.len()
    }

    /// Undoes every change since [`Index::savepoint`] returned `at`.
    pub fn rollback(&mut self, at: usize) {
        let tail = self.journal.split_off(at.min(self.journal.len()));
        self.journal_undo(tail);
        self.saved.clear();
    }

    fn journal_undo(&mut self, mut tail: Vec<Undo>) {
        while let Some(u) = tail.pop() {
            match u {
                Undo::Pushed => {
                    self.nodes.pop();
                }
                Undo::Node(id, node) => {
                    if let Some(n) = self.nodes.get_mut(id as usize) {
                        *n = *node;
                    }
                }
                Undo::Posting(h, p) => self.postings.set(h, p),
                Undo::Arena(len) => self.arena.truncate(len),
            }
        }
    }
}
