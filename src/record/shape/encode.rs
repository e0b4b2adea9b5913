//! The canonical encoding of a traced shape: the bytes the type fingerprint hashes
//! (ARCHITECTURE.md, "The type fingerprint"). Pinned by a test: a change here changes every
//! fingerprint, and every stored record then reads as a mismatch.

use super::trace::{Body, Content, Node, NodeId, Trace};

impl Trace {
    /// The canonical encoding of the shape at `root` (ARCHITECTURE.md, "The type fingerprint").
    pub(super) fn encode(&self, root: NodeId) -> Vec<u8> {
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
