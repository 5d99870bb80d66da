//! Symbolic dimensions: products of integers and symbols (`D`, `3*D`, `H*hd`), bound on first use.

use std::collections::BTreeMap;
use std::fmt;

/// One factor of a dimension expression.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Factor {
    Int(usize),
    Sym(String),
}

/// A dimension: a product of integer and symbol factors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Dim {
    factors: Vec<Factor>,
}

/// Most factors in one dimension (`H*hd` has two): every tensor a rule matches solves each of
/// its dimensions, so a long product would multiply the work a table can ask for.
pub(crate) const MAX_FACTORS: usize = 16;

/// Symbol values bound so far.
pub(crate) type Bindings = BTreeMap<String, usize>;

impl Dim {
    /// Parses `3*D`, `H*hd`, `24`, `T`.
    pub(crate) fn parse(text: &str) -> Result<Dim, String> {
        let mut factors = Vec::new();
        for (k, part) in text.split('*').enumerate() {
            if k == MAX_FACTORS {
                return Err(format!(
                    "dimension `{text}`: more than {MAX_FACTORS} factors"
                ));
            }
            let part = part.trim();
            if part.is_empty() {
                return Err(format!("dimension `{text}`: empty factor"));
            }
            if part.bytes().all(|b| b.is_ascii_digit()) {
                let v = part
                    .parse::<usize>()
                    .map_err(|_| format!("dimension `{text}`: integer too large"))?;
                factors.push(Factor::Int(v));
            } else if part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && part
                    .as_bytes()
                    .first()
                    .is_some_and(|b| b.is_ascii_alphabetic())
            {
                factors.push(Factor::Sym(part.to_string()));
            } else {
                return Err(format!(
                    "dimension `{text}`: `{part}` is neither an integer nor a symbol"
                ));
            }
        }
        Ok(Dim { factors })
    }

    /// The symbols the dimension uses, in order (repeats included).
    pub(crate) fn symbols(&self) -> impl Iterator<Item = &str> {
        self.factors.iter().filter_map(|f| match f {
            Factor::Sym(s) => Some(s.as_str()),
            Factor::Int(_) => None,
        })
    }

    /// A constant dimension.
    pub(crate) fn int(v: usize) -> Dim {
        Dim {
            factors: vec![Factor::Int(v)],
        }
    }

    /// Evaluates with the given bindings; `None` if a symbol is unbound or the product overflows.
    pub(crate) fn eval(&self, b: &Bindings) -> Option<usize> {
        self.factors.iter().try_fold(1usize, |acc, f| match f {
            Factor::Int(v) => acc.checked_mul(*v),
            Factor::Sym(s) => acc.checked_mul(*b.get(s)?),
        })
    }

    /// Tries to bind the single unbound symbol so that the dimension equals `actual`.
    /// Returns `Ok(true)` if it bound one, `Ok(false)` if nothing (or more than one symbol) was
    /// unbound, and `Err` when the value cannot divide evenly.
    pub(crate) fn solve(&self, actual: usize, b: &mut Bindings) -> Result<bool, ()> {
        let mut unbound: Option<&str> = None;
        let mut known = 1usize;
        for f in &self.factors {
            match f {
                Factor::Int(v) => known = known.checked_mul(*v).ok_or(())?,
                Factor::Sym(s) => match b.get(s) {
                    Some(v) => known = known.checked_mul(*v).ok_or(())?,
                    None => {
                        if unbound.is_some_and(|u| u != s) {
                            return Ok(false);
                        }
                        if unbound == Some(s) {
                            // The same symbol twice (D*D): not solved by division.
                            return Ok(false);
                        }
                        unbound = Some(s);
                    }
                },
            }
        }
        let Some(sym) = unbound else {
            return Ok(false);
        };
        if known == 0 || actual % known != 0 {
            return Err(());
        }
        b.insert(sym.to_string(), actual / known);
        Ok(true)
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (k, factor) in self.factors.iter().enumerate() {
            if k > 0 {
                f.write_str("*")?;
            }
            match factor {
                Factor::Int(v) => write!(f, "{v}")?,
                Factor::Sym(s) => f.write_str(s)?,
            }
        }
        Ok(())
    }
}

/// Formats a symbolic shape as `[1, 1, D]`.
pub(crate) fn show_shape(dims: &[Dim]) -> String {
    let parts: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
    format!("[{}]", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solve_binds_the_single_unknown() {
        let mut b = Bindings::new();
        let d = Dim::parse("3*D").unwrap();
        assert_eq!(d.solve(72, &mut b), Ok(true));
        assert_eq!(b["D"], 24);
        assert_eq!(d.eval(&b), Some(72));
        assert_eq!(
            Dim::parse("3*D").unwrap().solve(73, &mut Bindings::new()),
            Err(())
        );
    }

    #[test]
    fn two_unknowns_wait_for_more_information() {
        let mut b = Bindings::new();
        let d = Dim::parse("H*hd").unwrap();
        assert_eq!(d.solve(24, &mut b), Ok(false));
        b.insert("H".into(), 2);
        assert_eq!(d.solve(24, &mut b), Ok(true));
        assert_eq!(b["hd"], 12);
    }

    #[test]
    fn malformed_dimensions_are_refused() {
        assert!(Dim::parse("3**D").is_err());
        assert!(Dim::parse("D-1").is_err());
        assert!(Dim::parse("1x").is_err());
    }
}
