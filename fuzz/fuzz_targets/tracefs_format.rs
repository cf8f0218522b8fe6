#![no_main]
//! `oomtrace::fuzzing::tracefs_format`: see its documentation for the input and what must hold.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| oomtrace::fuzzing::tracefs_format(data));
