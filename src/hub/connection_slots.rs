//! The cap on open WebSocket connections per API key.
//!
//! A slot is taken before the upgrade and held by the session until it ends; dropping the
//! [`ConnectionSlot`] gives it back, so every way a connection ends (a close, a timeout, an
//! upgrade that failed, a panic) returns it exactly once. Taking one is a check and an
//! increment under one lock, so concurrent upgrades of one key can never overshoot.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Clone)]
pub struct ConnectionSlots {
    limit: usize,
    /// Open connections per key; a key with none has no entry. A std mutex: held for a
    /// lookup and an increment, never across an await.
    open: Arc<Mutex<HashMap<String, usize>>>,
}

/// One open connection of a key; dropping it frees the slot.
#[derive(Debug)]
pub struct ConnectionSlot {
    open: Arc<Mutex<HashMap<String, usize>>>,
    key_id: String,
}

impl ConnectionSlots {
    pub fn new(limit: usize) -> Self {
        ConnectionSlots {
            limit,
            open: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// A slot for one more connection of `key_id`, or `None` when it has `limit` open.
    pub fn try_take(&self, key_id: &str) -> Option<ConnectionSlot> {
        // A poisoned lock only means another thread panicked between a lookup and an
        // increment; the counts are still whole numbers, so keep serving.
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(key_id.to_owned()).or_insert(0);
        if *count >= self.limit {
            crate::telemetry::admission_refused("too_many_connections");
            return None;
        }
        *count += 1;
        Some(ConnectionSlot {
            open: self.open.clone(),
            key_id: key_id.to_owned(),
        })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.key_id) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.key_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_gets_limit_slots_and_a_freed_one_comes_back() {
        let slots = ConnectionSlots::new(2);
        let a = slots.try_take("k").expect("first");
        let _b = slots.try_take("k").expect("second");
        assert!(slots.try_take("k").is_none(), "over the limit");
        assert!(slots.try_take("other").is_some(), "keys are counted apart");
        drop(a);
        assert!(slots.try_take("k").is_some(), "a freed slot is free again");
    }

    #[test]
    fn concurrent_takers_never_exceed_the_limit() {
        let slots = ConnectionSlots::new(5);
        let taken: Vec<Option<ConnectionSlot>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..32)
                .map(|_| scope.spawn(|| slots.try_take("k")))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(taken.iter().filter(|s| s.is_some()).count(), 5);
        drop(taken);
        assert!(
            slots.open.lock().unwrap().is_empty(),
            "every slot was given back"
        );
    }
}
