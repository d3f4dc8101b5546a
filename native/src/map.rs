//! `KeyMap`: named entries as a Python `dict` keeps them (insertion order; a repeated key
//! keeps its place and takes the new value), in little memory.  `Map`, a JSON object, is
//! one; a session's tasks and instances are others.
//!
//! A held session is mostly small maps (metadata, its timestamps, kwargs, tasks: empty or
//! a handful of keys), thousands of sessions at once: a small map is a plain vector of
//! entries searched in order (no hash table, no slack, nothing allocated while empty).  A
//! map grown past `SMALL` keys (a user's payload may be big) moves to an `IndexMap`, so
//! lookups stay constant-time.  Keys (names, short) are held inline.

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};
use std::ops::{Deref, Index, IndexMut};

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

/// Named entries in insertion order: a JSON object's ([`Map`]), a session's tasks and
/// instances.
#[derive(Clone)]
pub struct KeyMap<V>(Repr<V>);

/// A JSON object.
pub type Map = KeyMap<Value>;

#[derive(Clone)]
enum Repr<V> {
    Small(Vec<(Key, V)>),
    Large(Box<IndexMap<Key, V>>),
}

impl<V> Default for KeyMap<V> {
    fn default() -> KeyMap<V> {
        KeyMap::new()
    }
}

impl<V> KeyMap<V> {
    pub const fn new() -> KeyMap<V> {
        KeyMap(Repr::Small(Vec::new()))
    }

    pub fn with_capacity(capacity: usize) -> KeyMap<V> {
        if capacity <= SMALL {
            KeyMap(Repr::Small(Vec::with_capacity(capacity)))
        } else {
            KeyMap(Repr::Large(Box::new(IndexMap::with_capacity(capacity))))
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

    /// The entry's position (insertion order) and value.
    pub fn get_full(&self, key: &str) -> Option<(usize, &V)> {
        match &self.0 {
            Repr::Small(entries) => entries
                .iter()
                .position(|(k, _)| **k == *key)
                .map(|i| (i, &entries[i].1)),
            Repr::Large(map) => map.get_full(key).map(|(i, _, v)| (i, v)),
        }
    }

    /// The entry at a position (insertion order).
    pub fn get_index(&self, position: usize) -> Option<(&Key, &V)> {
        match &self.0 {
            Repr::Small(entries) => entries.get(position).map(|(k, v)| (k, v)),
            Repr::Large(map) => map.get_index(position),
        }
    }

    pub fn get(&self, key: &str) -> Option<&V> {
        self.get_full(key).map(|(_, v)| v)
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        match &mut self.0 {
            Repr::Small(entries) => entries
                .iter_mut()
                .find(|(k, _)| **k == *key)
                .map(|(_, v)| v),
            Repr::Large(map) => map.get_mut(key),
        }
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Set `key` (a new key goes last); returns the value it replaced.
    pub fn insert(&mut self, key: impl Into<Key>, value: V) -> Option<V> {
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
                let mut map: IndexMap<Key, V> = std::mem::take(entries).into_iter().collect();
                map.insert(key, value);
                self.0 = Repr::Large(Box::new(map));
                None
            }
            Repr::Large(map) => map.insert(key, value),
        }
    }

    pub fn iter(&self) -> Iter<'_, V> {
        match &self.0 {
            Repr::Small(entries) => Iter::Small(entries.iter()),
            Repr::Large(map) => Iter::Large(map.iter()),
        }
    }

    pub fn keys(&self) -> impl ExactSizeIterator<Item = &Key> {
        self.iter().map(|(k, _)| k)
    }

    pub fn values(&self) -> impl ExactSizeIterator<Item = &V> {
        self.iter().map(|(_, v)| v)
    }

    pub fn values_mut(&mut self) -> ValuesMut<'_, V> {
        match &mut self.0 {
            Repr::Small(entries) => ValuesMut::Small(entries.iter_mut()),
            Repr::Large(map) => ValuesMut::Large(map.values_mut()),
        }
    }
}

/// Equal as Python dicts are: the same keys with equal values, in any order.
impl<V: PartialEq> PartialEq for KeyMap<V> {
    fn eq(&self, other: &KeyMap<V>) -> bool {
        self.len() == other.len() && self.iter().all(|(k, v)| other.get(k) == Some(v))
    }
}

impl<V: std::fmt::Debug> std::fmt::Debug for KeyMap<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<V> Index<&str> for KeyMap<V> {
    type Output = V;

    fn index(&self, key: &str) -> &V {
        self.get(key).expect("KeyMap: key not found")
    }
}

/// The entry at a position (insertion order).
impl<V> Index<usize> for KeyMap<V> {
    type Output = V;

    fn index(&self, position: usize) -> &V {
        match &self.0 {
            Repr::Small(entries) => &entries[position].1,
            Repr::Large(map) => &map[position],
        }
    }
}

impl<V> IndexMut<usize> for KeyMap<V> {
    fn index_mut(&mut self, position: usize) -> &mut V {
        match &mut self.0 {
            Repr::Small(entries) => &mut entries[position].1,
            Repr::Large(map) => &mut map[position],
        }
    }
}

impl<K: Into<Key>, V> Extend<(K, V)> for KeyMap<V> {
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, items: I) {
        for (key, value) in items {
            self.insert(key, value);
        }
    }
}

impl<K: Into<Key>, V> FromIterator<(K, V)> for KeyMap<V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(items: I) -> KeyMap<V> {
        let mut map = KeyMap::new();
        map.extend(items);
        map
    }
}

pub enum Iter<'a, V> {
    Small(std::slice::Iter<'a, (Key, V)>),
    Large(indexmap::map::Iter<'a, Key, V>),
}

impl<'a, V> Iterator for Iter<'a, V> {
    type Item = (&'a Key, &'a V);

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

impl<V> ExactSizeIterator for Iter<'_, V> {}

impl<'a, V> IntoIterator for &'a KeyMap<V> {
    type Item = (&'a Key, &'a V);
    type IntoIter = Iter<'a, V>;

    fn into_iter(self) -> Iter<'a, V> {
        self.iter()
    }
}

pub enum ValuesMut<'a, V> {
    Small(std::slice::IterMut<'a, (Key, V)>),
    Large(indexmap::map::ValuesMut<'a, Key, V>),
}

impl<'a, V> Iterator for ValuesMut<'a, V> {
    type Item = &'a mut V;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            ValuesMut::Small(entries) => entries.next().map(|(_, v)| v),
            ValuesMut::Large(values) => values.next(),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match self {
            ValuesMut::Small(entries) => entries.size_hint(),
            ValuesMut::Large(values) => values.size_hint(),
        }
    }
}

impl<V> ExactSizeIterator for ValuesMut<'_, V> {}

pub enum IntoIter<V> {
    Small(std::vec::IntoIter<(Key, V)>),
    Large(indexmap::map::IntoIter<Key, V>),
}

impl<V> Iterator for IntoIter<V> {
    type Item = (Key, V);

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

impl<V> ExactSizeIterator for IntoIter<V> {}

impl<V> IntoIterator for KeyMap<V> {
    type Item = (Key, V);
    type IntoIter = IntoIter<V>;

    fn into_iter(self) -> IntoIter<V> {
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
        assert_eq!(map[format!("{long}0").as_str()], Value::Bool(true));
    }
}
