//! One shard's index of its `/ws` connections by user, for `user:send`.
//!
//! Most users have one connection per shard, so that one key is kept
//! inline; a list is allocated only for a user's second connection.

use std::collections::HashMap;
use std::sync::Arc;

#[derive(Debug)]
enum Keys {
    One(usize),
    Many(Vec<usize>),
}

/// User id -> connection keys on this shard.
#[derive(Debug, Default)]
pub struct UserIndex {
    /// The keys share the strings of the connections' claims.
    users: HashMap<Arc<str>, Keys>,
}

impl UserIndex {
    /// Records connection `key` of `user`.
    pub fn add(&mut self, user: &Arc<str>, key: usize) {
        match self.users.get_mut(&**user) {
            None => {
                self.users.insert(user.clone(), Keys::One(key));
            }
            Some(Keys::One(first)) => {
                let first = *first;
                self.users
                    .insert(user.clone(), Keys::Many(vec![first, key]));
            }
            Some(Keys::Many(keys)) => keys.push(key),
        }
    }

    /// Forgets connection `key` of `user`.
    pub fn remove(&mut self, user: &str, key: usize) {
        let empty = match self.users.get_mut(user) {
            Some(Keys::One(k)) => *k == key,
            Some(Keys::Many(keys)) => {
                keys.retain(|&k| k != key);
                keys.is_empty()
            }
            None => false,
        };
        if empty {
            self.users.remove(user);
        }
    }

    /// The connections of `user` on this shard.
    pub fn keys(&self, user: &str) -> &[usize] {
        match self.users.get(user) {
            Some(Keys::One(key)) => std::slice::from_ref(key),
            Some(Keys::Many(keys)) => keys,
            None => &[],
        }
    }

    /// Every indexed connection.
    pub fn all(&self) -> Vec<usize> {
        self.users
            .values()
            .flat_map(|keys| match keys {
                Keys::One(key) => std::slice::from_ref(key),
                Keys::Many(keys) => keys.as_slice(),
            })
            .copied()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_and_go() {
        let mut index = UserIndex::default();
        index.add(&"a".into(), 1);
        assert_eq!(index.keys("a"), [1]);
        index.add(&"a".into(), 2);
        index.add(&"b".into(), 3);
        assert_eq!(index.keys("a"), [1, 2]);
        index.remove("a", 1);
        assert_eq!(index.keys("a"), [2]);
        index.remove("a", 2);
        assert!(index.keys("a").is_empty());
        assert_eq!(index.all(), [3]);
        index.remove("b", 3);
        assert!(index.all().is_empty());
    }
}
