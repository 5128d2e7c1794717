//! What bounds ingest under abuse: a global memory budget for buffered frames and bodies,
//! connection limits overall and per peer address, and the process's file-descriptor limit.
//!
//! Every refusal is answered (MLLP `AR` 207, HTTP `503` with `Retry-After`) where the protocol
//! allows, and counted in `sluice_ingest_refusals_total` by bounded reason: a sender is never
//! closed on silently.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

/// Budget granularity: reservations are made in blocks of this many bytes.
const BLOCK: usize = 4096;

/// Bytes that connections may hold buffered at once, across the whole process.
#[derive(Clone, Debug)]
pub struct Budget {
    sem: Arc<Semaphore>,
    blocks: usize,
}

impl Budget {
    pub fn new(bytes: usize) -> Budget {
        let blocks = bytes.div_ceil(BLOCK).clamp(1, Semaphore::MAX_PERMITS);
        Budget {
            sem: Arc::new(Semaphore::new(blocks)),
            blocks,
        }
    }

    /// Bytes not reserved by anyone now.
    pub fn available(&self) -> usize {
        self.sem.available_permits() * BLOCK
    }

    pub fn total(&self) -> usize {
        self.blocks * BLOCK
    }

    pub fn reservation(&self) -> Reservation {
        Reservation {
            budget: self.clone(),
            held: None,
        }
    }
}

/// One connection's or request's share of the [`Budget`], released when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Budget,
    held: Option<OwnedSemaphorePermit>,
}

impl Reservation {
    pub fn bytes(&self) -> usize {
        self.held.as_ref().map_or(0, |p| p.num_permits() * BLOCK)
    }

    /// Grows the reservation to cover `bytes`; false when the budget cannot cover it now.
    pub fn cover(&mut self, bytes: usize) -> bool {
        let want = bytes.div_ceil(BLOCK);
        let have = self.held.as_ref().map_or(0, |p| p.num_permits());
        if want <= have {
            return true;
        }
        let Ok(more) = u32::try_from(want - have) else { return false };
        match self.budget.sem.clone().try_acquire_many_owned(more) {
            Ok(p) => {
                match self.held.as_mut() {
                    Some(h) => h.merge(p),
                    None => self.held = Some(p),
                }
                true
            }
            Err(TryAcquireError::NoPermits | TryAcquireError::Closed) => false,
        }
    }

    /// Gives back what is held beyond `bytes`.
    pub fn shrink_to(&mut self, bytes: usize) {
        let keep = bytes.div_ceil(BLOCK);
        if let Some(h) = self.held.as_mut() {
            let have = h.num_permits();
            if have > keep {
                drop(h.split(have - keep));
            }
            if keep == 0 {
                self.held = None;
            }
        }
    }
}

/// Open connections per peer address, so one address cannot take every slot.
#[derive(Clone, Debug, Default)]
pub struct PeerLimits {
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
    per_peer: usize,
}

/// A counted connection slot of one peer, given back when dropped.
#[derive(Debug)]
pub struct PeerSlot {
    limits: PeerLimits,
    ip: IpAddr,
}

impl PeerLimits {
    pub fn new(per_peer: usize) -> PeerLimits {
        PeerLimits {
            open: Arc::default(),
            per_peer: per_peer.max(1),
        }
    }

    /// A slot for `ip`, or `None` when it has as many connections open as it may.
    pub fn acquire(&self, ip: IpAddr) -> Option<PeerSlot> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(ip).or_default();
        if *n >= self.per_peer {
            return None;
        }
        *n += 1;
        Some(PeerSlot { limits: self.clone(), ip })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// The process's open-file limit (soft) and how many descriptors are open now, from `/proc`
/// (Linux); `None` where that cannot be read.
pub fn file_descriptors() -> Option<(u64, u64)> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()?;
    let open = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    Some((soft, open))
}

/// Raises the soft open-file limit to the hard one (what servers do at start) and checks that
/// the connections configured fit in it, with room for Kafka and the HTTP endpoints.
pub fn check_file_descriptors(connections: usize) -> Result<u64, String> {
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::debug!(error = %e, "could not raise the open-file limit");
    }
    let (soft, _) = file_descriptors().ok_or("file-descriptor limit unreadable")?;
    let needed = connections as u64 + 256;
    if soft < needed {
        return Err(format!(
            "file-descriptor limit {soft} is below the {needed} needed for max_connections plus kafka and http: raise `ulimit -n` or lower max_connections"
        ));
    }
    Ok(soft)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_shared_and_given_back() {
        let b = Budget::new(10 * BLOCK);
        let mut r1 = b.reservation();
        let mut r2 = b.reservation();
        assert!(r1.cover(6 * BLOCK));
        assert!(!r2.cover(6 * BLOCK), "the budget is shared");
        assert!(r2.cover(4 * BLOCK));
        r1.shrink_to(BLOCK);
        assert!(r2.cover(9 * BLOCK));
        drop(r2);
        assert_eq!(b.available(), 9 * BLOCK);
        drop(r1);
        assert_eq!(b.available(), b.total());
    }

    #[test]
    fn one_peer_cannot_take_every_slot() {
        let l = PeerLimits::new(2);
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        let s1 = l.acquire(a).expect("first");
        let _s2 = l.acquire(a).expect("second");
        assert!(l.acquire(a).is_none());
        assert!(l.acquire(b).is_some(), "another peer still gets in");
        drop(s1);
        assert!(l.acquire(a).is_some());
    }
}
