#![no_main]
//! Fuzz target: see vit_convert::fuzzing::mapping_table.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| vit_convert::fuzzing::mapping_table(data));
