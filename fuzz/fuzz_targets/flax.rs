#![no_main]
//! Fuzz target: see vit_convert::fuzzing::flax.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| vit_convert::fuzzing::flax(data));
