//! The probe: the serde `Deserializer` a traced type is run against. It answers every request
//! with a placeholder value and records in the trace what was asked for, as postcard would ask
//! it of stored bytes (an enum's variant index as a `u32`, the compact form of types with two).

use serde::de::value::U32Deserializer;
use serde::de::{self, DeserializeSeed, IntoDeserializer as _, Visitor};

use super::trace::{Body, ContainerId, Content, Node, NodeId, Prim, Trace, Variant};
use super::{Untraceable, Values};

/// The deserializer handed to the traced type: one position of the shape.
pub(super) struct Probe<'t> {
    pub(super) trace: &'t mut Trace,
    pub(super) node: NodeId,
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
