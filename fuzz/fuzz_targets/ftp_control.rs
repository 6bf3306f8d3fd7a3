//! Fuzz the FTP source's control-connection filter and upload checks with arbitrary lines.
//!
//! `cargo fuzz run --sanitizer none ftp_control`
//!
//! The input is split at `\n`; lines alternate between the camera and the server (libunftp),
//! the first byte of each line choosing the side. Every reply the filter makes must be whole
//! CRLF-terminated lines; a forwarded command never carries a bare CR or LF inside it. The
//! same bytes are also a file name and folder for the category rules and an upload body for
//! the JPEG check, which must never call a cut-off file complete.

#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use camqtt::sources::ftp::control::ControlFilter;
use camqtt::sources::jpeg::{JpegCheck, check};
use camqtt::sources::ftp::rules::{classify, default_rules};
use libfuzzer_sys::fuzz_target;

fn whole_lines(b: &[u8]) -> bool {
    b.is_empty() || b.ends_with(b"\r\n")
}

fuzz_target!(|data: &[u8]| {
    let mut f = ControlFilter::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 130)), true);
    for line in data.split(|b| *b == b'\n') {
        let Some((&side, rest)) = line.split_first() else {
            continue;
        };
        if side & 1 == 0 {
            let out = f.from_client(rest);
            assert!(whole_lines(&out.to_client));
            if let Some(cmd) = &out.to_server {
                assert!(cmd.ends_with(b"\r\n"));
                let body = &cmd[..cmd.len() - 2];
                assert!(!body.iter().any(|b| matches!(b, b'\n' | b'\r' | 0)));
            }
        } else {
            let out = f.from_server(rest);
            assert!(whole_lines(&out.to_client));
        }
    }
    let text = String::from_utf8_lossy(data);
    let (dir, name) = text.rsplit_once('/').unwrap_or(("", &text));
    let _ = classify(&default_rules(), dir, name);
    if let JpegCheck::Complete { end } = check(data) {
        assert!(end <= data.len());
        assert!(data[..end].ends_with(&[0xFF, 0xD9]));
        // Cutting a complete file before its end marker never leaves it complete.
        assert!(!matches!(check(&data[..end - 1]), JpegCheck::Complete { .. }));
    }
});
