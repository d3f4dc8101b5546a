//! `Map`: a JSON object as a Python `dict` keeps it (insertion order; a repeated key keeps
//! its place and takes the new value), in little memory.
//!
//! A held session is mostly small objects (metadata, its timestamps, kwargs: empty or a
//! handful of keys), thousands of sessions at once: a small object is a plain vector of
//! entries searched in order (no hash table, no slack, nothing allocated while empty).  An
//! object grown past `SMALL` keys (a user's payload may be big) moves to an `IndexMap`, so
//! lookups stay constant-time.  Keys (metadata and trigger names, short) are held inline.

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};
use std::ops::{Deref, Index};

use indexmap::IndexMap;

use crate::value::Value;

/// The most keys an object holds as a plain vector.
const SMALL: usize = 16;

/// A map's key: text of up to `INLINE` bytes is held in place (nearly every key), longer
/// text on the heap.  It reads, hashes and compares as the `str` it holds.
#[derive(Clone)]
pub struct Key(KeyRepr);

const INLINE: usize = 22;

#[derive(Clone)]
enum KeyRepr {
    /// The first `len` bytes of `bytes`, copied from a `str`: always UTF-8.
    Inline {
        len: u8,
        bytes: [u8; INLINE],
    },
    Heap(Box<str>),
}

impl Key {
    pub fn as_str(&self) -> &str {
        match &self.0 {
            KeyRepr::Inline { len, bytes } => {
                // SAFETY: `From<&str>` copied these bytes, a whole `str`, and nothing else
                // writes them.
                unsafe { std::str::from_utf8_unchecked(&bytes[..usize::from(*len)]) }
            }
            KeyRepr::Heap(text) => text,
        }
    }
}

impl From<&str> for Key {
    fn from(text: &str) -> Key {
        if text.len() > INLINE {
            return Key(KeyRepr::Heap(text.into()));
        }
        let mut bytes = [0; INLINE];
        bytes[..text.len()].copy_from_slice(text.as_bytes());
        Key(KeyRepr::Inline {
            len: text.len() as u8,
            bytes,
        })
    }
}

impl From<&String> for Key {
    fn from(text: &String) -> Key {
        Key::from(text.as_str())
    }
}

impl From<String> for Key {
    fn from(text: String) -> Key {
        if text.len() > INLINE {
            Key(KeyRepr::Heap(text.into_boxed_str()))
        } else {
            Key::from(text.as_str())
        }
    }
}

impl From<&Key> for Key {
    fn from(key: &Key) -> Key {
        key.clone()
    }
}

impl Deref for Key {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for Key {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state) // (as `Borrow<str>` requires)
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Key {}

impl PartialEq<str> for Key {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Key {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Key) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Key) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_str().fmt(f)
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_str().fmt(f)
    }
}

#[derive(Clone, Default)]
pub struct Map(Repr);

#[derive(Clone)]
enum Repr {
    Small(Vec<(Key, Value)>),
    Large(Box<IndexMap<Key, Value>>),
}

impl Default for Repr {
    fn default() -> Repr {
        Repr::Small(Vec::new())
    }
}

impl Map {
    pub const fn new() -> Map {
        Map(Repr::Small(Vec::new()))
    }

    pub fn with_capacity(capacity: usize) -> Map {
        if capacity <= SMALL {
            Map(Repr::Small(Vec::with_capacity(capacity)))
        } else {
            Map(Repr::Large(Box::new(IndexMap::with_capacity(capacity))))
        }
    }

    pub fn len(&self) -> usize {
        match &self.0 {
            Repr::Small(entries) => entries.len(),
            Repr::Large(map) => map.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        match &self.0 {
            Repr::Small(entries) => entries.iter().find(|(k, _)| **k == *key).map(|(_, v)| v),
            Repr::Large(map) => map.get(key),
        }
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Set `key` (a new key goes last); returns the value it replaced.
    pub fn insert(&mut self, key: impl Into<Key>, value: Value) -> Option<Value> {
        let key = key.into();
        match &mut self.0 {
            Repr::Small(entries) => {
                if let Some((_, old)) = entries.iter_mut().find(|(k, _)| *k == key) {
                    return Some(std::mem::replace(old, value));
                }
                if entries.len() < SMALL {
                    entries.reserve_exact(1); // (no slack: a held state is mostly read)
                    entries.push((key, value));
                    return None;
                }
                let mut map: IndexMap<Key, Value> = std::mem::take(entries).into_iter().collect();
                map.insert(key, value);
                self.0 = Repr::Large(Box::new(map));
                None
            }
            Repr::Large(map) => map.insert(key, value),
        }
    }

    /// Give back the room reserved for entries not there (a held state only shrinks).
    pub fn shrink_to_fit(&mut self) {
        match &mut self.0 {
            Repr::Small(entries) => entries.shrink_to_fit(),
            Repr::Large(map) => map.shrink_to_fit(),
        }
    }

    pub fn iter(&self) -> Iter<'_> {
        match &self.0 {
            Repr::Small(entries) => Iter::Small(entries.iter()),
            Repr::Large(map) => Iter::Large(map.iter()),
        }
    }

    pub fn keys(&self) -> impl ExactSizeIterator<Item = &Key> {
        self.iter().map(|(k, _)| k)
    }

    pub fn values(&self) -> impl ExactSizeIterator<Item = &Value> {
        self.iter().map(|(_, v)| v)
    }
}

/// Equal as Python dicts are: the same keys with equal values, in any order.
impl PartialEq for Map {
    fn eq(&self, other: &Map) -> bool {
        self.len() == other.len() && self.iter().all(|(k, v)| other.get(k) == Some(v))
    }
}

impl std::fmt::Debug for Map {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Index<&str> for Map {
    type Output = Value;

    fn index(&self, key: &str) -> &Value {
        self.get(key).expect("Map: key not found")
    }
}

impl<K: Into<Key>> Extend<(K, Value)> for Map {
    fn extend<I: IntoIterator<Item = (K, Value)>>(&mut self, items: I) {
        for (key, value) in items {
            self.insert(key, value);
        }
    }
}

impl<K: Into<Key>> FromIterator<(K, Value)> for Map {
    fn from_iter<I: IntoIterator<Item = (K, Value)>>(items: I) -> Map {
        let mut map = Map::new();
        map.extend(items);
        map
    }
}

pub enum Iter<'a> {
    Small(std::slice::Iter<'a, (Key, Value)>),
    Large(indexmap::map::Iter<'a, Key, Value>),
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a Key, &'a Value);

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Iter::Small(entries) => entries.next().map(|(k, v)| (k, v)),
            Iter::Large(entries) => entries.next(),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match self {
            Iter::Small(entries) => entries.size_hint(),
            Iter::Large(entries) => entries.size_hint(),
        }
    }
}

impl ExactSizeIterator for Iter<'_> {}

impl<'a> IntoIterator for &'a Map {
    type Item = (&'a Key, &'a Value);
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

pub enum IntoIter {
    Small(std::vec::IntoIter<(Key, Value)>),
    Large(indexmap::map::IntoIter<Key, Value>),
}

impl Iterator for IntoIter {
    type Item = (Key, Value);

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            IntoIter::Small(entries) => entries.next(),
            IntoIter::Large(entries) => entries.next(),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match self {
            IntoIter::Small(entries) => entries.size_hint(),
            IntoIter::Large(entries) => entries.size_hint(),
        }
    }
}

impl ExactSizeIterator for IntoIter {}

impl IntoIterator for Map {
    type Item = (Key, Value);
    type IntoIter = IntoIter;

    fn into_iter(self) -> IntoIter {
        match self.0 {
            Repr::Small(entries) => IntoIter::Small(entries.into_iter()),
            Repr::Large(map) => IntoIter::Large(map.into_iter()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(map: &Map) -> Vec<&str> {
        map.keys().map(Key::as_str).collect()
    }

    #[test]
    fn a_repeated_key_keeps_its_place_small_or_large() {
        for size in [3, SMALL + 5] {
            let mut map: Map = (0..size)
                .map(|i| (format!("k{i}"), Value::Int(i as i64)))
                .collect();
            assert_eq!(map.insert("k1", Value::Null), Some(Value::Int(1)));
            assert_eq!(map.len(), size);
            assert_eq!(keys(&map)[1], "k1");
            assert_eq!(map["k1"], Value::Null);
            assert!(!map.contains_key("nope"));
        }
    }

    #[test]
    fn growing_past_small_keeps_the_order() {
        let mut map = Map::new();
        for i in (0..SMALL + 3).rev() {
            map.insert(format!("k{i}"), Value::Int(i as i64));
        }
        let expected: Vec<String> = (0..SMALL + 3).rev().map(|i| format!("k{i}")).collect();
        assert_eq!(keys(&map), expected);
        let owned: Vec<String> = map
            .clone()
            .into_iter()
            .map(|(k, _)| k.to_string())
            .collect();
        assert_eq!(owned, expected);
        let small: Map = [
            ("b".to_string(), Value::Null),
            ("a".to_string(), Value::Null),
        ]
        .into_iter()
        .collect();
        let reordered: Map = [
            ("a".to_string(), Value::Null),
            ("b".to_string(), Value::Null),
        ]
        .into_iter()
        .collect();
        assert_eq!(small, reordered); // as dicts compare
        assert_ne!(small, map);
    }

    #[test]
    fn keys_read_as_the_text_they_hold() {
        let long = "a key longer than twenty-two bytes, é";
        for text in ["", "é", "exactly 22 bytes long.", long] {
            assert_eq!(Key::from(text).as_str(), text);
            assert_eq!(Key::from(text.to_string()).as_str(), text);
        }
        let mut map: Map = (0..SMALL + 1)
            .map(|i| (format!("{long}{i}"), Value::Null))
            .collect();
        map.insert(format!("{long}0"), Value::Bool(true));
        assert_eq!(map[&format!("{long}0")], Value::Bool(true));
    }
}
