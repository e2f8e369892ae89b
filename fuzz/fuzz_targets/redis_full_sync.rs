//! salvor::fuzz::redis_full_sync: see that function.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| salvor::fuzz::redis_full_sync(data));
