//! Property tests for the parsers the fuzz targets cover (`fuzz/fuzz_targets/`), cheap enough
//! for every `cargo test`: the configuration loader and the Viewtron parser never panic, and
//! what they accept obeys their documented bounds.

use std::time::{Duration, UNIX_EPOCH};

use proptest::prelude::*;

use camqtt::config;
use camqtt::sources::viewtron::parse::{MAX_LIST_ITEMS, Post, PostMeta, parse_post};

/// TOML-ish text from the configuration's own vocabulary, so that generated documents get past
/// the syntax check often.
fn config_text() -> impl Strategy<Value = String> {
    let section = prop::sample::select(vec![
        "[mqtt]",
        "[viewtron]",
        "[homeassistant]",
        "[images]",
        "[spool]",
        "[categories.lpr]",
        "[categories.bogus]",
        "[[devices]]",
        "[mqtt.tls]",
    ]);
    let key = prop::sample::select(vec![
        "url",
        "base_topic",
        "keep_alive",
        "max_packet_size",
        "listen",
        "body_limit",
        "header_timeout",
        "idle_timeout",
        "max_connections",
        "off_delay",
        "enabled",
        "mac",
        "id",
        "name",
        "discovery",
        "dir",
        "nonsense",
    ]);
    let value = prop::sample::select(vec![
        "1",
        "-1",
        "0.0",
        "1e400",
        "nan",
        "true",
        "\"\"",
        "\"mqtt://127.0.0.1:1883\"",
        "\"0.0.0.0:5002\"",
        "\"a/#\"",
        "\"58:5b:69:40:f4:0d\"",
        "[1, 2]",
        "{ x = 1 }",
        "18446744073709551616",
    ]);
    prop::collection::vec(
        prop_oneof![
            section.prop_map(str::to_owned),
            (key, value).prop_map(|(k, v)| format!("{k} = {v}")),
            "[ -~]{0,20}",
        ],
        0..12,
    )
    .prop_map(|lines| lines.join("\n"))
}

/// XML-ish bodies from the Viewtron vocabulary.
fn post_body() -> impl Strategy<Value = String> {
    let tag = prop::sample::select(vec![
        "config",
        "smartType",
        "messageType",
        "mac",
        "currentTime",
        "listInfo",
        "item",
        "plateNumber",
        "traject",
        "targetId",
        "alarmStatusInfo",
        "perimeter",
        "perInfo",
        "status",
        "targetImageData",
        "targetBase64Data",
        "deviceInfo",
        "channelId",
    ]);
    let text = prop::sample::select(vec![
        "",
        "VEHICE",
        "PEA",
        "alarmData",
        "keepalive",
        "true",
        "SMART_START",
        "/9j/4AAQ",
        "1790000000250000",
        "58:5b:69:40:f4:0d",
        "\u{0}\u{1b}",
        "&amp;",
        "<![CDATA[x]]>",
    ]);
    let leaf = (tag.clone(), text).prop_map(|(t, x)| format!("<{t}>{x}</{t}>"));
    let tree = leaf.prop_recursive(4, 64, 8, move |inner| {
        (tag.clone(), prop::collection::vec(inner, 0..8))
            .prop_map(|(t, kids)| format!("<{t}>{}</{t}>", kids.concat()))
    });
    prop::collection::vec(tree, 0..6).prop_map(|kids| {
        format!(
            "<config version=\"1.7\" xmlns=\"http://www.ipc.com/ver10\">{}</config>",
            kids.concat()
        )
    })
}

fn meta() -> PostMeta {
    PostMeta {
        peer: None,
        received: UNIX_EPOCH + Duration::from_secs(1_795_219_200),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn config_loader_never_panics_on_any_text(text in "\\PC{0,200}") {
        let _ = config::load_str(&text);
    }

    #[test]
    fn config_loader_accepts_only_valid_configs(text in config_text()) {
        match config::load_str(&text) {
            Ok(cfg) => prop_assert!(cfg.validate().is_empty(), "accepted but invalid: {text}"),
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    #[test]
    fn viewtron_parser_never_panics_and_bounds_its_output(body in post_body(), cut in any::<prop::sample::Index>()) {
        // Whole documents, and every one truncated at an arbitrary point.
        let bytes = body.as_bytes();
        let truncated = &bytes[..cut.index(bytes.len() + 1)];
        for input in [bytes, truncated] {
            match parse_post(input, &meta()) {
                Ok(Post::Events(events)) => {
                    prop_assert!(!events.is_empty());
                    for e in &events {
                        prop_assert!(e.attrs.plates.len() <= MAX_LIST_ITEMS);
                        prop_assert!(e.attrs.targets.len() <= MAX_LIST_ITEMS);
                        prop_assert!(!e.raw_type.chars().any(|c| c.is_control() && !c.is_whitespace()));
                        for p in &e.attrs.plates {
                            prop_assert!(!p.plate.chars().any(|c| c.is_control() && !c.is_whitespace()));
                        }
                    }
                }
                Ok(Post::Heartbeat(_)) => {}
                Err(err) => prop_assert!(!err.reason().is_empty()),
            }
        }
    }
}
