//! libFuzzer entry point for the `netif` target (see `pv_fuzz::targets`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pv_fuzz::targets::netif(data));
