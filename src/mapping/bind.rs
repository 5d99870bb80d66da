//! Binding a table's symbolic shapes (`D`, `3*D`, …) to the shapes a listing has.

use std::collections::{BTreeSet, HashMap};

use super::dims::{show_shape, Bindings, Dim};
use super::mapping_err;
use super::plan::Instance;
use super::schema::{MappingTable, Rule};
use crate::error::{Error, Result};
use crate::vocab::MappingError;

/// One dimension to bind: the instance, its input's position, name and shape, the symbolic
/// dimension and the size the input has there.
type Slot<'a> = (
    &'a Instance<'a>,
    usize,
    &'a str,
    &'a [usize],
    &'a Dim,
    usize,
);

pub(super) fn bind_shapes(table: &MappingTable, instances: &[Instance]) -> Result<Bindings> {
    let mut b = Bindings::new();
    // Rank checks first.
    // `shape = "any"` rules bind nothing and check nothing.
    let instances: Vec<&Instance> = instances.iter().filter(|i| !i.rule.any_shape).collect();
    let instances = &instances[..];
    for ins in instances {
        for (k, (n, info)) in ins.inputs.iter().enumerate() {
            if info.shape.len() != ins.rule.shape_of(k).len() {
                return Err(shape_err(table, ins.rule, k, n, &info.shape));
            }
        }
    }
    // Bind to a fixpoint: passes over every dimension in order until one binds nothing. A
    // dimension's outcome depends only on the bindings of its own symbols, so a pass revisits only
    // the dimensions one of whose symbols was bound since they were last solved: the same
    // bindings and the same first error as full passes, without passes × dimensions work.
    let mut slots: Vec<Slot> = Vec::new();
    for &ins in instances {
        for (k, (n, info)) in ins.inputs.iter().enumerate() {
            for (d, &actual) in ins.rule.shape_of(k).iter().zip(&info.shape) {
                slots.push((ins, k, n, &info.shape, d, actual));
            }
        }
    }
    let mut users: HashMap<&str, Vec<usize>> = HashMap::new();
    for (k, (_, _, _, _, d, _)) in slots.iter().enumerate() {
        for sym in d.symbols() {
            let list = users.entry(sym).or_default();
            if list.last() != Some(&k) {
                list.push(k);
            }
        }
    }
    let mut now: BTreeSet<usize> = (0..slots.len()).collect();
    loop {
        let mut next: BTreeSet<usize> = BTreeSet::new();
        let mut progress = false;
        while let Some(k) = now.pop_first() {
            let Some(&(ins, input, n, shape, d, actual)) = slots.get(k) else {
                continue;
            };
            let unbound: Vec<&str> = d.symbols().filter(|s| !b.contains_key(*s)).collect();
            match d.solve(actual, &mut b) {
                Ok(true) => {
                    progress = true;
                    for sym in unbound.iter().filter(|s| b.contains_key(**s)) {
                        for &u in users.get(sym).map_or(&[][..], Vec::as_slice) {
                            if u > k {
                                now.insert(u);
                            } else if u < k {
                                next.insert(u);
                            }
                        }
                    }
                }
                Ok(false) => {}
                Err(()) => return Err(shape_err(table, ins.rule, input, n, shape)),
            }
        }
        if !progress {
            break;
        }
        now = next;
    }
    for ins in instances {
        for (k, (n, info)) in ins.inputs.iter().enumerate() {
            for (d, &actual) in ins.rule.shape_of(k).iter().zip(&info.shape) {
                match d.eval(&b) {
                    Some(v) if v == actual => {}
                    Some(_) => return Err(shape_err(table, ins.rule, k, n, &info.shape)),
                    None => {
                        return Err(mapping_err(
                            table,
                            ins.rule.line,
                            MappingError::UnboundDimension {
                                dim: d.to_string(),
                                tensor: Some(n.to_string()),
                            },
                        ))
                    }
                }
            }
        }
    }
    Ok(b)
}

/// `name`, input `input` of `rule`, contradicts that input's symbolic shape.
fn shape_err(
    table: &MappingTable,
    rule: &Rule,
    input: usize,
    name: &str,
    actual: &[usize],
) -> Error {
    mapping_err(
        table,
        rule.line,
        MappingError::ShapeContradiction {
            tensor: name.to_string(),
            expected: show_shape(rule.shape_of(input)),
            actual: actual.to_vec(),
        },
    )
}
