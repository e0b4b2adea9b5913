//! The type fingerprint: a hash of the shape a type's `Deserialize` reads.
//!
//! postcard is not self-describing: bytes written for one layout decode into another without
//! complaint (two `u32` fields swapped, a `u32` read as an `i32`). A record therefore carries a
//! fingerprint of the layout it was written with, and a read compares it with the layout it will
//! decode into. The layout is *traced*: the type's `Deserialize` is run once against a probe
//! deserializer that answers every request with a placeholder value and notes what was asked for
//! (a `u32`, a struct named `Point` with fields `x`, `y`, an enum's variant 2 named `Circle`, a
//! sequence of ...). That is exactly what postcard will ask of the stored bytes, so the trace
//! covers what decides how bytes are read: primitive types, field names and order, variant
//! indices and names, nesting, sequences, options, maps, tuples and their lengths, and every
//! named container reached (recursive types included).
//!
//! Enums are explored one variant at a time, and the type is traced again until every variant of
//! every enum reached has been seen. Where a type is recursive, an `Option`, a sequence or a map
//! whose content is already known is answered empty (the content was traced elsewhere), and an
//! enum met inside itself answers with a variant that ends. Nothing is unbounded: a trace that
//! nests deeper than [`MAX_DEPTH`] or needs more than [`MAX_PASSES`] passes fails.
//!
//! A trace fails (the type is *untraceable*) when the type's `Deserialize` asks for something
//! only a self-describing format answers (`deserialize_any`, `deserialize_identifier`,
//! `deserialize_ignored_any`: untagged, internally tagged or flattened types), rejects both sets
//! of placeholder values (a `Url` parsed from a string, a number checked against a range),
//! panics, nests too deep, or disagrees with itself (one container answering two shapes). Such a
//! type is fingerprinted by its name *and the identity of the running build* (see
//! [`build_id`]), so its records are read back only by the build that wrote them.

use std::any::TypeId;
use std::collections::HashMap;
use std::fmt;
use std::hash::Hasher as _;
use std::sync::{LazyLock, OnceLock};

use parking_lot::RwLock;
use serde::de::value::U32Deserializer;
use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer as _, Visitor};
use xxhash_rust::xxh3::{Xxh3, xxh3_64};

/// How deeply a trace may nest (containers, sequences, options, tuples, variants) before it is
/// abandoned. Real layouts stay far below it; a type that reaches it is either infinite (a
/// struct holding itself through a `Box` only) or better fingerprinted by the build.
pub(crate) const MAX_DEPTH: usize = 96;

/// Below this depth, options, sequences and maps are answered empty, and left for a pass that
/// reaches them higher up: a recursive type explored through its recursion would otherwise go as
/// deep as it has variants to try. A position reachable only this deep leaves the trace
/// incomplete (the type is then untraceable).
const EXPLORE_DEPTH: usize = 48;

/// How many times a type may be traced before its enums are all explored: each pass explores at
/// least one new variant, so this bounds the number of variants reached.
pub(crate) const MAX_PASSES: usize = 4096;

/// The fingerprint of `T`, computed once per type per process: later calls look it up here,
/// and a decorator keeps its own value type's at hand (no lookup at all).
pub(crate) fn fingerprint<T: DeserializeOwned>() -> u64 {
    static CACHE: LazyLock<RwLock<HashMap<TypeId, u64>>> = LazyLock::new(RwLock::default);
    let key = typeid::of::<T>();
    if let Some(&fp) = CACHE.read().get(&key) {
        return fp;
    }
    // Computed without the lock: the trace runs the type's own code.
    let fp = compute::<T>();
    *CACHE.write().entry(key).or_insert(fp)
}

/// Traces `T` and hashes its shape, or, where it cannot be traced, its name with the build.
fn compute<T: DeserializeOwned>() -> u64 {
    match shape_bytes::<T>() {
        Ok(bytes) => xxh3_64(&bytes),
        Err(_) => untraceable_fingerprint(std::any::type_name::<T>(), build_id()),
    }
}

/// The fingerprint of an untraceable type: its name, and the build that runs.
pub(crate) fn untraceable_fingerprint(type_name: &str, build: u64) -> u64 {
    let mut h = Xxh3::new();
    h.update(b"ckpt-build\x01");
    h.update(&(type_name.len() as u64).to_le_bytes());
    h.update(type_name.as_bytes());
    h.update(&build.to_le_bytes());
    h.digest()
}

/// Why a type could not be traced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Untraceable {
    /// The type asked for something only a self-describing format answers.
    NotSupported(&'static str),
    /// The type's `Deserialize` returned an error (it rejected the placeholder values).
    Rejected(String),
    /// The type's `Deserialize` panicked.
    Panicked,
    /// Deeper than `MAX_DEPTH`, or more passes than `MAX_PASSES`.
    TooDeep,
    /// One position answered two different shapes, or an enum has no variant that ends.
    Inconsistent(&'static str),
    /// Passes stopped finding anything new before the whole shape was known.
    Incomplete,
}

impl fmt::Display for Untraceable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Untraceable::NotSupported(what) => write!(f, "{what} is not traceable"),
            Untraceable::Rejected(msg) => write!(f, "rejected the placeholder values: {msg}"),
            Untraceable::Panicked => f.write_str("panicked while traced"),
            Untraceable::TooDeep => f.write_str("nests too deep to trace"),
            Untraceable::Inconsistent(what) => write!(f, "inconsistent: {what}"),
            Untraceable::Incomplete => f.write_str("some of its shape could not be reached"),
        }
    }
}

impl std::error::Error for Untraceable {}

impl de::Error for Untraceable {
    fn custom<M: fmt::Display>(msg: M) -> Self {
        Untraceable::Rejected(msg.to_string())
    }
}

/// The canonical encoding of `T`'s shape (what the fingerprint hashes), or why there is none.
///
/// Two sets of placeholder values are tried in turn: zeros and empty strings, then ones and
/// `"a"` (a `NonZeroU32` rejects the first).
pub(crate) fn shape_bytes<T: DeserializeOwned>() -> Result<Vec<u8>, Untraceable> {
    let mut first = None;
    for values in [Values::ZERO, Values::ONE] {
        let traced = std::panic::catch_unwind(|| {
            let mut trace = Trace::new(values);
            trace.run::<T>().map(|root| trace.encode(root))
        });
        match traced.unwrap_or(Err(Untraceable::Panicked)) {
            Ok(bytes) => return Ok(bytes),
            Err(e) => {
                first.get_or_insert(e);
            }
        }
    }
    Err(first.unwrap_or(Untraceable::Incomplete))
}

/// The placeholder values a trace answers with.
#[derive(Clone, Copy)]
struct Values {
    int: u8,
    boolean: bool,
    character: char,
    text: &'static str,
}

impl Values {
    const ZERO: Values = Values {
        int: 0,
        boolean: false,
        character: '\0',
        text: "",
    };
    const ONE: Values = Values {
        int: 1,
        boolean: true,
        character: 'a',
        text: "a",
    };
}

type NodeId = usize;
type ContainerId = usize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prim {
    Bool = 1,
    I8,
    I16,
    I32,
    I64,
    I128,
    U8,
    U16,
    U32,
    U64,
    U128,
    F32,
    F64,
    Char,
    Str,
    Bytes,
    Unit,
}

/// One position of the shape.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    /// Not reached yet.
    Unknown,
    Prim(Prim),
    Option(NodeId),
    Seq(NodeId),
    Map(NodeId, NodeId),
    Tuple(Vec<NodeId>),
    Named(ContainerId),
}

/// What a variant holds, as `VariantAccess` was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Content {
    Unknown,
    Unit,
    Newtype(NodeId),
    Tuple(Vec<NodeId>),
    Struct(&'static [&'static str], Vec<NodeId>),
    /// Refused by the type's code before it read anything (an `OsString`'s `Windows` variant
    /// on Unix): this build fails to decode it whatever the bytes hold.
    Refused,
}

#[derive(Debug)]
struct Variant {
    content: Content,
    /// Its content was traced to the end at least once.
    done: bool,
    /// How many times it is on the current path (a variant inside itself).
    active: u32,
    /// The fewest levels its content took to trace: where a variant must be picked to end a
    /// recursion, the shallowest one.
    height: usize,
    /// The type's code refused it (an `OsString`'s `Windows` variant on Unix): traced, but never
    /// picked again.
    refused: bool,
}

#[derive(Debug)]
enum Body {
    Unit,
    Newtype(NodeId),
    Tuple(Vec<NodeId>),
    Struct(&'static [&'static str], Vec<NodeId>),
    Enum(&'static [&'static str], Vec<Variant>),
}

/// A named container: a struct, a tuple or unit struct, a newtype, an enum.
#[derive(Debug)]
struct Container {
    name: &'static str,
    body: Body,
    /// How many times it is on the current path.
    active: u32,
    /// Known to be complete (see `Trace::is_complete`).
    complete: bool,
}

/// A walk of the shape by `Trace::complete`.
struct Walk {
    /// The containers being checked further up (a recursion counts as complete).
    on_path: Vec<bool>,
    /// The containers the walk checked.
    visited: Vec<ContainerId>,
}

/// The state of one trace of one type, across passes.
struct Trace {
    nodes: Vec<Node>,
    containers: Vec<Container>,
    /// Containers by the type of the visitor that reads them and their serde name: two types
    /// named `Point` (in two modules, or one generic at two parameters) are two containers.
    by_key: HashMap<(TypeId, &'static str), ContainerId>,
    values: Values,
    depth: usize,
    /// The deepest level reached since the innermost variant began.
    peak: usize,
    /// Whether this pass found anything new.
    progress: bool,
    /// Whether a variant took the error of this pass as its own refusal.
    refusal: bool,
    /// The last variant whose content was read to its end without an error.
    read_variant: Option<(ContainerId, usize)>,
    /// How many times a variant's content began to be read.
    accesses: u64,
    /// A failure this trace raised, kept even if the type's code swallowed the error.
    failed: Option<Untraceable>,
}

impl Trace {
    fn new(values: Values) -> Trace {
        Trace {
            nodes: vec![],
            containers: vec![],
            by_key: HashMap::new(),
            values,
            depth: 0,
            peak: 0,
            progress: false,
            refusal: false,
            read_variant: None,
            accesses: 0,
            failed: None,
        }
    }

    /// Traces `T` pass after pass until its whole shape is known; returns the root.
    fn run<T: DeserializeOwned>(&mut self) -> Result<NodeId, Untraceable> {
        let root = self.node();
        for _ in 0..MAX_PASSES {
            self.progress = false;
            self.refusal = false;
            let value = T::deserialize(Probe {
                trace: self,
                node: root,
            });
            if let Some(e) = self.failed.take() {
                return Err(e);
            }
            // An error of the type's own code ends the trace (what it would have read next is
            // unknown), unless a variant refused itself after its content was read in full (an
            // `OsString`'s `Windows` variant on Unix): that variant's shape is known, and the
            // next pass picks another.
            if let Err(e) = value
                && !self.refusal
            {
                return Err(e);
            }
            if self.is_complete(Some(root), None) {
                return Ok(root);
            }
            if !self.progress {
                return Err(Untraceable::Incomplete);
            }
        }
        Err(Untraceable::TooDeep)
    }

    fn fail<X>(&mut self, e: Untraceable) -> Result<X, Untraceable> {
        self.failed.get_or_insert(e.clone());
        Err(e)
    }

    fn node(&mut self) -> NodeId {
        self.nodes.push(Node::Unknown);
        self.nodes.len() - 1
    }

    /// Makes `node` the shape `want` builds (from fresh child nodes) unless it already has one;
    /// returns the shape it has. A node of another shape is an inconsistency.
    fn shape(
        &mut self,
        node: NodeId,
        same: impl Fn(&Node) -> bool,
        want: impl FnOnce(&mut Trace) -> Node,
    ) -> Result<Node, Untraceable> {
        match &self.nodes[node] {
            Node::Unknown => {
                let new = want(self);
                self.nodes[node] = new.clone();
                self.progress = true;
                Ok(new)
            }
            n if same(n) => Ok(n.clone()),
            _ => self.fail(Untraceable::Inconsistent("a position read two shapes")),
        }
    }

    fn prim(&mut self, node: NodeId, p: Prim) -> Result<(), Untraceable> {
        self.shape(node, |n| *n == Node::Prim(p), |_| Node::Prim(p))
            .map(drop)
    }

    fn children(&mut self, n: usize) -> Vec<NodeId> {
        (0..n).map(|_| self.node()).collect()
    }

    /// Enters one level; fails past `MAX_DEPTH`.
    fn enter(&mut self) -> Result<(), Untraceable> {
        if self.depth >= MAX_DEPTH {
            return self.fail(Untraceable::TooDeep);
        }
        self.depth += 1;
        self.peak = self.peak.max(self.depth);
        Ok(())
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    /// The container read by visitor type `V` under `name`, created with `body` if new; a
    /// container met again must declare the same fields, length or variants.
    fn container<V>(
        &mut self,
        node: NodeId,
        name: &'static str,
        body: impl FnOnce(&mut Trace) -> Body,
        same: impl Fn(&Body) -> bool,
    ) -> Result<ContainerId, Untraceable> {
        let key = (typeid::of::<V>(), name);
        let id = match self.by_key.get(&key) {
            Some(&id) => {
                if !same(&self.containers[id].body) {
                    return self.fail(Untraceable::Inconsistent("a container read two shapes"));
                }
                id
            }
            None => {
                let body = body(self);
                self.containers.push(Container {
                    name,
                    body,
                    active: 0,
                    complete: false,
                });
                let id = self.containers.len() - 1;
                self.by_key.insert(key, id);
                self.progress = true;
                id
            }
        };
        self.shape(node, |n| *n == Node::Named(id), |_| Node::Named(id))?;
        Ok(id)
    }

    /// Whether everything reachable from `node` is known: no unknown position, every variant of
    /// every enum traced. A container already being checked counts as complete (a recursive
    /// type is complete when the rest of it is).
    /// Whether `node` (or a variant's `content`) is complete, remembering the containers found
    /// complete: they stay so (positions are only ever filled in, variants only ever traced), so
    /// the next question about them is answered at once.
    fn is_complete(&mut self, node: Option<NodeId>, content: Option<&Content>) -> bool {
        let mut walk = Walk {
            on_path: vec![false; self.containers.len()],
            visited: vec![],
        };
        let ok = node.is_none_or(|n| self.complete(n, &mut walk))
            && content.is_none_or(|c| self.content_complete(c, &mut walk));
        if ok {
            // Every container the walk entered was found complete (a `false` anywhere would
            // have made the whole answer `false`).
            for id in walk.visited {
                self.containers[id].complete = true;
            }
        }
        ok
    }

    fn complete(&self, node: NodeId, seen: &mut Walk) -> bool {
        match &self.nodes[node] {
            Node::Unknown => false,
            Node::Prim(_) => true,
            Node::Option(c) | Node::Seq(c) => self.complete(*c, seen),
            Node::Map(k, v) => self.complete(*k, seen) && self.complete(*v, seen),
            Node::Tuple(cs) => cs.iter().all(|c| self.complete(*c, seen)),
            Node::Named(id) => self.container_complete(*id, seen),
        }
    }

    fn container_complete(&self, id: ContainerId, seen: &mut Walk) -> bool {
        if self.containers[id].complete {
            return true;
        }
        if std::mem::replace(&mut seen.on_path[id], true) {
            return true;
        }
        seen.visited.push(id);
        let ok = match &self.containers[id].body {
            Body::Unit => true,
            Body::Newtype(n) => self.complete(*n, seen),
            Body::Tuple(ns) | Body::Struct(_, ns) => ns.iter().all(|n| self.complete(*n, seen)),
            Body::Enum(_, vs) => vs
                .iter()
                .all(|v| v.done && self.content_complete(&v.content, seen)),
        };
        seen.on_path[id] = false;
        ok
    }

    fn content_complete(&self, content: &Content, seen: &mut Walk) -> bool {
        match content {
            Content::Unknown => false,
            Content::Unit | Content::Refused => true,
            Content::Newtype(n) => self.complete(*n, seen),
            Content::Tuple(ns) | Content::Struct(_, ns) => {
                ns.iter().all(|n| self.complete(*n, seen))
            }
        }
    }

    /// Whether an option, a sequence or a map should hand out an element at `node`: when what
    /// is there is not fully known, unless it is a container on the current path (a recursion,
    /// which is traced where it began).
    fn wants(&mut self, node: NodeId) -> bool {
        match &self.nodes[node] {
            _ if self.depth >= EXPLORE_DEPTH => false,
            Node::Named(id) if self.containers[*id].active > 0 => false,
            _ => !self.is_complete(Some(node), None),
        }
    }

    /// The variant of enum `id` to read next: one never traced (not on the path), else a traced
    /// one with something left to trace below it, else the shallowest traced one. Inside itself
    /// (a recursion), the shallowest traced one first: new variants are explored where the enum
    /// is met first, so that recursion stays shallow.
    fn pick_variant(&mut self, id: ContainerId) -> Option<usize> {
        let Body::Enum(_, vs) = &self.containers[id].body else {
            return None;
        };
        let usable = |v: &Variant| v.done && !v.refused && v.active == 0;
        let shallowest = |vs: &[Variant]| {
            vs.iter()
                .enumerate()
                .filter(|(_, v)| usable(v))
                .min_by_key(|(i, v)| (v.height, *i))
                .map(|(i, _)| i)
        };
        let recursion = self.containers[id].active > 0;
        if recursion && let Some(i) = shallowest(vs) {
            return Some(i);
        }
        if let Some(i) = vs.iter().position(|v| !v.done && v.active == 0) {
            return Some(i);
        }
        let contents: Vec<(usize, Content)> = vs
            .iter()
            .enumerate()
            .filter(|(_, v)| usable(v))
            .map(|(i, v)| (i, v.content.clone()))
            .collect();
        for (i, content) in contents {
            if !self.is_complete(None, Some(&content)) {
                return Some(i);
            }
        }
        let Body::Enum(_, vs) = &self.containers[id].body else {
            return None;
        };
        shallowest(vs)
    }

    fn variant_mut(&mut self, id: ContainerId, index: usize) -> &mut Variant {
        match &mut self.containers[id].body {
            Body::Enum(_, vs) => &mut vs[index],
            // `pick_variant` only returns indices of enums.
            _ => unreachable!("a variant of a container that is not an enum"),
        }
    }

    /// The canonical encoding of the shape at `root` (ARCHITECTURE.md, "The type fingerprint").
    fn encode(&self, root: NodeId) -> Vec<u8> {
        let mut out = b"ckpt-shape\x01".to_vec();
        let mut numbers = vec![None; self.containers.len()];
        let mut next = 0u64;
        self.encode_node(root, &mut out, &mut numbers, &mut next);
        out
    }

    fn encode_node(
        &self,
        node: NodeId,
        out: &mut Vec<u8>,
        numbers: &mut [Option<u64>],
        next: &mut u64,
    ) {
        match &self.nodes[node] {
            // A complete trace has no unknown node; encoded distinctly all the same.
            Node::Unknown => out.push(0x00),
            Node::Prim(p) => out.push(*p as u8),
            Node::Option(c) => {
                out.push(0x20);
                self.encode_node(*c, out, numbers, next);
            }
            Node::Seq(c) => {
                out.push(0x21);
                self.encode_node(*c, out, numbers, next);
            }
            Node::Map(k, v) => {
                out.push(0x22);
                self.encode_node(*k, out, numbers, next);
                self.encode_node(*v, out, numbers, next);
            }
            Node::Tuple(cs) => {
                out.push(0x23);
                self.encode_list(cs, None, out, numbers, next);
            }
            Node::Named(id) => {
                if let Some(n) = numbers[*id] {
                    out.push(0x24);
                    out.extend_from_slice(&n.to_le_bytes());
                    return;
                }
                numbers[*id] = Some(*next);
                *next += 1;
                let c = &self.containers[*id];
                out.push(0x25);
                lp(out, c.name);
                match &c.body {
                    Body::Unit => out.push(0x30),
                    Body::Newtype(n) => {
                        out.push(0x31);
                        self.encode_node(*n, out, numbers, next);
                    }
                    Body::Tuple(ns) => {
                        out.push(0x32);
                        self.encode_list(ns, None, out, numbers, next);
                    }
                    Body::Struct(fields, ns) => {
                        out.push(0x33);
                        self.encode_list(ns, Some(fields), out, numbers, next);
                    }
                    Body::Enum(names, vs) => {
                        out.push(0x34);
                        out.extend_from_slice(&(vs.len() as u64).to_le_bytes());
                        for (name, v) in names.iter().zip(vs) {
                            lp(out, name);
                            match &v.content {
                                Content::Unknown => out.push(0x00),
                                Content::Unit => out.push(0x40),
                                Content::Refused => out.push(0x44),
                                Content::Newtype(n) => {
                                    out.push(0x41);
                                    self.encode_node(*n, out, numbers, next);
                                }
                                Content::Tuple(ns) => {
                                    out.push(0x42);
                                    self.encode_list(ns, None, out, numbers, next);
                                }
                                Content::Struct(fields, ns) => {
                                    out.push(0x43);
                                    self.encode_list(ns, Some(fields), out, numbers, next);
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    fn encode_list(
        &self,
        nodes: &[NodeId],
        names: Option<&[&str]>,
        out: &mut Vec<u8>,
        numbers: &mut [Option<u64>],
        next: &mut u64,
    ) {
        out.extend_from_slice(&(nodes.len() as u64).to_le_bytes());
        for (i, n) in nodes.iter().enumerate() {
            if let Some(names) = names {
                lp(out, names.get(i).copied().unwrap_or(""));
            }
            self.encode_node(*n, out, numbers, next);
        }
    }
}

/// `u64le(len) ‖ bytes`.
fn lp(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// The deserializer handed to the traced type: one position of the shape.
struct Probe<'t> {
    trace: &'t mut Trace,
    node: NodeId,
}

/// Elements of a sequence, a tuple, a struct, or (in pairs) a map.
struct Elements<'t> {
    trace: &'t mut Trace,
    nodes: std::vec::IntoIter<NodeId>,
}

impl<'de> de::SeqAccess<'de> for Elements<'_> {
    type Error = Untraceable;

    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, Untraceable> {
        match self.nodes.next() {
            Some(node) => seed
                .deserialize(Probe {
                    trace: self.trace,
                    node,
                })
                .map(Some),
            None => Ok(None),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.nodes.len())
    }
}

impl<'de> de::MapAccess<'de> for Elements<'_> {
    type Error = Untraceable;

    fn next_key_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, Untraceable> {
        de::SeqAccess::next_element_seed(self, seed)
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<S::Value, Untraceable> {
        match de::SeqAccess::next_element_seed(self, seed)? {
            Some(v) => Ok(v),
            None => self
                .trace
                .fail(Untraceable::Inconsistent("a map value asked for twice")),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.nodes.len() / 2)
    }
}

/// Hands `nodes` to the visitor as a sequence (the caller counts the level).
fn seq<'de, V: Visitor<'de>>(
    trace: &mut Trace,
    nodes: Vec<NodeId>,
    visitor: V,
) -> Result<V::Value, Untraceable> {
    visitor.visit_seq(Elements {
        trace,
        nodes: nodes.into_iter(),
    })
}

impl Probe<'_> {
    /// Runs `inside` one level down.
    fn down<R>(
        self,
        inside: impl FnOnce(&mut Trace) -> Result<R, Untraceable>,
    ) -> Result<R, Untraceable> {
        self.trace.enter()?;
        let r = inside(&mut *self.trace);
        self.trace.leave();
        r
    }

    /// Runs `inside` with container `id` on the path.
    fn within<R>(
        self,
        id: ContainerId,
        inside: impl FnOnce(Probe<'_>) -> Result<R, Untraceable>,
    ) -> Result<R, Untraceable> {
        self.trace.enter()?;
        self.trace.containers[id].active += 1;
        let node = self.node;
        let r = inside(Probe {
            trace: &mut *self.trace,
            node,
        });
        self.trace.containers[id].active -= 1;
        self.trace.leave();
        r
    }
}

macro_rules! primitive {
    ($($method:ident => $prim:ident, $visit:ident($value:expr);)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Untraceable> {
            self.trace.prim(self.node, Prim::$prim)?;
            let values = self.trace.values;
            #[allow(clippy::redundant_closure_call)]
            visitor.$visit(($value)(values))
        }
    )*};
}

impl<'de> de::Deserializer<'de> for Probe<'_> {
    type Error = Untraceable;

    primitive! {
        deserialize_bool => Bool, visit_bool(|v: Values| v.boolean);
        deserialize_i8 => I8, visit_i8(|v: Values| v.int as i8);
        deserialize_i16 => I16, visit_i16(|v: Values| i16::from(v.int));
        deserialize_i32 => I32, visit_i32(|v: Values| i32::from(v.int));
        deserialize_i64 => I64, visit_i64(|v: Values| i64::from(v.int));
        deserialize_i128 => I128, visit_i128(|v: Values| i128::from(v.int));
        deserialize_u8 => U8, visit_u8(|v: Values| v.int);
        deserialize_u16 => U16, visit_u16(|v: Values| u16::from(v.int));
        deserialize_u32 => U32, visit_u32(|v: Values| u32::from(v.int));
        deserialize_u64 => U64, visit_u64(|v: Values| u64::from(v.int));
        deserialize_u128 => U128, visit_u128(|v: Values| u128::from(v.int));
        deserialize_f32 => F32, visit_f32(|v: Values| f32::from(v.int));
        deserialize_f64 => F64, visit_f64(|v: Values| f64::from(v.int));
        deserialize_char => Char, visit_char(|v: Values| v.character);
        deserialize_str => Str, visit_borrowed_str(|v: Values| v.text);
        deserialize_string => Str, visit_string(|v: Values| v.text.to_owned());
        deserialize_bytes => Bytes, visit_borrowed_bytes(|v: Values| v.text.as_bytes());
        deserialize_byte_buf => Bytes, visit_byte_buf(|v: Values| v.text.as_bytes().to_vec());
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Untraceable> {
        self.trace.prim(self.node, Prim::Unit)?;
        visitor.visit_unit()
    }

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Untraceable> {
        self.trace
            .fail(Untraceable::NotSupported("deserialize_any"))
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Untraceable> {
        self.trace
            .fail(Untraceable::NotSupported("deserialize_identifier"))
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Untraceable> {
        self.trace
            .fail(Untraceable::NotSupported("deserialize_ignored_any"))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Untraceable> {
        let child = match self.trace.shape(
            self.node,
            |n| matches!(n, Node::Option(_)),
            |t| Node::Option(t.node()),
        )? {
            Node::Option(c) => c,
            _ => unreachable!("shape returns the shape asked for"),
        };
        if !self.trace.wants(child) {
            return visitor.visit_none();
        }
        self.down(|trace| visitor.visit_some(Probe { trace, node: child }))
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Untraceable> {
        let child = match self.trace.shape(
            self.node,
            |n| matches!(n, Node::Seq(_)),
            |t| Node::Seq(t.node()),
        )? {
            Node::Seq(c) => c,
            _ => unreachable!("shape returns the shape asked for"),
        };
        let elements = if self.trace.wants(child) {
            vec![child]
        } else {
            vec![]
        };
        self.down(|t| seq(t, elements, visitor))
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Untraceable> {
        let (k, v) = match self.trace.shape(
            self.node,
            |n| matches!(n, Node::Map(..)),
            |t| Node::Map(t.node(), t.node()),
        )? {
            Node::Map(k, v) => (k, v),
            _ => unreachable!("shape returns the shape asked for"),
        };
        let pairs = if self.trace.wants(k) || self.trace.wants(v) {
            vec![k, v]
        } else {
            vec![]
        };
        self.down(|trace| {
            visitor.visit_map(Elements {
                trace,
                nodes: pairs.into_iter(),
            })
        })
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Untraceable> {
        let nodes = match self.trace.shape(
            self.node,
            |n| matches!(n, Node::Tuple(cs) if cs.len() == len),
            |t| Node::Tuple(t.children(len)),
        )? {
            Node::Tuple(cs) => cs,
            _ => unreachable!("shape returns the shape asked for"),
        };
        self.down(|t| seq(t, nodes, visitor))
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Untraceable> {
        self.trace
            .container::<V>(self.node, name, |_| Body::Unit, |b| matches!(b, Body::Unit))?;
        visitor.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Untraceable> {
        let id = self.trace.container::<V>(
            self.node,
            name,
            |t| Body::Newtype(t.node()),
            |b| matches!(b, Body::Newtype(_)),
        )?;
        let Body::Newtype(inner) = self.trace.containers[id].body else {
            unreachable!("checked above")
        };
        self.within(id, |p| {
            visitor.visit_newtype_struct(Probe {
                trace: p.trace,
                node: inner,
            })
        })
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Untraceable> {
        let id = self.trace.container::<V>(
            self.node,
            name,
            |t| Body::Tuple(t.children(len)),
            |b| matches!(b, Body::Tuple(ns) if ns.len() == len),
        )?;
        let Body::Tuple(nodes) = &self.trace.containers[id].body else {
            unreachable!("checked above")
        };
        let nodes = nodes.clone();
        self.within(id, |p| seq(p.trace, nodes, visitor))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Untraceable> {
        let id = self.trace.container::<V>(
            self.node,
            name,
            |t| Body::Struct(fields, t.children(fields.len())),
            |b| matches!(b, Body::Struct(f, _) if *f == fields),
        )?;
        let Body::Struct(_, nodes) = &self.trace.containers[id].body else {
            unreachable!("checked above")
        };
        let nodes = nodes.clone();
        self.within(id, |p| seq(p.trace, nodes, visitor))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Untraceable> {
        if variants.is_empty() {
            return self
                .trace
                .fail(Untraceable::Inconsistent("an enum without variants"));
        }
        let new_variant = || Variant {
            content: Content::Unknown,
            done: false,
            active: 0,
            height: usize::MAX,
            refused: false,
        };
        let id = self.trace.container::<V>(
            self.node,
            name,
            |_| Body::Enum(variants, variants.iter().map(|_| new_variant()).collect()),
            |b| matches!(b, Body::Enum(v, _) if *v == variants),
        )?;
        let Some(index) = self.trace.pick_variant(id) else {
            return self.trace.fail(Untraceable::Inconsistent(
                "an enum with no variant that ends",
            ));
        };
        self.within(id, |p| {
            let trace = p.trace;
            let start = trace.depth;
            let outer_peak = std::mem::replace(&mut trace.peak, start);
            trace.variant_mut(id, index).active += 1;
            let accesses = trace.accesses;
            let r = visitor.visit_enum(VariantProbe {
                trace: &mut *trace,
                container: id,
                index,
            });
            let height = trace.peak - start;
            trace.peak = trace.peak.max(outer_peak);
            // Refused by the type's code after its whole content was read (nothing was left
            // to read: the variant access is spent), or before any of it was: either way its
            // shape in this build is known. Refused halfway, it is not.
            let whole = trace.read_variant == Some((id, index));
            let untouched = trace.accesses == accesses;
            let refusal =
                r.is_err() && trace.failed.is_none() && !trace.refusal && (whole || untouched);
            let v = trace.variant_mut(id, index);
            if refusal && untouched && v.content == Content::Unknown {
                v.content = Content::Refused;
            }
            v.active -= 1;
            if r.is_ok() || refusal {
                v.height = v.height.min(height);
                v.refused |= refusal;
                if !v.done {
                    v.done = true;
                    trace.progress = true;
                }
            }
            trace.refusal |= refusal;
            r
        })
    }

    fn is_human_readable(&self) -> bool {
        // As postcard: types with two encodings (addresses, times) pick the compact one.
        false
    }
}

/// An enum's variant, chosen by the trace.
struct VariantProbe<'t> {
    trace: &'t mut Trace,
    container: ContainerId,
    index: usize,
}

impl VariantProbe<'_> {
    /// Records what the variant holds (checked against an earlier trace of it).
    fn content(
        &mut self,
        same: impl Fn(&Content) -> bool,
        want: impl FnOnce(&mut Trace) -> Content,
    ) -> Result<Content, Untraceable> {
        self.trace.accesses += 1;
        let current = &self.trace.variant_mut(self.container, self.index).content;
        if *current == Content::Unknown {
            let new = want(self.trace);
            self.trace.variant_mut(self.container, self.index).content = new.clone();
            self.trace.progress = true;
            return Ok(new);
        }
        if same(current) {
            return Ok(current.clone());
        }
        self.trace
            .fail(Untraceable::Inconsistent("a variant read two shapes"))
    }
}

impl<'de> de::EnumAccess<'de> for VariantProbe<'_> {
    type Error = Untraceable;
    type Variant = Self;

    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Self), Untraceable> {
        // As postcard: the variant's index, as a `u32`.
        let index: U32Deserializer<Untraceable> = (self.index as u32).into_deserializer();
        let value = seed.deserialize(index)?;
        Ok((value, self))
    }
}

impl<'de> de::VariantAccess<'de> for VariantProbe<'_> {
    type Error = Untraceable;

    fn unit_variant(mut self) -> Result<(), Untraceable> {
        self.content(|c| *c == Content::Unit, |_| Content::Unit)?;
        self.trace.read_variant = Some((self.container, self.index));
        Ok(())
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(
        mut self,
        seed: S,
    ) -> Result<S::Value, Untraceable> {
        let Content::Newtype(node) = self.content(
            |c| matches!(c, Content::Newtype(_)),
            |t| Content::Newtype(t.node()),
        )?
        else {
            unreachable!("content returns the content asked for")
        };
        let value = seed.deserialize(Probe {
            trace: &mut *self.trace,
            node,
        })?;
        self.trace.read_variant = Some((self.container, self.index));
        Ok(value)
    }

    fn tuple_variant<V: Visitor<'de>>(
        mut self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Untraceable> {
        let Content::Tuple(nodes) = self.content(
            |c| matches!(c, Content::Tuple(ns) if ns.len() == len),
            |t| Content::Tuple(t.children(len)),
        )?
        else {
            unreachable!("content returns the content asked for")
        };
        let value = seq(&mut *self.trace, nodes, visitor)?;
        self.trace.read_variant = Some((self.container, self.index));
        Ok(value)
    }

    fn struct_variant<V: Visitor<'de>>(
        mut self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Untraceable> {
        let Content::Struct(_, nodes) = self.content(
            |c| matches!(c, Content::Struct(f, _) if *f == fields),
            |t| Content::Struct(fields, t.children(fields.len())),
        )?
        else {
            unreachable!("content returns the content asked for")
        };
        let value = seq(&mut *self.trace, nodes, visitor)?;
        self.trace.read_variant = Some((self.container, self.index));
        Ok(value)
    }
}

/// The identity of the running build, for untraceable types: xxh3-64 of the file that holds
/// this code (the executable, or the shared library ckpt was linked into, found through
/// `/proc/self/maps` on Linux), read once per process. Where no such file can be read, a value
/// drawn for this process alone (its id, the time, an address), so that untraceable types are
/// then read back only by the process that saved them.
pub(crate) fn build_id() -> u64 {
    static ID: OnceLock<u64> = OnceLock::new();
    *ID.get_or_init(|| {
        code_file()
            .and_then(|(path, inode)| hash_file(&path, inode).ok())
            .unwrap_or_else(process_nonce)
    })
}

/// The file this code was loaded from, and on Linux the inode it was mapped from (a file
/// replaced since, by a rebuild, is not the running build).
fn code_file() -> Option<(std::path::PathBuf, Option<u64>)> {
    #[cfg(target_os = "linux")]
    {
        // The mapping that holds this very function: the executable, or a shared library
        // (a Python extension, a plugin) that ckpt and the caller's types were linked into.
        let here = build_id as fn() -> u64 as usize;
        let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
        maps.lines()
            .find_map(|line| mapped_file(line, here))
            .map(|(path, inode)| (path, Some(inode)))
    }
    #[cfg(not(target_os = "linux"))]
    {
        std::env::current_exe().ok().map(|path| (path, None))
    }
}

/// The file and inode of one `/proc/self/maps` line, if the line's range holds `addr`.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn mapped_file(line: &str, addr: usize) -> Option<(std::path::PathBuf, u64)> {
    // range, perms, offset, device, inode, then the path (padded; it may hold spaces).
    let mut fields = line.splitn(6, ' ');
    let (start, end) = fields.next()?.split_once('-')?;
    let start = usize::from_str_radix(start, 16).ok()?;
    let end = usize::from_str_radix(end, 16).ok()?;
    if !(start..end).contains(&addr) {
        return None;
    }
    let inode = fields.nth(3)?.parse().ok()?;
    let path = fields.next()?.trim_start();
    path.starts_with('/').then(|| (path.into(), inode))
}

fn hash_file(path: &std::path::Path, inode: Option<u64>) -> std::io::Result<u64> {
    use std::io::Read as _;
    let mut file = std::fs::File::open(path)?;
    #[cfg(unix)]
    if let Some(inode) = inode {
        use std::os::unix::fs::MetadataExt as _;
        if file.metadata()?.ino() != inode {
            return Err(std::io::Error::other("the file was replaced"));
        }
    }
    #[cfg(not(unix))]
    let _ = inode;
    let mut hasher = twox_hash::XxHash3_64::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(hasher.finish());
        }
        hasher.write(&buf[..n]);
    }
}

fn process_nonce() -> u64 {
    let local = 0u8;
    let mut h = Xxh3::new();
    h.update(b"ckpt-process\x01");
    h.update(&std::process::id().to_le_bytes());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    h.update(&now.as_nanos().to_le_bytes());
    h.update(&(std::ptr::addr_of!(local) as usize).to_le_bytes());
    h.digest()
}

#[cfg(test)]
mod tests {
    // The types below are only traced, never built.
    #![allow(dead_code)]

    use std::collections::{BTreeMap, HashMap, HashSet};

    use serde::Deserialize;

    use super::*;

    fn traced<T: DeserializeOwned>() -> Vec<u8> {
        match shape_bytes::<T>() {
            Ok(bytes) => bytes,
            Err(e) => panic!("{} untraceable: {e}", std::any::type_name::<T>()),
        }
    }

    fn untraceable<T: DeserializeOwned>() -> Untraceable {
        match shape_bytes::<T>() {
            Ok(_) => panic!("{} traced", std::any::type_name::<T>()),
            Err(e) => e,
        }
    }

    #[derive(Deserialize)]
    enum Leaf {
        Nil,
        Cons(u32, Box<Leaf>),
    }

    /// The recursive variant first: a naive trace recurses without end here.
    #[derive(Deserialize)]
    enum List {
        Cons(u32, Box<List>),
        Nil,
    }

    #[derive(Deserialize)]
    struct Tree {
        v: u32,
        children: Vec<Tree>,
        by_name: BTreeMap<String, Tree>,
        tag: Tag,
    }

    #[derive(Deserialize)]
    enum Tag {
        A,
        B(Option<Box<Tree>>),
        C { x: i8 },
    }

    #[derive(Deserialize)]
    struct Ping {
        pong: Option<Box<Pong>>,
        e: Tag,
    }

    #[derive(Deserialize)]
    struct Pong {
        ping: Vec<Ping>,
        list: List,
    }

    #[derive(Deserialize)]
    enum Expr {
        Lit(i64),
        Add(Box<Expr>, Box<Expr>),
        Neg(Box<Expr>),
        Let {
            name: String,
            value: Box<Expr>,
            body: Box<Expr>,
        },
    }

    #[test]
    fn recursive_and_nested_types_trace() {
        traced::<Leaf>();
        traced::<List>();
        traced::<Tree>();
        traced::<Ping>();
        traced::<Pong>();
        traced::<Expr>();
        traced::<Vec<Option<(List, Tag, HashMap<u8, Expr>)>>>();
        // Every variant of every enum reached is in the shape.
        let shape = traced::<Expr>();
        for name in ["Lit", "Add", "Neg", "Let", "name", "value", "body"] {
            let lp = [&(name.len() as u64).to_le_bytes()[..], name.as_bytes()].concat();
            assert!(shape.windows(lp.len()).any(|w| w == lp), "{name} missing");
        }
    }

    macro_rules! wide_enum {
        ($name:ident($inner:ty): $($v:ident)*) => {
            #[derive(Deserialize)]
            enum $name { $($v($inner, Option<Box<$name>>),)* }
        };
    }
    wide_enum!(Inner(u8): A0 A1 A2 A3 A4 A5 A6 A7 A8 A9 A10 A11 A12 A13 A14 A15 A16 A17 A18 A19
        A20 A21 A22 A23 A24 A25 A26 A27 A28 A29 A30 A31 A32 A33 A34 A35 A36 A37 A38 A39);
    wide_enum!(Outer(Vec<Inner>): B0 B1 B2 B3 B4 B5 B6 B7 B8 B9 B10 B11 B12 B13 B14 B15 B16 B17
        B18 B19 B20 B21 B22 B23 B24 B25 B26 B27 B28 B29 B30 B31 B32 B33 B34 B35 B36 B37 B38 B39);

    #[test]
    fn wide_recursive_enums_trace_quickly() {
        let start = std::time::Instant::now();
        let shape = traced::<(Outer, BTreeMap<u8, Outer>, Inner)>();
        // Generous: the point is that it ends, and soon.
        assert!(
            start.elapsed() < std::time::Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        for name in ["A39", "B39"] {
            let lp = [&(name.len() as u64).to_le_bytes()[..], name.as_bytes()].concat();
            assert!(shape.windows(lp.len()).any(|w| w == lp), "{name} missing");
        }
    }

    #[test]
    fn std_types_trace() {
        traced::<(
            bool,
            i8,
            i16,
            i32,
            i64,
            i128,
            u8,
            u16,
            u32,
            u64,
            u128,
            f32,
            f64,
            char,
        )>();
        traced::<(
            String,
            Box<str>,
            Vec<u8>,
            std::path::PathBuf,
            std::ffi::OsString,
        )>();
        traced::<(std::time::Duration, std::time::SystemTime, std::net::IpAddr)>();
        traced::<(HashMap<String, Vec<u64>>, HashSet<u32>, BTreeMap<u8, ()>)>();
        traced::<([u8; 32], [(u8, u16); 3], Option<Option<u8>>)>();
        traced::<Result<Vec<String>, (u8, String)>>();
        traced::<(std::num::NonZeroU32, std::marker::PhantomData<u8>)>();
        traced::<Box<std::borrow::Cow<'static, str>>>();
    }

    #[test]
    fn the_shape_tells_layouts_apart() {
        mod a {
            #[derive(serde::Deserialize)]
            pub struct Point {
                pub x: u32,
                pub y: u32,
            }
            #[derive(serde::Deserialize)]
            pub enum Shape {
                Circle(u32),
                Square(u32),
            }
        }
        mod swapped {
            #[derive(serde::Deserialize)]
            pub struct Point {
                pub y: u32,
                pub x: u32,
            }
        }
        mod signed {
            #[derive(serde::Deserialize)]
            pub struct Point {
                pub x: i32,
                pub y: u32,
            }
        }
        mod longer {
            #[derive(serde::Deserialize)]
            pub struct Point {
                pub x: u32,
                pub y: u32,
                pub z: u32,
            }
        }
        mod renamed {
            #[derive(serde::Deserialize)]
            pub enum Shape {
                Disc(u32),
                Square(u32),
            }
        }
        mod reordered {
            #[derive(serde::Deserialize)]
            pub enum Shape {
                Square(u32),
                Circle(u32),
            }
        }
        mod same {
            #[derive(serde::Deserialize)]
            pub struct Point {
                pub x: u32,
                pub y: u32,
            }
        }
        let point = traced::<a::Point>();
        assert_ne!(point, traced::<swapped::Point>());
        assert_ne!(point, traced::<signed::Point>());
        assert_ne!(point, traced::<longer::Point>());
        assert_eq!(point, traced::<same::Point>());
        let shape = traced::<a::Shape>();
        assert_ne!(shape, traced::<renamed::Shape>());
        assert_ne!(shape, traced::<reordered::Shape>());
        // Two types of one serde name inside one value are two containers.
        assert_ne!(
            traced::<(a::Point, same::Point)>(),
            traced::<(a::Point, signed::Point)>()
        );
        assert_ne!(traced::<u32>(), traced::<i32>());
        assert_ne!(traced::<Vec<u32>>(), traced::<Option<u32>>());
    }

    #[test]
    fn what_cannot_be_traced_fails_without_running_away() {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Untagged {
            A(u32),
            B(String),
        }
        #[derive(Deserialize)]
        struct Infinite {
            again: Box<Infinite>,
        }
        #[derive(Deserialize)]
        enum Endless {
            Again(Box<Endless>),
        }
        struct Picky;
        impl<'de> Deserialize<'de> for Picky {
            fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                match u32::deserialize(d)? {
                    7 => Ok(Picky),
                    n => Err(de::Error::custom(format!("{n} is not 7"))),
                }
            }
        }
        struct Panics;
        impl<'de> Deserialize<'de> for Panics {
            fn deserialize<D: de::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
                panic!("traced")
            }
        }
        assert_eq!(
            untraceable::<Untagged>(),
            Untraceable::NotSupported("deserialize_any")
        );
        assert_eq!(untraceable::<Infinite>(), Untraceable::TooDeep);
        assert!(matches!(
            untraceable::<Endless>(),
            Untraceable::TooDeep | Untraceable::Inconsistent(_)
        ));
        assert_eq!(
            untraceable::<Picky>(),
            Untraceable::Rejected("0 is not 7".into())
        );
        // Refused halfway through a variant's content: what it would read next is unknown.
        #[derive(Deserialize)]
        enum Halfway {
            Fine(u8),
            Half(u8, Picky, String),
        }
        assert_eq!(
            untraceable::<Halfway>(),
            Untraceable::Rejected("0 is not 7".into())
        );
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let panicked = untraceable::<Panics>();
        std::panic::set_hook(hook);
        assert_eq!(panicked, Untraceable::Panicked);
    }

    #[test]
    fn an_untraceable_type_is_fingerprinted_with_the_build() {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Untagged {
            A(u32),
        }
        let fp = fingerprint::<Untagged>();
        assert_eq!(fp, fingerprint::<Untagged>());
        assert_eq!(
            fp,
            untraceable_fingerprint(std::any::type_name::<Untagged>(), build_id())
        );
        assert_ne!(
            fp,
            untraceable_fingerprint(std::any::type_name::<Untagged>(), build_id() ^ 1)
        );
        // The build is the file this code runs from, hashed.
        let (path, inode) = code_file().unwrap();
        assert_eq!(build_id(), hash_file(&path, inode).unwrap());
        #[cfg(target_os = "linux")]
        assert_eq!(path, std::env::current_exe().unwrap());
    }

    #[test]
    fn maps_lines_parse() {
        let line = "55d0c0a00000-55d0c0b00000 r-xp 00001000 08:01 1234567                    /opt/my app/bin";
        assert_eq!(
            mapped_file(line, 0x55d0c0a00010),
            Some(("/opt/my app/bin".into(), 1234567))
        );
        assert_eq!(mapped_file(line, 0x55d0c0b00000), None);
        assert_eq!(
            mapped_file(
                "7ffd1000-7ffd2000 rw-p 00000000 00:00 0 [stack]",
                0x7ffd1000
            ),
            None
        );
    }

    #[test]
    fn the_encoding_is_pinned() {
        #[derive(Deserialize)]
        struct P {
            x: u32,
            y: Option<Vec<i8>>,
        }
        let mut want = b"ckpt-shape\x01".to_vec();
        want.push(0x25);
        want.extend_from_slice(&1u64.to_le_bytes());
        want.push(b'P');
        want.push(0x33);
        want.extend_from_slice(&2u64.to_le_bytes());
        want.extend_from_slice(&1u64.to_le_bytes());
        want.push(b'x');
        want.push(Prim::U32 as u8);
        want.extend_from_slice(&1u64.to_le_bytes());
        want.push(b'y');
        want.extend_from_slice(&[0x20, 0x21, Prim::I8 as u8]);
        assert_eq!(traced::<P>(), want);
        assert_eq!(fingerprint::<P>(), 0x2df0_6613_7c4c_bc68);
    }
}
