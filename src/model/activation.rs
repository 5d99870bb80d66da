//! [`Activation`]: the `hidden_act` values this crate converts and runs, spelled once.

pub use crate::vocab::Activation;

impl Activation {
    /// True when the function is GELU's tanh approximation.
    pub(crate) fn is_tanh_approximation(self) -> bool {
        matches!(
            self,
            Activation::GeluPytorchTanh | Activation::GeluNew | Activation::GeluFast
        )
    }
}

crate::error::impl_names!(Activation, "hidden_act", Activation::ALL.into_iter());

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn names_round_trip_through_serde_and_from_str() {
        for a in Activation::ALL {
            assert_eq!(a.name().parse::<Activation>().unwrap(), a);
            let json = serde_json::to_string(&a).unwrap();
            assert_eq!(json, format!("\"{}\"", a.name()));
            assert_eq!(serde_json::from_str::<Activation>(&json).unwrap(), a);
        }
        let e = "gleu".parse::<Activation>().unwrap_err();
        assert!(
            matches!(e.kind(), ErrorKind::UnknownName { field: "hidden_act", value, .. } if value == "gleu"),
            "{e}"
        );
    }
}
