//! The Home Assistant add-on: the manifest checked against the Supervisor's rules (offline),
//! and add-on mode end to end: a stand-in Supervisor that speaks the real services API hands
//! out the credentials of a real, password-protected Mosquitto; the real `camqtt` binary,
//! started with nothing but an options file and the Supervisor's environment, connects and
//! publishes.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use yaml_serde::Value;

const T: Duration = Duration::from_secs(15);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    yaml_serde::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn map(v: &Value) -> BTreeMap<String, Value> {
    v.as_mapping()
        .unwrap_or_else(|| panic!("expected a mapping, got {v:?}"))
        .iter()
        .map(|(k, v)| {
            let k = match k {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                other => panic!("non-string key {other:?}"),
            };
            (k, v.clone())
        })
        .collect()
}

fn str_of<'a>(m: &'a BTreeMap<String, Value>, k: &str) -> &'a str {
    m.get(k)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("`{k}` must be a string, got {:?}", m.get(k)))
}

// ---------------------------------------------------------------------------------------
// The Supervisor's rules, written from supervisor/addons/validate.py and options.py.
// ---------------------------------------------------------------------------------------

/// `RE_SLUG_FIELD`: `^[-_.A-Za-z0-9]+$`.
fn valid_slug(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// `docker_port`: `^\d+(?:/tcp|/udp)?$`.
fn valid_port_key(s: &str) -> bool {
    let num = s
        .strip_suffix("/tcp")
        .or_else(|| s.strip_suffix("/udp"))
        .unwrap_or(s);
    !num.is_empty() && num.chars().all(|c| c.is_ascii_digit())
}

fn range_ok(args: &str, number: fn(&str) -> bool) -> bool {
    // `(min,max)` with either side optional.
    let Some(inner) = args.strip_prefix('(').and_then(|a| a.strip_suffix(')')) else {
        return false;
    };
    let Some((lo, hi)) = inner.split_once(',') else {
        return false;
    };
    (lo.is_empty() || number(lo)) && (hi.is_empty() || number(hi))
}

/// One element of `RE_SCHEMA_ELEMENT` (optionally suffixed with `?`). Returns the base type.
fn schema_type(t: &str) -> Option<&'static str> {
    let t = t.strip_suffix('?').unwrap_or(t);
    let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    let float = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit() || c == '.');
    for plain in ["bool", "email", "url", "port", "device"] {
        if t == plain {
            return Some(plain);
        }
    }
    if let Some(f) = t.strip_prefix("device(") {
        let ok = f
            .strip_prefix("subsystem=")
            .and_then(|f| f.strip_suffix(')'))
            .is_some_and(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_lowercase()));
        return ok.then_some("device");
    }
    for (name, num) in [
        ("str", digits as fn(&str) -> bool),
        ("password", digits),
        ("int", digits),
        ("float", float),
    ] {
        if t == name {
            return Some(name);
        }
        if let Some(args) = t.strip_prefix(name) {
            return range_ok(args, num).then_some(name);
        }
    }
    if t.starts_with("match(") && t.ends_with(')') {
        return Some("match");
    }
    if t.starts_with("list(") && t.ends_with(')') && t.len() > "list()".len() {
        return Some("list");
    }
    None
}

/// `SCHEMA_ELEMENT`: a type string, a list of one (type | dict), or a dict; a list may not
/// directly contain a list. `depth` counts container levels (the UI renders two).
fn check_schema(path: &str, v: &Value, depth: usize, errors: &mut Vec<String>) {
    if depth > 2 && (v.is_sequence() || v.is_mapping()) {
        errors.push(format!("{path}: nested deeper than two levels"));
        return;
    }
    match v {
        Value::String(t) => {
            if schema_type(t).is_none() {
                errors.push(format!("{path}: `{t}` is not a Supervisor schema type"));
            }
        }
        Value::Sequence(items) => {
            if items.len() != 1 {
                errors.push(format!("{path}: a list schema has exactly one element"));
            }
            for item in items {
                match item {
                    Value::Sequence(_) => {
                        errors.push(format!("{path}: a list may not directly contain a list"))
                    }
                    _ => check_schema(&format!("{path}[]"), item, depth + 1, errors),
                }
            }
        }
        Value::Mapping(_) => {
            for (k, v) in map(v) {
                check_schema(&format!("{path}.{k}"), &v, depth + 1, errors);
            }
        }
        other => errors.push(format!("{path}: {other:?} is not a schema element")),
    }
}

fn optional(schema: &Value) -> bool {
    match schema {
        Value::String(t) => t.ends_with('?'),
        // `_check_missing_options`: a list is optional when its element is an optional type.
        Value::Sequence(items) => {
            matches!(items.first(), Some(Value::String(t)) if t.ends_with('?'))
        }
        _ => false,
    }
}

/// The defaults in `options` against `schema`, as the Supervisor validates stored options:
/// every option has a schema entry, every required schema entry has a default, and each
/// default fits its type.
fn check_options(path: &str, options: &Value, schema: &Value, errors: &mut Vec<String>) {
    match (options, schema) {
        (Value::Mapping(_), Value::Mapping(_)) => {
            let (o, s) = (map(options), map(schema));
            for (k, v) in &o {
                match s.get(k) {
                    Some(sv) => check_options(&format!("{path}.{k}"), v, sv, errors),
                    None => errors.push(format!("{path}.{k}: option without a schema entry")),
                }
            }
            for (k, sv) in &s {
                if !o.contains_key(k) && !optional(sv) {
                    errors.push(format!(
                        "{path}.{k}: required by the schema but missing from options"
                    ));
                }
            }
        }
        (Value::Sequence(items), Value::Sequence(s)) => {
            for (i, item) in items.iter().enumerate() {
                check_options(&format!("{path}[{i}]"), item, &s[0], errors);
            }
        }
        (value, Value::String(t)) => {
            let base = t.strip_suffix('?').unwrap_or(t);
            let ok = match schema_type(t) {
                Some("bool") => value.is_bool(),
                Some("int") | Some("port") => value.as_i64().is_some_and(|n| {
                    let inner = base.strip_prefix("int(").and_then(|r| r.strip_suffix(')'));
                    let (lo, hi) = inner.and_then(|i| i.split_once(',')).unwrap_or(("", ""));
                    lo.parse::<i64>().map_or(true, |lo| n >= lo)
                        && hi.parse::<i64>().map_or(true, |hi| n <= hi)
                }),
                Some("float") => value.is_f64() || value.is_i64(),
                Some("list") => {
                    let choices = &base["list(".len()..base.len() - 1];
                    value
                        .as_str()
                        .is_some_and(|v| choices.split('|').any(|c| c == v))
                }
                Some(_) => value.is_string(),
                None => false,
            };
            if !ok {
                errors.push(format!("{path}: default {value:?} does not fit `{t}`"));
            }
        }
        (value, schema) => errors.push(format!(
            "{path}: default {value:?} does not have the shape of {schema:?}"
        )),
    }
}

/// Every schema key has a translation with a name (and a description); nested keys under
/// `fields`; no translation for a key the schema lacks.
fn check_translations(
    path: &str,
    schema: &Value,
    tr: &BTreeMap<String, Value>,
    errors: &mut Vec<String>,
) {
    let s = map(schema);
    for (k, sv) in &s {
        let Some(entry) = tr.get(k) else {
            errors.push(format!("{path}.{k}: no translation"));
            continue;
        };
        let e = map(entry);
        for field in ["name", "description"] {
            if e.get(field)
                .and_then(Value::as_str)
                .is_none_or(|t| t.trim().is_empty())
            {
                errors.push(format!("{path}.{k}: translation lacks `{field}`"));
            }
        }
        let nested = match sv {
            Value::Mapping(_) => Some(sv.clone()),
            Value::Sequence(items) if matches!(items.first(), Some(Value::Mapping(_))) => {
                Some(items[0].clone())
            }
            _ => None,
        };
        match (nested, e.get("fields")) {
            (Some(n), Some(f)) => check_translations(&format!("{path}.{k}"), &n, &map(f), errors),
            (Some(_), None) => errors.push(format!("{path}.{k}: translation lacks `fields`")),
            (None, Some(_)) => errors.push(format!("{path}.{k}: `fields` for a plain option")),
            (None, None) => {}
        }
    }
    for k in tr.keys() {
        if !s.contains_key(k) {
            errors.push(format!("{path}.{k}: translation for an unknown option"));
        }
    }
}

fn png_size(path: &Path) -> (u32, u32) {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(b.len() > 24, "{}: too short for a PNG", path.display());
    assert_eq!(
        &b[..8],
        b"\x89PNG\r\n\x1a\n",
        "{}: not a PNG",
        path.display()
    );
    assert_eq!(&b[12..16], b"IHDR", "{}: no IHDR", path.display());
    let be = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    (be(16), be(20))
}

fn crate_version() -> String {
    let cargo: toml::Table = std::fs::read_to_string(root().join("Cargo.toml"))
        .unwrap()
        .parse()
        .expect("Cargo.toml");
    cargo["package"]["version"].as_str().unwrap().to_owned()
}

/// The manifest keys the Supervisor knows (`_SCHEMA_ADDON_CONFIG`); anything else is
/// silently dropped by the Supervisor, so here it is a typo.
const KNOWN_KEYS: &[&str] = &[
    "name",
    "version",
    "slug",
    "description",
    "arch",
    "machine",
    "url",
    "startup",
    "boot",
    "init",
    "stage",
    "ports",
    "ports_description",
    "webui",
    "ingress",
    "ingress_port",
    "ingress_entry",
    "ingress_stream",
    "panel_icon",
    "panel_title",
    "panel_admin",
    "homeassistant",
    "host_network",
    "host_pid",
    "host_ipc",
    "host_uts",
    "host_dbus",
    "devices",
    "udev",
    "tmpfs",
    "map",
    "environment",
    "privileged",
    "apparmor",
    "full_access",
    "audio",
    "video",
    "gpio",
    "usb",
    "uart",
    "devicetree",
    "kernel_modules",
    "realtime",
    "hassio_api",
    "hassio_role",
    "homeassistant_api",
    "stdin",
    "legacy",
    "docker_api",
    "auth_api",
    "services",
    "discovery",
    "backup_exclude",
    "backup_pre",
    "backup_post",
    "restore_pre",
    "restore_post",
    "backup",
    "options",
    "schema",
    "image",
    "ulimits",
    "timeout",
    "journald",
    "breaking_versions",
];

#[test]
fn manifest_follows_the_supervisor_rules() {
    let dir = root().join("addon");
    let m = map(&yaml(&dir.join("config.yaml")));
    let mut errors = Vec::new();

    for k in m.keys() {
        if !KNOWN_KEYS.contains(&k.as_str()) {
            errors.push(format!("unknown manifest key `{k}`"));
        }
    }
    // Deprecated or obsolete keys the linter flags.
    for k in [
        "advanced",
        "watchdog",
        "codenotary",
        "auto_uart",
        "snapshot",
    ] {
        if m.contains_key(k) {
            errors.push(format!("`{k}` is deprecated/obsolete"));
        }
    }
    // Required keys and their types.
    for k in ["name", "version", "slug", "description"] {
        if m.get(k)
            .and_then(Value::as_str)
            .is_none_or(|s| s.trim().is_empty())
        {
            errors.push(format!("`{k}` must be a non-empty string"));
        }
    }
    assert_eq!(
        str_of(&m, "version"),
        crate_version(),
        "version == crate version"
    );
    assert_eq!(str_of(&m, "slug"), "camqtt");
    assert!(valid_slug(str_of(&m, "slug")));
    // Arch: amd64 and aarch64, nothing HA dropped in 2025.12.
    let arch: BTreeSet<&str> = m["arch"]
        .as_sequence()
        .expect("arch is a list")
        .iter()
        .map(|a| a.as_str().expect("arch entries are strings"))
        .collect();
    assert_eq!(arch, BTreeSet::from(["amd64", "aarch64"]), "arch list");
    for dropped in ["armv7", "armhf", "i386"] {
        assert!(!arch.contains(dropped));
    }
    // Optional keys with their Supervisor types.
    let url = str_of(&m, "url");
    assert!(
        url.starts_with("https://") || url.starts_with("http://"),
        "url: {url}"
    );
    let enums: [(&str, &[&str]); 4] = [
        (
            "startup",
            &["initialize", "system", "services", "application", "once"],
        ),
        ("boot", &["auto", "manual", "manual_only"]),
        ("stage", &["stable", "experimental", "deprecated"]),
        ("backup", &["hot", "cold"]),
    ];
    for (k, allowed) in enums {
        if let Some(v) = m.get(k)
            && !v.as_str().is_some_and(|v| allowed.contains(&v))
        {
            errors.push(format!("`{k}`: {v:?} not in {allowed:?}"));
        }
    }
    for k in [
        "init",
        "host_network",
        "ingress",
        "hassio_api",
        "homeassistant_api",
        "tmpfs",
    ] {
        if let Some(v) = m.get(k)
            && !v.is_bool()
        {
            errors.push(format!("`{k}` must be a boolean"));
        }
    }
    assert!(
        !m.get("host_network")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        "no host network"
    );
    if let Some(t) = m.get("timeout")
        && !t.as_i64().is_some_and(|t| (10..=300).contains(&t))
    {
        errors.push(format!("timeout {t:?} not in 10..=300"));
    }
    if let Some(v) = m.get("homeassistant") {
        let v = v.as_str().expect("homeassistant is a version string");
        assert!(
            v.split('.').count() >= 2 && v.split('.').all(|p| p.parse::<u32>().is_ok()),
            "{v}"
        );
    }
    // Image: generic manifest name (no {arch}), registry/org/name, no tag.
    if let Some(img) = m.get("image") {
        let img = img.as_str().expect("image is a string");
        assert!(
            !img.contains("{arch}")
                && img.split('/').count() >= 2
                && !img.rsplit('/').next().unwrap().contains(':'),
            "image {img}"
        );
    }
    // Services: RE_SERVICE; MQTT wanted, not needed (users may bring their own broker).
    let services: Vec<&str> = m["services"]
        .as_sequence()
        .expect("services list")
        .iter()
        .map(|s| s.as_str().expect("service string"))
        .collect();
    for s in &services {
        let ok = s.split_once(':').is_some_and(|(svc, r)| {
            matches!(svc, "mqtt" | "mysql") && matches!(r, "provide" | "want" | "need")
        });
        if !ok {
            errors.push(format!(
                "service `{s}` does not match ^(mqtt|mysql):(provide|want|need)$"
            ));
        }
    }
    assert!(services.contains(&"mqtt:want"), "{services:?}");
    // Maps: RE_VOLUME.
    for v in m
        .get("map")
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
    {
        let s = v.as_str().expect("map entries are strings here");
        let (kind, mode) = s.split_once(':').unwrap_or((s, "ro"));
        let kinds = [
            "data",
            "config",
            "ssl",
            "addons",
            "backup",
            "share",
            "media",
            "homeassistant_config",
            "all_addon_configs",
            "addon_config",
        ];
        if !kinds.contains(&kind) || !matches!(mode, "rw" | "ro") {
            errors.push(format!("map entry `{s}`"));
        }
    }
    // Ports: `5002/tcp: 5002`, described, and the receiver's default port is mapped.
    let ports = map(&m["ports"]);
    for (k, v) in &ports {
        if !valid_port_key(k) {
            errors.push(format!("port key `{k}`"));
        }
        if !(v.is_null() || v.as_u64().is_some_and(|p| (1..=65535).contains(&p))) {
            errors.push(format!("port {k}: {v:?}"));
        }
    }
    let receiver_port = camqtt::config::DEFAULT_LISTEN.rsplit(':').next().unwrap();
    assert_eq!(
        ports
            .get(&format!("{receiver_port}/tcp"))
            .and_then(Value::as_u64),
        receiver_port.parse().ok(),
        "receiver port mapped"
    );
    let descr = map(&m["ports_description"]);
    assert_eq!(
        descr.keys().collect::<Vec<_>>(),
        ports.keys().collect::<Vec<_>>()
    );
    // Options and schema.
    check_schema("schema", &m["schema"], 0, &mut errors);
    check_options("options", &m["options"], &m["schema"], &mut errors);
    // Every off delay key is a camqtt category; every option key is read by add-on mode.
    for k in map(&map(&m["schema"])["off_delays"]).keys() {
        assert!(
            camqtt::event::Category::from_name(k).is_some(),
            "off_delays.{k} is not a category"
        );
    }
    assert!(
        errors.is_empty(),
        "manifest problems:\n  {}",
        errors.join("\n  ")
    );
}

#[test]
fn manifest_defaults_parse_as_add_on_options() {
    // The defaults the Supervisor would write to /data/options.json on first start are a
    // valid camqtt configuration (converted YAML → JSON as the Supervisor does).
    let m = map(&yaml(&root().join("addon/config.yaml")));
    let json = serde_json::to_string(&m["options"]).expect("options as JSON");
    let opts = camqtt::addon::parse_options(&json).expect("options parse");
    assert!(
        opts.needs_service(),
        "the default asks the Supervisor for the broker"
    );
    let svc = camqtt::addon::parse_mqtt_service(
        200,
        br#"{"result":"ok","data":{"addon":"core_mosquitto","host":"core-mosquitto","port":1883,"ssl":false,"protocol":"3.1.1","username":"addons","password":"x"}}"#,
    )
    .unwrap();
    let c = opts
        .apply(
            camqtt::config::Config::default(),
            Path::new("/data"),
            Some(&svc),
        )
        .expect("defaults are valid");
    assert_eq!(c.mqtt.url.as_deref(), Some("mqtt://core-mosquitto:1883"));
    assert_eq!(c.spool.dir, Path::new("/data/spool"));
    assert_eq!(c.viewtron.listen.port(), 5002);
    assert!(c.viewtron.tls.is_none(), "HTTPS is off by default");

    // Switching `ssl` on uses the default certificate names under /ssl (mapped read-only).
    let mut on = m["options"].clone();
    on.as_mapping_mut()
        .expect("options mapping")
        .insert("ssl".into(), true.into());
    let json = serde_json::to_string(&on).expect("options as JSON");
    let c = camqtt::addon::parse_options(&json)
        .expect("options parse")
        .apply(
            camqtt::config::Config::default(),
            Path::new("/data"),
            Some(&svc),
        )
        .expect("ssl on is valid");
    let tls = c.viewtron.tls.expect("HTTPS on");
    assert_eq!(tls.cert_file, Path::new("/ssl/fullchain.pem"));
    assert_eq!(tls.key_file, Path::new("/ssl/privkey.pem"));
    assert!(tls.plain_http, "plain HTTP stays on (health check)");
    let maps: Vec<&str> = m["map"]
        .as_sequence()
        .expect("map list")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        maps.iter().any(|v| v.split(':').next() == Some("ssl")),
        "/ssl mapped for the certificate: {maps:?}"
    );
}

#[test]
fn translations_cover_every_option_and_port() {
    let dir = root().join("addon");
    let m = map(&yaml(&dir.join("config.yaml")));
    let tr = map(&yaml(&dir.join("translations/en.yaml")));
    let mut errors = Vec::new();
    check_translations(
        "configuration",
        &m["schema"],
        &map(&tr["configuration"]),
        &mut errors,
    );
    let network = map(&tr["network"]);
    let ports = map(&m["ports"]);
    assert_eq!(
        network.keys().collect::<Vec<_>>(),
        ports.keys().collect::<Vec<_>>(),
        "network translations"
    );
    assert!(
        errors.is_empty(),
        "translation problems:\n  {}",
        errors.join("\n  ")
    );
}

#[test]
fn add_on_files_icon_logo_docs_and_repository() {
    let dir = root().join("addon");
    let (w, h) = png_size(&dir.join("icon.png"));
    assert_eq!(w, h, "icon is square");
    assert!((96..=256).contains(&w), "icon about 128 px: {w}");
    assert_eq!(png_size(&dir.join("logo.png")), (250, 100), "logo 250x100");
    for f in ["DOCS.md", "README.md", "CHANGELOG.md"] {
        let t = std::fs::read_to_string(dir.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert!(t.trim().len() > 100, "{f} is empty");
    }
    let changelog = std::fs::read_to_string(dir.join("CHANGELOG.md")).unwrap();
    assert!(
        changelog.contains(&format!("[{}]", crate_version())),
        "CHANGELOG has the current version"
    );

    let repo = map(&yaml(&root().join("repository.yaml")));
    assert!(!str_of(&repo, "name").trim().is_empty());
    let url = str_of(&repo, "url");
    assert!(
        url.starts_with("https://") || url.starts_with("http://"),
        "{url}"
    );
    if repo.contains_key("maintainer") {
        str_of(&repo, "maintainer");
    }
    for k in repo.keys() {
        assert!(
            ["name", "url", "maintainer"].contains(&k.as_str()),
            "unknown repository key {k}"
        );
    }

    // The Supervisor searches the repository recursively for add-on manifests: exactly one.
    let mut found = Vec::new();
    let mut stack = vec![root()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if p.is_dir() {
                if !(name.starts_with('.')
                    || name == "target"
                    || name == "venv"
                    || name == "node_modules")
                {
                    stack.push(p);
                }
            } else if matches!(name.as_str(), "config.yaml" | "config.yml" | "config.json") {
                found.push(p);
            }
        }
    }
    assert_eq!(
        found,
        vec![dir.join("config.yaml")],
        "one add-on manifest in the repository"
    );
}

/// The release build command; the Dockerfile must run exactly this.
const RELEASE_BUILD: &str = "cargo build --release --locked";

#[test]
fn dockerfile_is_pinned_multi_stage_with_the_release_build_and_a_healthcheck() {
    let df = std::fs::read_to_string(root().join("addon/Dockerfile")).unwrap();
    let lines: Vec<&str> = df
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    let args: BTreeMap<&str, &str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("ARG "))
        .filter_map(|a| a.split_once('='))
        .collect();
    let froms: Vec<String> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("FROM "))
        .map(|f| {
            let image = f.split_whitespace().next().unwrap();
            // Resolve `${ARG}` from its default.
            match image.strip_prefix("${").and_then(|i| i.strip_suffix('}')) {
                Some(arg) => args
                    .get(arg)
                    .unwrap_or_else(|| panic!("ARG {arg} has no default"))
                    .to_string(),
                None => image.to_owned(),
            }
        })
        .collect();
    assert!(froms.len() >= 2, "multi-stage: {froms:?}");
    for image in &froms {
        assert!(
            !image.contains("BUILD_FROM"),
            "explicit base, not BUILD_FROM: {image}"
        );
        let tag = image
            .split('@')
            .next()
            .unwrap()
            .rsplit_once(':')
            .map(|(_, t)| t);
        assert!(
            tag.is_some_and(|t| t != "latest" && t.chars().any(|c| c.is_ascii_digit())),
            "base image pinned to a versioned tag: {image}"
        );
    }
    assert!(
        froms[0].starts_with("rust:1.95"),
        "builder uses the project's toolchain: {}",
        froms[0]
    );
    // The release build, byte for byte.
    let builds: Vec<&str> = df
        .lines()
        .filter(|l| l.contains("cargo build"))
        .map(|l| {
            let s = &l[l.find("cargo build").unwrap()..];
            s.trim_end_matches(['\\', ' '])
                .split("&&")
                .next()
                .unwrap()
                .trim()
        })
        .collect();
    assert_eq!(builds, vec![RELEASE_BUILD], "Dockerfile release build");
    // CI / scripts / README, where they build a release, use the same command.
    let mut sources = vec![root().join("README.md"), root().join("scripts/test.sh")];
    if let Ok(rd) = std::fs::read_dir(root().join(".github/workflows")) {
        sources.extend(rd.flatten().map(|e| e.path()));
    }
    for f in sources {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        for l in text
            .lines()
            .filter(|l| l.contains("cargo build") && l.contains("--release"))
        {
            let cmd = &l[l.find("cargo build").unwrap()..];
            assert!(
                cmd.trim().starts_with(RELEASE_BUILD),
                "{}: `{}` differs from `{RELEASE_BUILD}`",
                f.display(),
                cmd.trim()
            );
        }
    }
    // Health check through the binary (no shell needed).
    let hc = df
        .lines()
        .skip_while(|l| !l.starts_with("HEALTHCHECK"))
        .take(3)
        .collect::<String>();
    assert!(
        hc.contains(r#"CMD ["/usr/bin/camqtt", "healthcheck"]"#),
        "HEALTHCHECK: {hc}"
    );
    // Everything COPY'd from the context exists; every [[bench]] target is included (cargo
    // refuses to build without them).
    for l in &lines {
        if let Some(rest) = l.strip_prefix("COPY ") {
            if rest.starts_with("--from") {
                continue;
            }
            let parts: Vec<&str> = rest.split_whitespace().collect();
            for src in &parts[..parts.len() - 1] {
                assert!(root().join(src).exists(), "COPY source {src} missing");
            }
        }
    }
    let cargo = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    if cargo.contains("[[bench]]") {
        assert!(
            lines.iter().any(|l| l.starts_with("COPY benches")),
            "benches copied"
        );
    }
    let ignore = std::fs::read_to_string(root().join("addon/Dockerfile.dockerignore")).unwrap();
    for needed in ["!Cargo.toml", "!Cargo.lock", "!src/**", "!benches/**"] {
        assert!(
            ignore.lines().any(|l| l.trim() == needed),
            ".dockerignore keeps {needed}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// End to end: stand-in Supervisor + password-protected Mosquitto + the real binary.
// ---------------------------------------------------------------------------------------

const TOKEN: &str = "test-supervisor-token-5f2a";
const MQTT_USER: &str = "addons";
/// Characters that would break a naïve URL: the credentials must travel as fields.
const MQTT_PASS: &str = "s3cret:p@ss word/x";

/// (method, path, Authorization header) of each request the stand-in Supervisor got.
type Requests = Arc<Mutex<Vec<(String, String, Option<String>)>>>;
/// (topic, payload) of each message a test subscriber got.
type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// What the stand-in Supervisor answers on `GET /services/mqtt`.
#[derive(Clone)]
enum Answer {
    /// `{"result":"ok","data":{…}}`; `chunked`: Transfer-Encoding chunked instead of
    /// Content-Length.
    Provide { port: u16, chunked: bool },
    /// No MQTT provider: 400 `{"result":"error","message":"Service not enabled"}`.
    NotEnabled,
}

/// A stand-in for the Supervisor's HTTP API (services endpoint only). Like the real one it
/// answers 401 unless `Authorization: Bearer <token>` is right.
struct Supervisor {
    url: String,
    requests: Requests,
    task: tokio::task::JoinHandle<()>,
}

impl Supervisor {
    async fn start(answer: Answer) -> Supervisor {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((s, _)) = listener.accept().await else {
                    return;
                };
                let (answer, log) = (answer.clone(), log.clone());
                tokio::spawn(async move {
                    let _ = serve_one(s, answer, log).await;
                });
            }
        });
        Supervisor {
            url,
            requests,
            task,
        }
    }

    fn requests(&self) -> Vec<(String, String, Option<String>)> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_one(mut s: TcpStream, answer: Answer, log: Requests) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 2048];
    let (method, path, auth) = loop {
        let n = s.read(&mut tmp).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&tmp[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        if let Ok(httparse::Status::Complete(_)) = req.parse(&buf) {
            let auth = req
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("authorization"))
                .map(|h| String::from_utf8_lossy(h.value).into_owned());
            break (
                req.method.unwrap_or("").to_owned(),
                req.path.unwrap_or("").to_owned(),
                auth,
            );
        }
    };
    log.lock()
        .unwrap()
        .push((method.clone(), path.clone(), auth.clone()));
    let json = |status: &str, body: String| {
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let reply = if auth.as_deref() != Some(&format!("Bearer {TOKEN}")) {
        // aiohttp's HTTPUnauthorized, as the Supervisor's middleware raises it.
        "HTTP/1.1 401 Unauthorized\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 17\r\nConnection: close\r\n\r\n401: Unauthorized".to_owned()
    } else if method != "GET" || path != "/services/mqtt" {
        json(
            "404 Not Found",
            r#"{"result":"error","message":"Not found"}"#.into(),
        )
    } else {
        match answer {
            Answer::NotEnabled => json(
                "400 Bad Request",
                r#"{"result":"error","message":"Service not enabled","data":{}}"#.into(),
            ),
            Answer::Provide { port, chunked } => {
                let body = serde_json::json!({
                    "result": "ok",
                    "data": {
                        "addon": "core_mosquitto", "host": "127.0.0.1", "port": port,
                        "ssl": false, "protocol": "3.1.1",
                        "username": MQTT_USER, "password": MQTT_PASS,
                    }
                })
                .to_string();
                if chunked {
                    let (a, b) = body.split_at(body.len() / 2);
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
                        a.len(),
                        b.len()
                    )
                } else {
                    json("200 OK", body)
                }
            }
        }
    };
    s.write_all(reply.as_bytes()).await?;
    s.shutdown().await
}

/// Mosquitto on a free loopback port that only lets `addons` / [`MQTT_PASS`] in.
/// Mosquitto that refuses anonymous clients and knows one user.
struct SecureMosquitto {
    port: u16,
    _broker: common::ConfiguredMosquitto,
}

impl SecureMosquitto {
    fn try_start() -> Option<SecureMosquitto> {
        if !common::Mosquitto::available() || !Path::new("/usr/bin/mosquitto_passwd").exists() {
            eprintln!("skipping: mosquitto / mosquitto_passwd not installed");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let pw = common::password_file(dir.path(), MQTT_USER, MQTT_PASS);
        let broker = common::ConfiguredMosquitto::start(dir, 1, |ports| {
            format!(
                "listener {} 127.0.0.1\nallow_anonymous false\npassword_file {}\npersistence false\nlog_dest stderr\n",
                ports[0],
                pw.display()
            )
        });
        Some(SecureMosquitto {
            port: broker.ports[0],
            _broker: broker,
        })
    }
}

/// An MQTT subscriber; `None` credentials = anonymous. Returns (client, received, connack
/// code).
async fn subscribe(
    port: u16,
    creds: Option<(&str, &str)>,
    filter: &str,
) -> (
    AsyncClient,
    Received,
    tokio::sync::oneshot::Receiver<Result<(), String>>,
) {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let id = format!(
        "addon-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let mut o = MqttOptions::new(id, ("127.0.0.1".to_owned(), port));
    o.set_max_packet_size(16 << 20, 16 << 20);
    if let Some((u, p)) = creds {
        o.set_credentials(u.to_owned(), p.to_owned());
    }
    let (client, mut el) = AsyncClient::builder(o).capacity(100).build();
    let msgs = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (m2, c2, f) = (msgs.clone(), client.clone(), filter.to_owned());
    tokio::spawn(async move {
        let mut tx = Some(tx);
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = c2.try_subscribe(f.clone(), QoS::AtLeastOnce);
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(Ok(()));
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => m2.lock().unwrap().push((
                    String::from_utf8_lossy(&p.topic).into_owned(),
                    p.payload.to_vec(),
                )),
                Ok(_) => {}
                Err(e) => {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(Err(e.to_string()));
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    (client, msgs, rx)
}

async fn wait_msg(
    msgs: &Received,
    pred: impl Fn(&str, &[u8]) -> bool,
) -> Option<(String, Vec<u8>)> {
    let end = Instant::now() + T;
    while Instant::now() < end {
        if let Some(m) = msgs
            .lock()
            .unwrap()
            .iter()
            .find(|(t, p)| pred(t, p))
            .cloned()
        {
            return Some(m);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// The camqtt process with its stderr collected; killed on drop.
struct Camqtt {
    child: Child,
    log: Arc<Mutex<String>>,
    _archive: tempfile::TempDir,
}

impl Camqtt {
    /// The binary with a clean environment: only what the Supervisor gives an add-on.
    fn spawn(envs: &[(&str, String)], args: &[&str]) -> Camqtt {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_camqtt"));
        cmd.env_clear()
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // The add-on's web port (8099) and archive folder (/media/camqtt) are the container's;
        // here, a free port and a temporary folder unless the test names its own.
        let archive = tempfile::tempdir().expect("archive dir");
        cmd.env(
            "CAMQTT_WEB_LISTEN",
            format!("127.0.0.1:{}", common::free_port()),
        )
        .env("CAMQTT_ARCHIVE_DIR", archive.path());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn camqtt");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let l2 = log.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let mut l = l2.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        Camqtt {
            child,
            log,
            _archive: archive,
        }
    }

    /// The log so far, without terminal colour codes.
    fn log(&self) -> String {
        let raw = self.log.lock().unwrap().clone();
        let mut out = String::with_capacity(raw.len());
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                // CSI: ESC [ params final-byte
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    }

    /// Wait for the process to exit on its own; its status.
    async fn exit(&mut self, max: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + max;
        while Instant::now() < end {
            if let Ok(Some(st)) = self.child.try_wait() {
                // Let the reader thread drain stderr.
                tokio::time::sleep(Duration::from_millis(100)).await;
                return Some(st);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    fn terminate(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
    }
}

impl Drop for Camqtt {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_options(dir: &Path, json: serde_json::Value) -> PathBuf {
    let p = dir.join("options.json");
    std::fs::write(&p, serde_json::to_vec_pretty(&json).unwrap()).unwrap();
    p
}

/// A perimeter-intrusion push as an IPC sends it (written from the protocol description).
fn intrusion_post(mac: &str) -> Vec<u8> {
    let body = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<config version="1.7" xmlns="http://www.ipc.com/ver10">
<smartType type="openAlramObj">PEA</smartType>
<currentTime type="tint64">1790000300000000</currentTime>
<mac type="string">{mac}</mac>
<perimeter><perInfo type="list" count="1"><item><eventId type="uint32">7</eventId><targetId type="uint32">3</targetId>
<status type="perStatus">SMART_START</status>
<boundary type="list" count="3"><item><point><x>10</x><y>10</y></point></item><item><point><x>90</x><y>10</y></point></item><item><point><x>50</x><y>90</y></point></item></boundary>
<rect><x1>20</x1><y1>20</y1><x2>40</x2><y2>80</y2></rect></item></perInfo></perimeter>
</config>"#
    );
    let mut r = format!(
        "POST /API HTTP/1.1\r\nHost: camqtt\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body.as_bytes());
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_on_mode_end_to_end_with_the_supervisors_mosquitto() {
    let Some(broker) = SecureMosquitto::try_start() else {
        return;
    };
    // The broker really refuses anonymous clients, so success below proves the credentials
    // came from the Supervisor.
    let (_c, _m, anon) = subscribe(broker.port, None, "#").await;
    let anon = tokio::time::timeout(T, anon)
        .await
        .expect("anonymous attempt answered")
        .unwrap();
    assert!(anon.is_err(), "anonymous login must be refused");

    let supervisor = Supervisor::start(Answer::Provide {
        port: broker.port,
        chunked: false,
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let options = write_options(
        dir.path(),
        serde_json::json!({
            "log_level": "info",
            "mqtt": {},
            "base_topic": "camera",
            "discovery_prefix": "homeassistant",
            "cameras": [{"name": "Gate", "mac": "58:5b:69:ad:d0:01", "id": "gate", "area": "Driveway"}],
            "off_delays": {"intrusion": 2},
            "images": {"retain_per_camera": true, "retain_per_category": false, "json_base64": false},
            "receiver": {"allow": ["127.0.0.0/8"]}
        }),
    );
    let http_port = common::free_port();
    let web_port = common::free_port();
    let archive = tempfile::tempdir().unwrap();
    let (_sub, msgs, subscribed) = subscribe(broker.port, Some((MQTT_USER, MQTT_PASS)), "#").await;
    tokio::time::timeout(T, subscribed)
        .await
        .expect("suback")
        .unwrap()
        .expect("subscriber with the credentials");

    let mut camqtt = Camqtt::spawn(
        &[
            ("SUPERVISOR_TOKEN", TOKEN.into()),
            ("SUPERVISOR_URL", supervisor.url.clone()),
            ("CAMQTT_ADDON_OPTIONS", options.display().to_string()),
            ("CAMQTT_LISTEN", format!("127.0.0.1:{http_port}")),
            ("CAMQTT_WEB_LISTEN", format!("127.0.0.1:{web_port}")),
            ("CAMQTT_ARCHIVE_DIR", archive.path().display().to_string()),
        ],
        &[],
    );
    let online = wait_msg(&msgs, |t, p| t == "camera/bridge/state" && p == b"online").await;
    assert!(
        online.is_some(),
        "bridge online on the Supervisor's broker; log:\n{}",
        camqtt.log()
    );

    // The Supervisor was asked once, the right way.
    let reqs = supervisor.requests();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(reqs[0].0, "GET");
    assert_eq!(reqs[0].1, "/services/mqtt");
    assert_eq!(
        reqs[0].2.as_deref(),
        Some(format!("Bearer {TOKEN}").as_str())
    );

    // A camera post becomes an event under the configured id, with the configured name.
    let mut s = tokio::time::timeout(T, async {
        loop {
            if let Ok(s) = TcpStream::connect(("127.0.0.1", http_port)).await {
                break s;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("receiver up");
    s.write_all(&intrusion_post("58:5b:69:ad:d0:01"))
        .await
        .unwrap();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(T, s.read_to_end(&mut reply)).await;
    assert!(
        reply.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    let event = wait_msg(&msgs, |t, _| t == "camera/gate/intrusion/event").await;
    let (_, payload) = event.unwrap_or_else(|| panic!("event published; log:\n{}", camqtt.log()));
    let ev: serde_json::Value = serde_json::from_slice(&payload).expect("event JSON");
    assert_eq!(ev["category"], "intrusion");
    assert_eq!(ev["device"]["name"], "Gate");
    assert!(
        wait_msg(&msgs, |t, p| t == "camera/gate/intrusion/state"
            && p == b"ON")
        .await
        .is_some()
    );
    // The configured 2 s off delay (not the default 30 s) turns it off.
    let off = wait_msg(&msgs, |t, p| {
        t == "camera/gate/intrusion/state" && p == b"OFF"
    })
    .await;
    assert!(off.is_some(), "off after the add-on's off delay");

    // The archive is on by default in the add-on: the event is in the camera's log of the day.
    let logged = walk_files(archive.path())
        .into_iter()
        .find(|p| p.ends_with("events.jsonl") && p.starts_with(archive.path().join("gate")));
    let logged = logged.unwrap_or_else(|| panic!("archive event log; log:\n{}", camqtt.log()));
    let line = std::fs::read_to_string(&logged).unwrap();
    assert!(line.contains("\"category\":\"intrusion\""), "{line}");
    // The web page is for ingress only without `web_token`: the loopback is refused, while
    // /healthz (the Docker health check's) answers anyone.
    let web = |path: &str| {
        let url = format!("http://127.0.0.1:{web_port}/{path}");
        async move {
            camqtt::http_client::client()
                .expect("HTTP client")
                .get(url)
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    };
    assert_eq!(web("api/devices").await.ok(), Some(403));
    assert_eq!(web("healthz").await.ok(), Some(200));

    let log = camqtt.log();
    assert!(log.contains("Home Assistant add-on mode"), "{log}");
    assert!(
        log.contains("using the MQTT broker provided by the Supervisor"),
        "{log}"
    );
    assert!(log.contains("core_mosquitto"), "{log}");
    assert!(
        !log.contains(MQTT_PASS) && !log.contains("p@ss"),
        "password in the log:\n{log}"
    );
    assert!(!log.contains(TOKEN), "token in the log:\n{log}");

    camqtt.terminate();
    let st = camqtt.exit(T).await.expect("exits after SIGTERM");
    assert!(st.success(), "{st:?}\n{}", camqtt.log());
    assert!(
        wait_msg(&msgs, |t, p| t == "camera/bridge/state" && p == b"offline")
            .await
            .is_some()
    );
}

/// Every regular file under `dir`.
fn walk_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk_files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn without_a_token_it_stops_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let options = write_options(dir.path(), serde_json::json!({"mqtt": {"broker": ""}}));
    let opt = options.display().to_string();
    let mut camqtt = Camqtt::spawn(
        &[(
            "CAMQTT_LISTEN",
            format!("127.0.0.1:{}", common::free_port()),
        )],
        &["run", "--addon-options", &opt],
    );
    let st = camqtt
        .exit(T)
        .await
        .unwrap_or_else(|| panic!("exits; log:\n{}", camqtt.log()));
    assert!(!st.success());
    let log = camqtt.log();
    assert!(log.contains("SUPERVISOR_TOKEN is not set"), "{log}");
    assert!(
        log.contains("reason=\"token_missing\"") || log.contains("reason=token_missing"),
        "{log}"
    );
    assert_eq!(log.matches("ERROR").count(), 1, "one error line:\n{log}");
}

#[tokio::test]
async fn without_an_mqtt_add_on_it_says_so_and_stops() {
    let supervisor = Supervisor::start(Answer::NotEnabled).await;
    let dir = tempfile::tempdir().unwrap();
    let options = write_options(dir.path(), serde_json::json!({"mqtt": {}, "cameras": []}));
    let mut camqtt = Camqtt::spawn(
        &[
            ("SUPERVISOR_TOKEN", TOKEN.into()),
            ("SUPERVISOR_URL", supervisor.url.clone()),
            ("CAMQTT_ADDON_OPTIONS", options.display().to_string()),
            (
                "CAMQTT_LISTEN",
                format!("127.0.0.1:{}", common::free_port()),
            ),
        ],
        &[],
    );
    let st = camqtt
        .exit(T)
        .await
        .unwrap_or_else(|| panic!("exits; log:\n{}", camqtt.log()));
    assert!(!st.success());
    let log = camqtt.log();
    assert!(
        log.contains("no MQTT broker is available from the Supervisor"),
        "{log}"
    );
    assert!(
        log.contains("Service not enabled"),
        "the Supervisor's reason is shown: {log}"
    );
    assert!(
        log.contains("Mosquitto broker add-on"),
        "tells what to do: {log}"
    );
    assert_eq!(
        supervisor.requests().len(),
        1,
        "no retry for a definite answer"
    );
}

#[tokio::test]
async fn a_wrong_token_is_reported_as_refused() {
    let supervisor = Supervisor::start(Answer::Provide {
        port: 1,
        chunked: false,
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let options = write_options(dir.path(), serde_json::json!({}));
    let mut camqtt = Camqtt::spawn(
        &[
            ("SUPERVISOR_TOKEN", "not-the-token".into()),
            ("SUPERVISOR_URL", supervisor.url.clone()),
            ("CAMQTT_ADDON_OPTIONS", options.display().to_string()),
        ],
        &[],
    );
    let st = camqtt
        .exit(T)
        .await
        .unwrap_or_else(|| panic!("exits; log:\n{}", camqtt.log()));
    assert!(!st.success());
    let log = camqtt.log();
    assert!(log.contains("refused") && log.contains("401"), "{log}");
    assert!(!log.contains("not-the-token"), "token in the log: {log}");
}

#[tokio::test]
async fn client_reads_chunked_answers_and_retries_an_unreachable_supervisor() {
    let supervisor = Supervisor::start(Answer::Provide {
        port: 1883,
        chunked: true,
    })
    .await;
    let mut s = camqtt::addon::SupervisorSettings::from_env(&|k| match k {
        "SUPERVISOR_URL" => Some(supervisor.url.clone()),
        "SUPERVISOR_TOKEN" => Some(TOKEN.to_owned()),
        _ => None,
    });
    let svc = camqtt::addon::fetch_mqtt_service_once(&s)
        .await
        .expect("chunked answer parsed");
    assert_eq!(
        (svc.host.as_str(), svc.port, svc.ssl),
        ("127.0.0.1", 1883, false)
    );
    assert_eq!(svc.username.as_deref(), Some(MQTT_USER));
    assert_eq!(
        svc.password
            .as_ref()
            .map(secrecy::ExposeSecret::expose_secret),
        Some(MQTT_PASS)
    );
    assert_eq!(svc.url(), "mqtt://127.0.0.1:1883");

    // Nothing listens: unreachable, retried `attempts` times with back-off, then given up.
    s.url = format!("http://127.0.0.1:{}", common::free_port());
    s.attempts = 3;
    s.backoff = Duration::from_millis(100);
    let started = Instant::now();
    let err = camqtt::addon::fetch_mqtt_service(&s)
        .await
        .expect_err("unreachable");
    assert!(
        matches!(err, camqtt::addon::ServiceError::Unreachable { .. }),
        "{err:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "two back-offs: 100 + 200 ms"
    );
    assert!(err.to_string().contains("unreachable"));

    // No token: no request at all.
    s.token = None;
    assert_eq!(
        camqtt::addon::fetch_mqtt_service(&s).await,
        Err(camqtt::addon::ServiceError::NoToken)
    );
}
