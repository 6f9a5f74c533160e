//! libFuzzer entry point for the `netback` target (see `pv_fuzz::targets`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pv_fuzz::targets::netback(data));
