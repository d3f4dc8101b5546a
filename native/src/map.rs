//! `Map`: a JSON object as a Python `dict` keeps it (insertion order; a repeated key keeps
//! its place and takes the new value), in little memory.
//!
//! A held session is mostly small objects (metadata, its timestamps, kwargs: empty or a
//! handful of keys), thousands of sessions at once: a small object is a plain vector of
//! entries searched in order (no hash table, no slack, nothing allocated while empty).  An
//! object grown past `SMALL` keys (a user's payload may be big) moves to an `IndexMap`, so
//! lookups stay constant-time.

use std::ops::Index;

use indexmap::IndexMap;

use crate::value::Value;

/// The most keys an object holds as a plain vector.
const SMALL: usize = 16;

#[derive(Clone, Default)]
pub struct Map(Repr);

#[derive(Clone)]
enum Repr {
    Small(Vec<(String, Value)>),
    Large(Box<IndexMap<String, Value>>),
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
            Repr::Small(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            Repr::Large(map) => map.get(key),
        }
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Set `key` (a new key goes last); returns the value it replaced.
    pub fn insert(&mut self, key: String, value: Value) -> Option<Value> {
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
                let mut map: IndexMap<String, Value> =
                    std::mem::take(entries).into_iter().collect();
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

    pub fn keys(&self) -> impl ExactSizeIterator<Item = &String> {
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

impl Extend<(String, Value)> for Map {
    fn extend<I: IntoIterator<Item = (String, Value)>>(&mut self, items: I) {
        for (key, value) in items {
            self.insert(key, value);
        }
    }
}

impl FromIterator<(String, Value)> for Map {
    fn from_iter<I: IntoIterator<Item = (String, Value)>>(items: I) -> Map {
        let mut map = Map::new();
        map.extend(items);
        map
    }
}

pub enum Iter<'a> {
    Small(std::slice::Iter<'a, (String, Value)>),
    Large(indexmap::map::Iter<'a, String, Value>),
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a String, &'a Value);

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
    type Item = (&'a String, &'a Value);
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

pub enum IntoIter {
    Small(std::vec::IntoIter<(String, Value)>),
    Large(indexmap::map::IntoIter<String, Value>),
}

impl Iterator for IntoIter {
    type Item = (String, Value);

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
    type Item = (String, Value);
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
        map.keys().map(String::as_str).collect()
    }

    #[test]
    fn a_repeated_key_keeps_its_place_small_or_large() {
        for size in [3, SMALL + 5] {
            let mut map: Map = (0..size)
                .map(|i| (format!("k{i}"), Value::Int(i as i64)))
                .collect();
            assert_eq!(map.insert("k1".into(), Value::Null), Some(Value::Int(1)));
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
        let owned: Vec<String> = map.clone().into_iter().map(|(k, _)| k).collect();
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
}
