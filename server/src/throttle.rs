//! Sign-in throttling that slows a password guesser without locking the
//! real user out (OWASP's Authentication Cheat Sheet: lockouts are a denial
//! of service in an attacker's hands; "Slow Down Online Guessing Attacks
//! with Device Cookies").
//!
//! A sign-in is *trusted* when it comes with a device cookie this user got
//! from an earlier successful sign-in, or from an address this user signed
//! in from before; anything else is *untrusted*. Failures count against:
//!
//! - the user at this address (untrusted): from the 4th failure each
//!   attempt waits twice as long as the last, 1 s up to 5 min;
//! - the user from every untrusted client together: from the 11th failure
//!   untrusted attempts for this user wait 30 s, doubling up to 15 min (a
//!   distributed guesser), while trusted sign-ins go on unaffected;
//! - the address, for any user (password spraying): from the 31st failure
//!   its untrusted attempts wait 1 s, doubling up to 1 min;
//! - the trusted device or address itself: from the 6th failure 1 s,
//!   doubling up to 5 min (a stolen device cookie is no free pass).
//!
//! A key's count is forgotten 15 minutes after its last failure; a correct
//! password clears the counts of this user at this client. State lives in
//! memory per node (a cluster of N nodes gives a guesser N times the rate).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const FORGET: Duration = Duration::from_secs(15 * 60);
/// How long an address that signed in as a user stays known for that user.
const KNOWN_FOR: Duration = Duration::from_secs(30 * 86_400);

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
enum Key {
    Pair(String, String),
    User(String),
    Address(String),
    Trusted(String, String),
}

/// Free failures, first delay and longest delay of each kind of key.
fn rule(k: &Key) -> (u32, Duration, Duration) {
    match k {
        Key::Pair(..) => (3, Duration::from_secs(1), Duration::from_secs(300)),
        Key::User(_) => (10, Duration::from_secs(30), Duration::from_secs(900)),
        Key::Address(_) => (30, Duration::from_secs(1), Duration::from_secs(60)),
        Key::Trusted(..) => (5, Duration::from_secs(1), Duration::from_secs(300)),
    }
}

fn delay(k: &Key, failures: u32) -> Duration {
    let (free, first, max) = rule(k);
    if failures <= free {
        return Duration::ZERO;
    }
    let doublings = (failures - free - 1).min(20);
    first.saturating_mul(1 << doublings).min(max)
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    failures: u32,
    last: Instant,
}

/// One sign-in attempt as the throttle sees it.
#[derive(Clone, Debug)]
pub struct Attempt {
    pub user: String,
    pub address: String,
    /// The id of a device cookie that is valid for `user` (checked by the caller).
    pub device: Option<String>,
}

/// Why an attempt must wait, and how long.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limit {
    pub wait: Duration,
    /// Who is slowed down, for the log and the audit entry.
    pub scope: &'static str,
}

#[derive(Default)]
pub struct Throttle {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    failures: HashMap<Key, Entry>,
    /// (user, address) pairs that signed in, and when.
    known: HashMap<(String, String), Instant>,
}

impl State {
    fn trusted(&self, a: &Attempt, now: Instant) -> bool {
        a.device.is_some()
            || self.known.get(&(a.user.clone(), a.address.clone())).is_some_and(|t| now.duration_since(*t) < KNOWN_FOR)
    }

    fn keys(&self, a: &Attempt, now: Instant) -> Vec<Key> {
        if self.trusted(a, now) {
            let client =
                a.device.clone().map(|d| format!("device:{d}")).unwrap_or_else(|| format!("address:{}", a.address));
            vec![Key::Trusted(a.user.clone(), client)]
        } else {
            vec![
                Key::Pair(a.user.clone(), a.address.clone()),
                Key::User(a.user.clone()),
                Key::Address(a.address.clone()),
            ]
        }
    }

    fn forget_old(&mut self, now: Instant) {
        self.failures.retain(|_, e| now.duration_since(e.last) < FORGET);
        if self.known.len() > 100_000 {
            self.known.retain(|_, t| now.duration_since(*t) < KNOWN_FOR);
        }
    }

    fn limit(&self, keys: &[Key], now: Instant) -> Option<Limit> {
        keys.iter()
            .filter_map(|k| {
                let e = self.failures.get(k)?;
                let until = e.last + delay(k, e.failures);
                (until > now).then(|| Limit { wait: until - now, scope: scope(k) })
            })
            .max_by_key(|l| l.wait)
    }
}

fn scope(k: &Key) -> &'static str {
    match k {
        Key::Pair(..) => "this user from this address",
        Key::User(_) => "this user from devices it has not signed in from",
        Key::Address(_) => "every user from this address",
        Key::Trusted(..) => "this user from this device",
    }
}

impl Throttle {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the attempt may check a password now.
    pub fn check(&self, a: &Attempt, now: Instant) -> Result<(), Limit> {
        let mut s = self.state();
        s.forget_old(now);
        let keys = s.keys(a, now);
        s.limit(&keys, now).map_or(Ok(()), Err)
    }

    /// Counts a wrong password; returns the wait it starts, if any.
    pub fn failed(&self, a: &Attempt, now: Instant) -> Option<Limit> {
        let mut s = self.state();
        let keys = s.keys(a, now);
        for k in &keys {
            let e = s.failures.entry(k.clone()).or_insert(Entry { failures: 0, last: now });
            e.failures += 1;
            e.last = now;
        }
        s.limit(&keys, now)
    }

    /// A correct password: this client is known for this user from now on.
    pub fn succeeded(&self, a: &Attempt, now: Instant) {
        let mut s = self.state();
        for k in s.keys(a, now) {
            if !matches!(k, Key::User(_) | Key::Address(_)) {
                s.failures.remove(&k);
            }
        }
        s.known.insert((a.user.clone(), a.address.clone()), now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(user: &str, address: &str, device: Option<&str>) -> Attempt {
        Attempt { user: user.into(), address: address.into(), device: device.map(Into::into) }
    }

    /// Fails `n` times, each as soon as the throttle allows; returns the time after.
    fn fail_n(t: &Throttle, a: &Attempt, n: u32, mut now: Instant) -> Instant {
        for _ in 0..n {
            if let Err(l) = t.check(a, now) {
                now += l.wait;
            }
            t.failed(a, now);
        }
        now
    }

    #[test]
    fn delays_grow_for_a_guesser_at_one_address() {
        let t = Throttle::default();
        let a = at("admin", "10.0.0.9", None);
        let now = fail_n(&t, &a, 3, Instant::now());
        assert!(t.check(&a, now).is_ok(), "three failures are free");
        t.failed(&a, now);
        assert_eq!(t.check(&a, now).unwrap_err().wait, Duration::from_secs(1));
        let later = now + Duration::from_secs(1);
        t.failed(&a, later);
        assert_eq!(t.check(&a, later).unwrap_err().wait, Duration::from_secs(2));
        // Twenty more attempts as fast as allowed take minutes, not seconds.
        let start = later + Duration::from_secs(2);
        let end = fail_n(&t, &a, 20, start);
        assert!(end - start > Duration::from_secs(30 * 60), "{:?}", end - start);
    }

    #[test]
    fn a_distributed_guesser_cannot_lock_out_a_known_client() {
        let t = Throttle::default();
        let now = Instant::now();
        let real = at("admin", "192.168.1.5", None);
        t.succeeded(&real, now);
        // 200 addresses, 2 wrong passwords each.
        for i in 0..200 {
            let bad = at("admin", &format!("203.0.113.{i}"), None);
            t.failed(&bad, now);
            t.failed(&bad, now);
        }
        let fresh = at("admin", "198.51.100.1", None);
        let l = t.check(&fresh, now).unwrap_err();
        assert_eq!(l.scope, "this user from devices it has not signed in from");
        assert!(t.check(&real, now).is_ok(), "the address admin signed in from before is not locked");
        let with_cookie = at("admin", "198.51.100.77", Some("dev-1"));
        assert!(t.check(&with_cookie, now).is_ok(), "a device cookie is not locked either");
        // The untrusted lock ends by itself.
        assert!(t.check(&fresh, now + Duration::from_secs(16 * 60)).is_ok());
    }

    #[test]
    fn one_proxy_with_many_users_is_slowed_not_blocked() {
        let t = Throttle::default();
        let now = Instant::now();
        let proxy = "10.1.1.1";
        for i in 0..40 {
            t.failed(&at(&format!("user{i}"), proxy, None), now);
        }
        let l = t.check(&at("carol", proxy, None), now).unwrap_err();
        assert!(l.wait <= Duration::from_secs(60), "{l:?}");
        assert!(t.check(&at("carol", proxy, None), now + Duration::from_secs(61)).is_ok());
        assert!(t.check(&at("dave", proxy, Some("d")), now).is_ok(), "trusted devices pass");
    }

    #[test]
    fn a_stolen_device_cookie_is_throttled_too() {
        let t = Throttle::default();
        let a = at("admin", "203.0.113.1", Some("dev-1"));
        let now = fail_n(&t, &a, 6, Instant::now());
        assert!(t.check(&a, now).is_err());
        assert!(t.check(&at("admin", "203.0.113.1", Some("dev-2")), now).is_ok(), "another device is not affected");
    }

    #[test]
    fn success_clears_the_clients_count() {
        let t = Throttle::default();
        let a = at("admin", "10.0.0.1", None);
        let now = fail_n(&t, &a, 5, Instant::now());
        let now = now + Duration::from_secs(600);
        t.succeeded(&a, now);
        assert!(t.check(&a, now).is_ok());
        // Known now: its failures count on the trusted key, with 5 free.
        let now = fail_n(&t, &a, 5, now);
        assert!(t.check(&a, now).is_ok());
    }
}
