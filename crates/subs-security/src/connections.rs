//! Counting open connections: in total, per address and per principal.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rustc_hash::FxHashMap;

use crate::{Error, Principal, RejectReason, Rejection, messages};

/// The principal key counted: (tenant, id), so equal ids in different tenants
/// are different principals.
type PrincipalKey = (Option<String>, String);

fn principal_key(p: &Principal) -> PrincipalKey {
    (p.tenant.clone(), p.id.clone())
}

/// Counts open connections in total, per IP address and per principal,
/// refusing those over the maxima. Memory is bounded by the number of open
/// connections: an entry is removed when its count drops to zero.
///
/// IPv4-mapped IPv6 addresses count as their IPv4 address, and IPv6 addresses
/// are grouped by prefix (default /64, what one host usually owns). The
/// anonymous principal is never counted per principal.
///
/// Single-threaded; [`SharedConnectionLimiter`] wraps it for many threads and
/// releases through a drop guard.
#[derive(Debug, Clone)]
pub struct ConnectionLimiter {
    max_total: Option<usize>,
    total: usize,
    max_per_ip: Option<usize>,
    max_per_principal: Option<usize>,
    ipv6_prefix_len: u8,
    per_ip: FxHashMap<IpAddr, usize>,
    per_principal: FxHashMap<PrincipalKey, usize>,
}

impl ConnectionLimiter {
    /// A limiter with these maxima (`None` = no limit; `Some(0)` is an error).
    pub fn new(max_per_ip: Option<usize>, max_per_principal: Option<usize>) -> Result<Self, Error> {
        if max_per_ip == Some(0) {
            return Err(Error::ZeroLimit {
                setting: "max_connections_per_ip",
            });
        }
        if max_per_principal == Some(0) {
            return Err(Error::ZeroLimit {
                setting: "max_connections_per_principal",
            });
        }
        Ok(Self::unchecked(max_per_ip, max_per_principal))
    }

    /// Without the zero checks (the config validates them itself).
    pub(crate) fn unchecked(max_per_ip: Option<usize>, max_per_principal: Option<usize>) -> Self {
        Self {
            max_total: None,
            total: 0,
            max_per_ip,
            max_per_principal,
            ipv6_prefix_len: 64,
            per_ip: FxHashMap::default(),
            per_principal: FxHashMap::default(),
        }
    }

    /// Caps the connections open at once, whatever their address (`None` =
    /// no cap; `Some(0)` is an error). Refusal is close 1013 "try again
    /// later", HTTP 503 before the upgrade.
    pub fn max_connections(mut self, max: Option<usize>) -> Result<Self, Error> {
        if max == Some(0) {
            return Err(Error::ZeroLimit {
                setting: "max_connections",
            });
        }
        self.max_total = max;
        Ok(self)
    }

    /// Sets the cap without the zero check (the config validates it itself).
    pub(crate) fn unchecked_max_connections(mut self, max: Option<usize>) -> Self {
        self.max_total = max;
        self
    }

    /// Groups IPv6 addresses by this prefix length (default 64; 128 counts
    /// each address alone; values above 128 mean 128).
    #[must_use]
    pub fn ipv6_prefix_len(mut self, len: u8) -> Self {
        self.ipv6_prefix_len = len.min(128);
        self
    }

    /// The address as counted: IPv4-mapped addresses unmapped, IPv6 masked.
    pub fn address_key(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(_) => ip,
            IpAddr::V6(v6) => {
                if let Some(v4) = v6.to_ipv4_mapped() {
                    return IpAddr::V4(v4);
                }
                let bits = u128::from(v6);
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.ipv6_prefix_len))
                    .unwrap_or(0);
                IpAddr::V6((bits & mask).into())
            }
        }
    }

    /// Counts a new connection (from `peer`, when known): refused with close
    /// 1013 when `max_connections` are open, or with 4429 when its address
    /// has its maximum. Nothing is counted when it is refused.
    pub fn try_open(&mut self, peer: Option<IpAddr>) -> Result<(), Rejection> {
        self.open(peer).map_err(|(_, rejection)| rejection)
    }

    /// [`Self::try_open`], with the reason for the stats.
    pub(crate) fn open(&mut self, peer: Option<IpAddr>) -> Result<(), (RejectReason, Rejection)> {
        // The global cap first: it is about the server, not the client, and
        // its answer (503, retry later) is what a client must see then.
        if self.max_total.is_some_and(|max| self.total >= max) {
            return Err((
                RejectReason::ServerAtCapacity,
                Rejection::try_again_later(messages::SERVER_AT_CAPACITY),
            ));
        }
        if let Some(ip) = peer {
            self.try_open_ip(ip)
                .map_err(|r| (RejectReason::ConnectionLimit, r))?;
        }
        self.total += 1;
        Ok(())
    }

    /// Uncounts a connection opened with [`Self::try_open`].
    pub fn release(&mut self, peer: Option<IpAddr>) {
        if let Some(ip) = peer {
            self.release_ip(ip);
        }
        self.total = self.total.saturating_sub(1);
    }

    /// Connections open now (counted by [`Self::try_open`]).
    pub fn open_connections(&self) -> usize {
        self.total
    }

    /// Counts a new connection from `ip` per address only (not in the
    /// total; see [`Self::try_open`]), or refuses it with close 4429.
    pub fn try_open_ip(&mut self, ip: IpAddr) -> Result<(), Rejection> {
        let key = self.address_key(ip);
        let count = self.per_ip.get(&key).copied().unwrap_or(0);
        if self.max_per_ip.is_some_and(|max| count >= max) {
            return Err(Rejection::too_many_requests(
                messages::TOO_MANY_CONNECTIONS_FROM_ADDRESS,
            ));
        }
        self.per_ip.insert(key, count + 1);
        Ok(())
    }

    /// Uncounts a connection from `ip` (no effect if none is counted).
    pub fn release_ip(&mut self, ip: IpAddr) {
        let key = self.address_key(ip);
        decrement(&mut self.per_ip, &key);
    }

    /// Counts a connection for `principal`, or refuses it with close 4429.
    /// Always allows the anonymous principal, without counting it.
    pub fn try_bind_principal(&mut self, principal: &Principal) -> Result<(), Rejection> {
        if principal.is_anonymous() {
            return Ok(());
        }
        let key = principal_key(principal);
        let count = self.per_principal.get(&key).copied().unwrap_or(0);
        if self.max_per_principal.is_some_and(|max| count >= max) {
            return Err(Rejection::too_many_requests(
                messages::TOO_MANY_CONNECTIONS_FOR_PRINCIPAL,
            ));
        }
        self.per_principal.insert(key, count + 1);
        Ok(())
    }

    /// Uncounts a connection for `principal` (no effect if none is counted).
    pub fn release_principal(&mut self, principal: &Principal) {
        if !principal.is_anonymous() {
            decrement(&mut self.per_principal, &principal_key(principal));
        }
    }

    /// Open connections counted for `ip`'s address key.
    pub fn connections_from(&self, ip: IpAddr) -> usize {
        self.per_ip.get(&self.address_key(ip)).copied().unwrap_or(0)
    }

    /// Open connections counted for `principal`.
    pub fn connections_of(&self, principal: &Principal) -> usize {
        self.per_principal
            .get(&principal_key(principal))
            .copied()
            .unwrap_or(0)
    }

    /// Entries held (addresses plus principals): zero when nothing is open.
    pub fn tracked_keys(&self) -> usize {
        self.per_ip.len() + self.per_principal.len()
    }
}

fn decrement<K: std::hash::Hash + Eq>(map: &mut FxHashMap<K, usize>, key: &K) {
    if let Some(count) = map.get_mut(key) {
        *count -= 1;
        if *count == 0 {
            map.remove(key);
        }
    }
}

/// A [`ConnectionLimiter`] shared between threads (a `std::sync::Mutex`
/// inside; the critical sections are a hash-map update). Clones share counts.
#[derive(Debug, Clone)]
pub struct SharedConnectionLimiter {
    inner: Arc<Mutex<ConnectionLimiter>>,
}

impl SharedConnectionLimiter {
    /// Shares `limiter`.
    pub fn new(limiter: ConnectionLimiter) -> Self {
        Self {
            inner: Arc::new(Mutex::new(limiter)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, ConnectionLimiter> {
        // The critical sections cannot panic midway, so a poisoned lock still
        // guards consistent counts.
        lock(&self.inner)
    }

    /// The address as counted (see [`ConnectionLimiter::address_key`]).
    pub fn address_key(&self, ip: IpAddr) -> IpAddr {
        self.lock().address_key(ip)
    }

    /// Counts a new connection from `peer` (not counted per address if
    /// unknown), or refuses it (see [`ConnectionLimiter::try_open`]). The
    /// permit uncounts it, and its principal, when dropped.
    pub fn try_open(&self, peer: Option<IpAddr>) -> Result<ConnectionPermit, Rejection> {
        self.open(peer).map_err(|(_, rejection)| rejection)
    }

    /// [`Self::try_open`], with the reason for the stats.
    pub(crate) fn open(
        &self,
        peer: Option<IpAddr>,
    ) -> Result<ConnectionPermit, (RejectReason, Rejection)> {
        self.lock().open(peer)?;
        Ok(ConnectionPermit {
            limiter: Arc::clone(&self.inner),
            ip: peer,
            principal: None,
        })
    }

    /// Open connections counted for `ip`'s address key.
    pub fn connections_from(&self, ip: IpAddr) -> usize {
        self.lock().connections_from(ip)
    }

    /// Connections open now (permits alive).
    pub fn open_connections(&self) -> usize {
        self.lock().open_connections()
    }

    /// Open connections counted for `principal`.
    pub fn connections_of(&self, principal: &Principal) -> usize {
        self.lock().connections_of(principal)
    }

    /// Entries held: zero when no permit is alive.
    pub fn tracked_keys(&self) -> usize {
        self.lock().tracked_keys()
    }
}

fn lock(m: &Mutex<ConnectionLimiter>) -> MutexGuard<'_, ConnectionLimiter> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One open connection's place in a [`SharedConnectionLimiter`]; dropping it
/// releases the address and principal counts. Hold it for the connection's life.
#[derive(Debug)]
#[must_use = "dropping the permit releases the connection's count at once"]
pub struct ConnectionPermit {
    limiter: Arc<Mutex<ConnectionLimiter>>,
    ip: Option<IpAddr>,
    principal: Option<Principal>,
}

impl ConnectionPermit {
    /// Counts this connection for `principal` (after authentication), or
    /// refuses with close 4429. Binding again replaces the previous principal.
    pub fn bind_principal(&mut self, principal: &Principal) -> Result<(), Rejection> {
        let mut limiter = lock(&self.limiter);
        if let Some(old) = &self.principal
            && principal_key(old) == principal_key(principal)
        {
            return Ok(());
        }
        limiter.try_bind_principal(principal)?;
        if let Some(old) = self.principal.take() {
            limiter.release_principal(&old);
        }
        self.principal = Some(Principal::new(principal.id.clone()));
        if let (Some(p), Some(t)) = (&mut self.principal, &principal.tenant) {
            p.tenant = Some(t.clone());
        }
        Ok(())
    }

    /// The address this permit counts, if any.
    pub fn peer(&self) -> Option<IpAddr> {
        self.ip
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut limiter = lock(&self.limiter);
        limiter.release(self.ip);
        if let Some(p) = &self.principal {
            limiter.release_principal(p);
        }
    }
}
