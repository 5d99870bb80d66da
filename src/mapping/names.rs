//! Closed sets of names the tables and options use: [`Family`] (derived from the built-in
//! tables) and [`Branch`].

use serde::{Deserialize, Serialize};

use super::{MappingTable, BUILTIN};
use crate::error::Result;

/// A source family: the id of a built-in mapping table (`timm`, `dino`, `deit`, `jax`,
/// `big_vision`, `beit`, `dinov2`, `clip`, `siglip`, `hf`, `flax`). The list is the built-in tables', kept once.
///
/// ```
/// use vit_convert::mapping::Family;
/// let f: Family = "timm".parse()?;
/// assert_eq!(f.name(), "timm");
/// assert!(Family::all().any(|f| f.name() == "dino"));
/// assert!("auto".parse::<Family>().is_err()); // detection is `None`, not a family
/// # Ok::<(), vit_convert::Error>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Family {
    /// Index into the built-in tables.
    index: usize,
}

impl Family {
    /// Every family, in the built-in tables' order.
    pub fn all() -> impl Iterator<Item = Family> {
        (0..BUILTIN.len()).map(|index| Family { index })
    }

    /// Every family's name.
    pub fn names() -> Vec<&'static str> {
        Family::all().map(Family::name).collect()
    }

    /// The family's name (its table's id).
    pub fn name(self) -> &'static str {
        BUILTIN.get(self.index).map_or("", |(id, _, _)| id)
    }

    /// The family's built-in table.
    ///
    /// # Errors
    /// Only if a shipped table failed to parse (a build defect, covered by tests).
    pub fn table(self) -> Result<MappingTable> {
        MappingTable::builtin(self.name())
    }
}

impl std::fmt::Debug for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Family").field(&self.name()).finish()
    }
}

crate::error::impl_names!(Family, "family", Family::all());

/// Which network of a training checkpoint with several (DINO's teacher and student) to convert.
/// Tables list theirs in `[source] branches`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Branch {
    /// The teacher (the network DINO evaluates; the default).
    Teacher,
    /// The student.
    Student,
}

impl Branch {
    /// Every branch, in a fixed order.
    pub const ALL: [Branch; 2] = [Branch::Teacher, Branch::Student];

    /// The name (`teacher`, `student`): also the sub-container the checkpoint keeps it in.
    pub fn name(self) -> &'static str {
        match self {
            Branch::Teacher => "teacher",
            Branch::Student => "student",
        }
    }

    /// Every branch's name.
    pub fn names() -> Vec<&'static str> {
        Branch::ALL.iter().map(|b| b.name()).collect()
    }
}

crate::error::impl_names!(Branch, "branch", Branch::ALL.into_iter());

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn every_family_has_a_table_and_round_trips() {
        for f in Family::all() {
            assert_eq!(f.name().parse::<Family>().unwrap(), f);
            assert_eq!(f.table().unwrap().id(), f.name());
        }
        assert_eq!(Family::names().len(), BUILTIN.len());
        assert_eq!(
            format!("{:?}", Family::all().next().unwrap()),
            "Family(\"timm\")"
        );
        let e = "timmm".parse::<Family>().unwrap_err();
        assert!(matches!(
            e.kind(),
            ErrorKind::UnknownName {
                field: "family",
                ..
            }
        ));
    }

    /// The docs spell the family list out for readers; each spelling must be the built-in
    /// tables' list, in their order (the one list is `BUILTIN`).
    #[test]
    fn every_spelled_out_family_list_is_the_builtin_one() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap();
        let ticked = Family::names()
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ");
        for file in ["src/lib.rs", "src/mapping/mod.rs"] {
            assert!(read(file).contains(&format!("({ticked})")), "{file}");
        }
        let names_rs = read("src/mapping/names.rs").replace("\n/// ", " ");
        assert!(names_rs.contains(&format!("({ticked})")), "names.rs");
        let piped = format!("--from auto|{}`", Family::names().join("|"));
        assert!(read("README.md").contains(&piped), "README.md: {piped}");
    }

    #[test]
    fn branches_round_trip() {
        for b in Branch::ALL {
            assert_eq!(b.name().parse::<Branch>().unwrap(), b);
        }
        assert!("teachr".parse::<Branch>().is_err());
    }
}
