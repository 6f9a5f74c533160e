//! libFuzzer entry point for the `evtchn` target (see `pv_fuzz::targets`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pv_fuzz::targets::evtchn(data));
