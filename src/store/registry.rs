//! The counters registry: the functions registered with a store, each decorator's live
//! counters, and what of them has been written to the file. Each write transaction takes a
//! [`FlushPlan`] of the counts not yet written and confirms it once it commits, so that no
//! call is counted twice or lost.

use std::collections::HashMap;
use std::sync::Arc;

use crate::id::Function;
use crate::stats::{CallStats, Counters};

/// Functions registered with the store, and the counts of theirs already written.
#[derive(Default)]
pub(crate) struct Registry {
    functions: HashMap<u64, Registered>,
}

struct Registered {
    function: Function,
    identity_dirty: bool,
    trackers: Vec<Tracked>,
}

struct Tracked {
    counters: Arc<Counters>,
    flushed: CallStats,
}

/// What one transaction flushes from the registry; confirmed once it commits.
pub(crate) struct FlushPlan {
    pub calls: Vec<(u64, CallStats)>,
    pub identities: Vec<Function>,
    confirm: Vec<(u64, Arc<Counters>, CallStats)>,
}

impl FlushPlan {
    pub(crate) fn is_empty(&self) -> bool {
        self.calls.is_empty() && self.identities.is_empty()
    }
}

impl Registry {
    pub(crate) fn register(&mut self, function: &Function, counters: &Arc<Counters>) {
        let reg = self
            .functions
            .entry(function.key())
            .or_insert_with(|| Registered {
                function: function.clone(),
                identity_dirty: true,
                trackers: Vec::new(),
            });
        if reg.function != *function {
            reg.function = function.clone();
            reg.identity_dirty = true;
        }
        if !reg
            .trackers
            .iter()
            .any(|t| Arc::ptr_eq(&t.counters, counters))
        {
            reg.trackers.push(Tracked {
                counters: Arc::clone(counters),
                flushed: CallStats::default(),
            });
        }
    }

    /// The counts not yet written, per function.
    pub(crate) fn unflushed(&self) -> HashMap<u64, CallStats> {
        let mut out: HashMap<u64, CallStats> = HashMap::new();
        for (key, reg) in &self.functions {
            for t in &reg.trackers {
                let d = t.counters.snapshot().minus(&t.flushed);
                if !d.is_zero() {
                    let slot = out.entry(*key).or_default();
                    *slot = slot.plus(&d);
                }
            }
        }
        out
    }

    pub(crate) fn plan(&self) -> FlushPlan {
        let mut plan = FlushPlan {
            calls: Vec::new(),
            identities: Vec::new(),
            confirm: Vec::new(),
        };
        for (key, reg) in &self.functions {
            if reg.identity_dirty {
                plan.identities.push(reg.function.clone());
            }
            let mut sum = CallStats::default();
            for t in &reg.trackers {
                let now = t.counters.snapshot();
                let d = now.minus(&t.flushed);
                if !d.is_zero() {
                    sum = sum.plus(&d);
                    plan.confirm.push((*key, Arc::clone(&t.counters), now));
                }
            }
            if !sum.is_zero() {
                plan.calls.push((*key, sum));
            }
        }
        plan
    }

    /// Marks a committed plan's counts as written, and forgets decorators that are gone.
    pub(crate) fn confirm(&mut self, plan: FlushPlan) {
        for f in &plan.identities {
            if let Some(reg) = self.functions.get_mut(&f.key())
                && reg.function == *f
            {
                reg.identity_dirty = false;
            }
        }
        for (key, counters, snapshot) in plan.confirm {
            if let Some(t) = self.functions.get_mut(&key).and_then(|reg| {
                reg.trackers
                    .iter_mut()
                    .find(|t| Arc::ptr_eq(&t.counters, &counters))
            }) {
                t.flushed = snapshot;
            }
        }
        for reg in self.functions.values_mut() {
            reg.trackers.retain(|t| {
                Arc::strong_count(&t.counters) > 1 || t.counters.snapshot() != t.flushed
            });
        }
    }
}
