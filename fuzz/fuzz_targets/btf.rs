#![no_main]
//! `oomtrace::fuzzing::btf`: see its documentation for the input and what must hold.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| oomtrace::fuzzing::btf(data));
