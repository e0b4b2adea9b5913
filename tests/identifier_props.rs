//! Properties of the built-in identifiers: deterministic (equal arguments, equal ids, whatever
//! their layout or insertion order) and discriminating (different calls, different ids).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use ckpt::{AutoIdentifier, Call, CheckpointId, Function, Identifier, KeyFn, Unordered};
use proptest::collection::{btree_map, hash_set, vec};
use proptest::prelude::*;
use serde::Serialize;

fn f() -> Function {
    Function::new("identifier_props", "f")
}

fn id<A: Serialize + ?Sized>(args: &A) -> CheckpointId {
    AutoIdentifier.id_of(&f(), args).unwrap()
}

mod keyed {
    ckpt::checkpoint! {
        #[checkpoint(cache = ckpt::MemoryCache::new(), key = x)]
        pub fn scaled(x: u64, note: String) -> u64 {
            let _ = note;
            x.wrapping_mul(3)
        }
    }
}

type Pairs = Vec<(String, u32)>;

/// Distinct `(key, value)` pairs, and the same pairs in another order.
fn pairs_twice() -> impl Strategy<Value = (Pairs, Pairs)> {
    btree_map(".{0,8}", any::<u32>(), 0..24).prop_flat_map(|m| {
        let v: Pairs = m.into_iter().collect();
        (Just(v.clone()), Just(v).prop_shuffle())
    })
}

proptest! {
    #[test]
    fn equal_arguments_give_equal_ids(
        n in any::<u64>(),
        s in ".{0,16}",
        bytes in vec(any::<u8>(), 0..32),
        x in any::<f64>(),
    ) {
        let owned = (n, s.clone(), bytes.clone(), x);
        prop_assert_eq!(id(&owned), id(&(n, s.clone(), bytes.clone(), x)));
        // &str and String.
        prop_assert_eq!(id(&(n, s.as_str())), id(&(n, s.clone())));
        prop_assert_eq!(id(s.as_str()), id(&s));
        prop_assert_eq!(id(&Cow::Borrowed(s.as_str())), id(&s));
        // &T and T, at any depth.
        prop_assert_eq!(id(&(&n, &s, &&bytes)), id(&(n, s.clone(), bytes.clone())));
        prop_assert_eq!(id(&&&owned), id(&owned));
        // Box<T> and T.
        prop_assert_eq!(id(&Box::new(owned.clone())), id(&owned));
        prop_assert_eq!(id(&Some(Box::new(s.as_str()))), id(&Some(s.clone())));
        // A slice and the Vec holding it.
        prop_assert_eq!(id(bytes.as_slice()), id(&bytes));
        prop_assert_eq!(id(&vec![s.as_str()][..]), id(&vec![s.clone()]));
        // Every NaN is one argument.
        if x.is_nan() {
            prop_assert_eq!(id(&x), id(&f64::NAN));
        }
    }

    #[test]
    fn maps_and_sets_ignore_insertion_order((a, b) in pairs_twice()) {
        let ha: HashMap<String, u32> = a.iter().cloned().collect();
        let mut hb: HashMap<String, u32> = HashMap::with_capacity(1024);
        hb.extend(b.iter().rev().cloned());
        prop_assert_eq!(id(&ha), id(&hb));
        let borrowed: HashMap<&str, u32> = b.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        prop_assert_eq!(id(&ha), id(&borrowed));
        let ba: BTreeMap<String, u32> = b.iter().cloned().collect();
        prop_assert_eq!(id(&ha), id(&ba), "a map is a map, whatever holds it");

        let sa: HashSet<&str> = a.iter().map(|(k, _)| k.as_str()).collect();
        let mut sb: HashSet<&str> = HashSet::with_capacity(1024);
        sb.extend(b.iter().rev().map(|(k, _)| k.as_str()));
        prop_assert_eq!(id(&sa), id(&sb));
        prop_assert_eq!(id(&sa), id(&sb.iter().copied().collect::<BTreeSet<_>>()));
        let ua = Unordered(a.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>());
        let ub = Unordered(b.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>());
        prop_assert_eq!(id(&ua), id(&ub));

        // Nested: maps of sets, inside a vector and a tuple.
        let nest = |pairs: &[(String, u32)]| -> HashMap<u32, HashSet<String>> {
            let mut m: HashMap<u32, HashSet<String>> = HashMap::new();
            for (k, v) in pairs {
                m.entry(v % 4).or_default().insert(k.clone());
            }
            m
        };
        prop_assert_eq!(
            id(&(vec![nest(&a)], 1u8)),
            id(&(vec![nest(&b)], 1u8))
        );
    }

    #[test]
    fn a_changed_map_or_set_changes_the_id(
        (a, _) in pairs_twice(),
        extra in "[A-Z]{9}",
        bump in 1u32..,
    ) {
        let ha: HashMap<String, u32> = a.iter().cloned().collect();
        let mut more = ha.clone();
        more.insert(extra.clone(), 0);
        prop_assert_ne!(id(&ha), id(&more));
        if let Some((k, v)) = a.first() {
            let mut changed = ha.clone();
            changed.insert(k.clone(), v.wrapping_add(bump));
            prop_assert_ne!(id(&ha), id(&changed));
        }
        let keys: HashSet<&String> = ha.keys().collect();
        let mut fewer = keys.clone();
        fewer.insert(&extra);
        prop_assert_ne!(id(&keys), id(&fewer));
    }

    #[test]
    fn order_matters_in_sequences(elems in hash_set(any::<u32>(), 2..16)) {
        let v: Vec<u32> = elems.into_iter().collect();
        let r: Vec<u32> = v.iter().rev().copied().collect();
        prop_assert_ne!(id(&v), id(&r));
        prop_assert_ne!(id(&v[..]), id(&r[..]));
        prop_assert_ne!(id(&(v.clone(),)), id(&(r.clone(),)));
        // Sequences of sets are sequences: only the sets inside ignore order.
        // Two elements each, and a different set for each x, so the sequence of sets is not a
        // palindrome either.
        let sets = |xs: &[u32]| -> Vec<HashSet<u64>> {
            xs.iter()
                .map(|&x| HashSet::from([u64::from(x), u64::from(x) + (1 << 32)]))
                .collect()
        };
        prop_assert_ne!(id(&sets(&v)), id(&sets(&r)));
        prop_assert_ne!(id(&sets(&v)[..]), id(&sets(&r)[..]));
        prop_assert_eq!(id(&sets(&v)[..]), id(&sets(&v)));
        let btrees: Vec<BTreeSet<u32>> = v.iter().map(|&x| BTreeSet::from([x])).collect();
        let rbtrees: Vec<BTreeSet<u32>> = r.iter().map(|&x| BTreeSet::from([x])).collect();
        prop_assert_ne!(id(&btrees[..]), id(&rbtrees[..]));
        prop_assert_ne!(id(&Box::<[BTreeSet<u32>]>::from(btrees)), id(&rbtrees));
    }

    #[test]
    fn key_functions_leave_the_dropped_argument_out(
        a in any::<u64>(),
        b in ".{0,12}",
        c in ".{0,12}",
    ) {
        let f = f();
        let key = KeyFn::new(|args: &(u64, String)| args.0);
        let with_b = key.identify(&Call::new(&f, &(a, b.clone()))).unwrap();
        let with_c = key.identify(&Call::new(&f, &(a, c.clone()))).unwrap();
        prop_assert_eq!(with_b, with_c);
        prop_assert_eq!(with_b, AutoIdentifier.id_of(&f, &a).unwrap());
        let other = key.identify(&Call::new(&f, &(a.wrapping_add(1), b.clone()))).unwrap();
        prop_assert_ne!(with_b, other);

        // The macro's `key = x`.
        let via_macro = keyed::scaled::id(a, b.clone()).unwrap();
        prop_assert_eq!(via_macro, keyed::scaled::id(a, c).unwrap());
        prop_assert_ne!(via_macro, keyed::scaled::id(a.wrapping_add(1), b).unwrap());
        let scaled = keyed::scaled::decorator().function();
        prop_assert_eq!(via_macro, AutoIdentifier.id_of(scaled, &a).unwrap());
    }

    #[test]
    fn distinct_functions_give_distinct_ids(
        m1 in "[a-z:]{0,6}",
        n1 in "[a-z_]{1,6}",
        m2 in "[a-z:]{0,6}",
        n2 in "[a-z_]{1,6}",
        h1 in any::<u64>(),
        h2 in any::<u64>(),
        v1 in ".{0,4}",
        v2 in ".{0,4}",
        args in any::<(u64, bool)>(),
    ) {
        let of = |f: &Function| AutoIdentifier.id_of(f, &args).unwrap();
        let f1 = Function::new(m1.clone(), n1.clone());
        if (&m1, &n1) != (&m2, &n2) {
            let f2 = Function::new(m2, n2);
            prop_assert_ne!(f1.key(), f2.key());
            prop_assert_ne!(of(&f1), of(&f2));
        }
        // One function in several code versions.
        let versions = [
            f1.clone(),
            f1.clone().with_code_hash(h1),
            f1.clone().with_version(v1.clone()),
            f1.clone().with_code_hash(h1).with_version(v1.clone()),
        ];
        let ids: HashSet<CheckpointId> = versions.iter().map(of).collect();
        prop_assert_eq!(ids.len(), versions.len());
        prop_assert!(versions.iter().all(|v| v.key() == f1.key()));
        if h1 != h2 {
            prop_assert_ne!(of(&f1.clone().with_code_hash(h1)), of(&f1.clone().with_code_hash(h2)));
        }
        if v1 != v2 {
            prop_assert_ne!(
                of(&f1.clone().with_version(v1)),
                of(&f1.clone().with_version(v2))
            );
        }
    }
}

/// A small deterministic generator (xorshift64*), so the test is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[test]
fn a_hundred_thousand_distinct_calls_have_distinct_ids() {
    const N: usize = 100_000;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut calls: HashSet<(u64, String)> = HashSet::with_capacity(N);
    while calls.len() < N {
        let call = if calls.len().is_multiple_of(2) {
            // Dense: small numbers and short strings over a tiny alphabet, so many calls differ
            // in one character or by one.
            let len = (rng.next() % 6) as usize;
            let s: String = (0..len)
                .map(|_| ['a', 'b', 'c'][(rng.next() % 3) as usize])
                .collect();
            (rng.next() % 2_000, s)
        } else {
            let len = (rng.next() % 24) as usize;
            let s: String = (0..len)
                .map(|_| char::from(b' ' + (rng.next() % 95) as u8))
                .collect();
            (rng.next(), s)
        };
        calls.insert(call);
    }
    let f = f();
    let ids: HashSet<CheckpointId> = calls
        .iter()
        .map(|c| AutoIdentifier.id_of(&f, c).unwrap())
        .collect();
    assert_eq!(ids.len(), N, "two distinct calls share an id");
}

/// A user's ordered collection whose name happens to end in `Set`, serialized as a sequence.
#[derive(Debug, Clone)]
struct ChangeSet {
    edits: Vec<String>,
}

impl Serialize for ChangeSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // As `HashSet` does: the collection itself is what serde is handed.
        s.collect_seq(self)
    }
}

impl<'a> IntoIterator for &'a ChangeSet {
    type Item = &'a String;
    type IntoIter = std::slice::Iter<'a, String>;
    fn into_iter(self) -> Self::IntoIter {
        self.edits.iter()
    }
}

/// A user's ordered map (a list of pairs, written as a serde map), named like a map.
struct OrderedMap(Vec<(String, u32)>);

impl Serialize for OrderedMap {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

mod changes {
    ckpt::checkpoint! {
        #[checkpoint(cache = ckpt::MemoryCache::new())]
        pub fn apply(changes: crate::ChangeSet) -> Vec<String> {
            let mut doc: Vec<String> = Vec::new();
            for edit in &changes.edits {
                match edit.as_str() {
                    "create" => doc = vec!["file".to_string()],
                    "delete" => doc.clear(),
                    other => doc.push(other.to_string()),
                }
            }
            doc
        }
    }
}

impl<'de> serde::Deserialize<'de> for ChangeSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::<String>::deserialize(d).map(|edits| ChangeSet { edits })
    }
}

#[test]
fn a_user_collection_named_set_keeps_its_order() {
    let create_delete = ChangeSet {
        edits: vec!["create".into(), "delete".into()],
    };
    let delete_create = ChangeSet {
        edits: vec!["delete".into(), "create".into()],
    };
    assert_ne!(id(&create_delete), id(&delete_create));
    // The memoized call returns each order's own result, whichever ran first.
    assert_eq!(changes::apply(create_delete.clone()), Vec::<String>::new());
    assert_eq!(
        changes::apply(delete_create.clone()),
        vec!["file".to_string()]
    );
    assert_eq!(changes::apply(create_delete), Vec::<String>::new());
    // Asked for, order-insensitivity is still there.
    assert_eq!(
        id(&Unordered(&ChangeSet {
            edits: vec!["a".into(), "b".into()]
        })),
        id(&Unordered(&ChangeSet {
            edits: vec!["b".into(), "a".into()]
        }))
    );
}

proptest! {
    #[test]
    fn user_sequences_and_maps_keep_their_order(elems in hash_set("[a-z]{1,6}", 2..12)) {
        let v: Vec<String> = elems.into_iter().collect();
        let mut r = v.clone();
        r.reverse();
        prop_assert_ne!(id(&ChangeSet { edits: v.clone() }), id(&ChangeSet { edits: r.clone() }));
        let pairs = |xs: &[String]| OrderedMap(xs.iter().cloned().zip(0u32..).collect());
        prop_assert_ne!(id(&pairs(&v)), id(&pairs(&r)));
        // The same pairs in a std map: one map, whatever the order.
        let map = |xs: &[String]| xs.iter().cloned().zip(0u32..).collect::<HashMap<_, _>>();
        let remap: BTreeMap<String, u32> = map(&v).into_iter().collect();
        prop_assert_eq!(id(&map(&v)), id(&remap));
    }
}
