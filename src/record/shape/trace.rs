//! The state of one trace: the shape recorded so far (positions, named containers, the variants
//! of enums), the passes that run the type until all of it is known, and the choice of what to
//! explore next (which variant, whether an option or a sequence hands out an element).

use std::any::TypeId;
use std::collections::HashMap;

use serde::de::DeserializeOwned;

use super::probe::Probe;
use super::{EXPLORE_DEPTH, MAX_DEPTH, MAX_PASSES, Untraceable, Values};

pub(super) type NodeId = usize;
pub(super) type ContainerId = usize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Prim {
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
pub(super) enum Node {
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
pub(super) enum Content {
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
pub(super) struct Variant {
    pub(super) content: Content,
    /// Its content was traced to the end at least once.
    pub(super) done: bool,
    /// How many times it is on the current path (a variant inside itself).
    pub(super) active: u32,
    /// The fewest levels its content took to trace: where a variant must be picked to end a
    /// recursion, the shallowest one.
    pub(super) height: usize,
    /// The type's code refused it (an `OsString`'s `Windows` variant on Unix): traced, but never
    /// picked again.
    pub(super) refused: bool,
}

#[derive(Debug)]
pub(super) enum Body {
    Unit,
    Newtype(NodeId),
    Tuple(Vec<NodeId>),
    Struct(&'static [&'static str], Vec<NodeId>),
    Enum(&'static [&'static str], Vec<Variant>),
}

/// A named container: a struct, a tuple or unit struct, a newtype, an enum.
#[derive(Debug)]
pub(super) struct Container {
    pub(super) name: &'static str,
    pub(super) body: Body,
    /// How many times it is on the current path.
    pub(super) active: u32,
    /// Known to be complete (see `Trace::is_complete`).
    pub(super) complete: bool,
}

/// A walk of the shape by `Trace::complete`.
struct Walk {
    /// The containers being checked further up (a recursion counts as complete).
    on_path: Vec<bool>,
    /// The containers the walk checked.
    visited: Vec<ContainerId>,
}

/// The state of one trace of one type, across passes.
pub(super) struct Trace {
    pub(super) nodes: Vec<Node>,
    pub(super) containers: Vec<Container>,
    /// Containers by the type of the visitor that reads them and their serde name: two types
    /// named `Point` (in two modules, or one generic at two parameters) are two containers.
    pub(super) by_key: HashMap<(TypeId, &'static str), ContainerId>,
    pub(super) values: Values,
    pub(super) depth: usize,
    /// The deepest level reached since the innermost variant began.
    pub(super) peak: usize,
    /// Whether this pass found anything new.
    pub(super) progress: bool,
    /// Whether a variant took the error of this pass as its own refusal.
    pub(super) refusal: bool,
    /// The last variant whose content was read to its end without an error.
    pub(super) read_variant: Option<(ContainerId, usize)>,
    /// How many times a variant's content began to be read.
    pub(super) accesses: u64,
    /// A failure this trace raised, kept even if the type's code swallowed the error.
    pub(super) failed: Option<Untraceable>,
}

impl Trace {
    pub(super) fn new(values: Values) -> Trace {
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
    pub(super) fn run<T: DeserializeOwned>(&mut self) -> Result<NodeId, Untraceable> {
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

    pub(super) fn fail<X>(&mut self, e: Untraceable) -> Result<X, Untraceable> {
        self.failed.get_or_insert(e.clone());
        Err(e)
    }

    pub(super) fn node(&mut self) -> NodeId {
        self.nodes.push(Node::Unknown);
        self.nodes.len() - 1
    }

    /// Makes `node` the shape `want` builds (from fresh child nodes) unless it already has one;
    /// returns the shape it has. A node of another shape is an inconsistency.
    pub(super) fn shape(
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

    pub(super) fn prim(&mut self, node: NodeId, p: Prim) -> Result<(), Untraceable> {
        self.shape(node, |n| *n == Node::Prim(p), |_| Node::Prim(p))
            .map(drop)
    }

    pub(super) fn children(&mut self, n: usize) -> Vec<NodeId> {
        (0..n).map(|_| self.node()).collect()
    }

    /// Enters one level; fails past `MAX_DEPTH`.
    pub(super) fn enter(&mut self) -> Result<(), Untraceable> {
        if self.depth >= MAX_DEPTH {
            return self.fail(Untraceable::TooDeep);
        }
        self.depth += 1;
        self.peak = self.peak.max(self.depth);
        Ok(())
    }

    pub(super) fn leave(&mut self) {
        self.depth -= 1;
    }

    /// The container read by visitor type `V` under `name`, created with `body` if new; a
    /// container met again must declare the same fields, length or variants.
    pub(super) fn container<V>(
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
    pub(super) fn wants(&mut self, node: NodeId) -> bool {
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
    pub(super) fn pick_variant(&mut self, id: ContainerId) -> Option<usize> {
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

    pub(super) fn variant_mut(&mut self, id: ContainerId, index: usize) -> &mut Variant {
        match &mut self.containers[id].body {
            Body::Enum(_, vs) => &mut vs[index],
            // `pick_variant` only returns indices of enums.
            _ => unreachable!("a variant of a container that is not an enum"),
        }
    }
}
