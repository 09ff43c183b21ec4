//! Console sessions: a token exchanged once for an HttpOnly, SameSite=Strict cookie,
//! with a CSRF token that every state change made with the cookie must send back.
//!
//! Why both: SameSite=Strict keeps other sites' pages from sending the cookie at all;
//! the CSRF header is the second lock for browsers or proxies that do not honour it (a
//! page of another origin cannot read the value, so it cannot send it). Requests with a
//! bearer token carry no ambient authority and need no CSRF token.
//!
//! Sessions live in memory: a restart logs everyone out. Each lasts [`SESSION_TTL`] at
//! most, and ends as soon as its token is removed from the tokens file or changes role.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ring::rand::{SecureRandom, SystemRandom};

use crate::Principal;

/// The cookie's name.
pub const COOKIE: &str = "unseen_session";
/// The header that carries the CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// How long a session lasts after its log-in.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Sessions held at most; a log-in past it ends the oldest session.
pub const MAX_SESSIONS: usize = 10_000;

#[derive(Debug, Clone)]
pub struct Session {
    pub principal: Principal,
    pub csrf: String,
    created: Instant,
}

#[derive(Debug, Default)]
pub struct Sessions {
    by_id: HashMap<String, Session>,
}

/// 32 random bytes as hex.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system's random number generator failed");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Sessions {
    /// Opens a session for `principal`: its id (the cookie's value) and the session.
    pub fn open(&mut self, principal: Principal, now: Instant) -> (String, Session) {
        self.by_id
            .retain(|_, s| now.duration_since(s.created) < SESSION_TTL);
        if self.by_id.len() >= MAX_SESSIONS {
            if let Some(oldest) = self
                .by_id
                .iter()
                .min_by_key(|(_, s)| s.created)
                .map(|(id, _)| id.clone())
            {
                self.by_id.remove(&oldest);
            }
        }
        let id = random_token();
        let session = Session {
            principal,
            csrf: random_token(),
            created: now,
        };
        self.by_id.insert(id.clone(), session.clone());
        (id, session)
    }

    /// The live session of a cookie value.
    pub fn get(&mut self, id: &str, now: Instant) -> Option<Session> {
        let s = self.by_id.get(id)?;
        if now.duration_since(s.created) >= SESSION_TTL {
            self.by_id.remove(id);
            return None;
        }
        Some(s.clone())
    }

    pub fn close(&mut self, id: &str) -> bool {
        self.by_id.remove(id).is_some()
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'h>(header: &'h str, name: &str) -> Option<&'h str> {
    header.split(';').find_map(|part| {
        let (k, v) = part.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Role;

    fn alice() -> Principal {
        Principal {
            name: "alice".into(),
            role: Role::Viewer,
        }
    }

    #[test]
    fn sessions_expire_and_are_bounded() {
        let mut s = Sessions::default();
        let t0 = Instant::now();
        let (id, session) = s.open(alice(), t0);
        assert_eq!(id.len(), 64);
        assert_ne!(session.csrf, id);
        assert!(s.get(&id, t0 + Duration::from_secs(60)).is_some());
        assert!(s.get(&id, t0 + SESSION_TTL).is_none(), "past its TTL");
        assert!(s.is_empty());
        let first = s.open(alice(), t0).0;
        for i in 1..MAX_SESSIONS {
            s.open(alice(), t0 + Duration::from_millis(i as u64));
        }
        assert_eq!(s.len(), MAX_SESSIONS);
        let newest = s.open(alice(), t0 + Duration::from_secs(100)).0;
        assert_eq!(s.len(), MAX_SESSIONS, "the cap holds");
        assert!(
            s.get(&first, t0 + Duration::from_secs(100)).is_none(),
            "the oldest went"
        );
        assert!(s.get(&newest, t0 + Duration::from_secs(100)).is_some());
    }

    #[test]
    fn cookies_are_found_by_name() {
        assert_eq!(cookie("a=1; unseen_session=xyz; b=2", COOKIE), Some("xyz"));
        assert_eq!(cookie("unseen_sessionx=1", COOKIE), None);
        assert_eq!(cookie("", COOKIE), None);
    }
}
