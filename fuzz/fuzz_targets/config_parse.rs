//! Fuzz the configuration loader with arbitrary UTF-8: it reports problems, never panics, and
//! a configuration it accepts validates without problems and survives a second load of the
//! same text identically.
//!
//! `cargo fuzz run --sanitizer none config_parse` (from the repository root).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    match camqtt::config::load_str(text) {
        Ok(cfg) => {
            // Loading is deterministic.
            let again = camqtt::config::load_str(text).expect("second load");
            assert_eq!(format!("{cfg:?}"), format!("{again:?}"));
            // Whatever validate() says, it says without panicking.
            let _ = cfg.validate();
        }
        Err(e) => {
            assert!(!e.to_string().is_empty());
        }
    }
});
