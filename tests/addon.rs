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

/// The map types (`MappingType`) and the first Supervisor release that knows each; `None`:
/// every release the manifest is checked against (2026.02–2026.08). A release that does not know
/// a type ignores the entry without a word, so the add-on would start without that folder.
/// From 2026.07.1 `addon_config` and `all_addon_configs` still work and log a "legacy" warning.
const MAP_TYPES: &[(&str, Option<&str>)] = &[
    ("data", None),
    ("config", None),
    ("ssl", None),
    ("addons", None),
    ("backup", None),
    ("share", None),
    ("media", None),
    ("homeassistant_config", None),
    ("all_addon_configs", None),
    ("addon_config", None),
    // The new name of `addon_config` (the folder moved to /app_configs in 2026.06).
    ("app_config", Some("2026.07.1")),
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
    // Maps: RE_VOLUME, with a type every Supervisor of 2026.02–2026.08 honours (see
    // MAP_TYPES: a newer name is silently ignored by older Supervisors).
    for v in m
        .get("map")
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
    {
        let s = v.as_str().expect("map entries are strings here");
        let (kind, mode) = s.split_once(':').unwrap_or((s, "ro"));
        match MAP_TYPES.iter().find(|(name, _)| *name == kind) {
            None => errors.push(format!("map entry `{s}`: unknown type")),
            Some((_, Some(since))) => errors.push(format!(
                "map entry `{s}`: only Supervisor {since} and later know `{kind}`; older ones ignore it silently"
            )),
            Some((_, None)) => {}
        }
        if !matches!(mode, "rw" | "ro") {
            errors.push(format!("map entry `{s}`: mode `{mode}`"));
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
    assert_eq!(c.mqtt.url, ["mqtt://core-mosquitto:1883"]);
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

/// Docker's name (BuildKit's `TARGETARCH`) for each Home Assistant architecture.
const DOCKER_ARCH: &[(&str, &str)] = &[("amd64", "amd64"), ("aarch64", "arm64")];

/// One `FROM` and the instructions after it.
struct Stage {
    base: String,
    name: Option<String>,
    instructions: Vec<String>,
}

/// A Dockerfile as (global instructions before the first `FROM`, stages): continuation lines
/// joined, comments (parser directives and `# hadolint` pragmas included) and blank lines left
/// out.
fn dockerfile(text: &str) -> (Vec<String>, Vec<Stage>) {
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || t.is_empty() {
            continue;
        }
        match t.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part.trim_end());
                current.push(' ');
            }
            None => {
                current.push_str(t);
                instructions.push(std::mem::take(&mut current));
            }
        }
    }
    assert!(current.is_empty(), "Dockerfile ends in a continuation");
    let (mut global, mut stages) = (Vec::new(), Vec::<Stage>::new());
    for i in instructions {
        if let Some(from) = i.strip_prefix("FROM ") {
            let words: Vec<&str> = from
                .split_whitespace()
                .filter(|w| !w.starts_with("--"))
                .collect();
            let name = match words.as_slice() {
                [_, kw, name] if kw.eq_ignore_ascii_case("as") => Some((*name).to_owned()),
                [_] => None,
                other => panic!("FROM {other:?}"),
            };
            stages.push(Stage {
                base: words[0].to_owned(),
                name,
                instructions: Vec::new(),
            });
        } else if let Some(stage) = stages.last_mut() {
            stage.instructions.push(i);
        } else {
            global.push(i);
        }
    }
    (global, stages)
}

/// `key=value` pairs of a `LABEL` instruction, values unquoted.
fn labels(instruction: &str) -> Vec<(String, String)> {
    let Some(rest) = instruction.strip_prefix("LABEL ") else {
        return Vec::new();
    };
    let (mut words, mut word, mut quoted) = (Vec::new(), String::new(), false);
    for c in rest.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
        .iter()
        .map(|w| {
            let (k, v) = w.split_once('=').unwrap_or_else(|| panic!("LABEL {w}"));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// A stage's base with `${TARGETARCH}` replaced by each Docker architecture of the manifest
/// (the base itself when it does not use it).
fn per_platform(base: &str) -> Vec<String> {
    if base.contains("${TARGETARCH}") {
        DOCKER_ARCH
            .iter()
            .map(|(_, docker)| base.replace("${TARGETARCH}", docker))
            .collect()
    } else {
        vec![base.to_owned()]
    }
}

#[test]
fn dockerfile_is_pinned_multi_stage_with_the_release_build_and_a_healthcheck() {
    let df = std::fs::read_to_string(root().join("addon/Dockerfile")).unwrap();
    let lines: Vec<&str> = df
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    let (global, stages) = dockerfile(&df);
    let args: BTreeMap<&str, &str> = global
        .iter()
        .filter_map(|l| l.strip_prefix("ARG "))
        .filter_map(|a| a.split_once('='))
        .collect();
    // The images the stages start from; a FROM naming an earlier stage (for every platform,
    // `${TARGETARCH}` expanded) is not an image.
    let mut froms = Vec::new();
    for (n, stage) in stages.iter().enumerate() {
        let earlier = |b: &String| stages[..n].iter().any(|s| s.name.as_ref() == Some(b));
        if per_platform(&stage.base).iter().all(earlier) {
            continue;
        }
        // Resolve `${ARG}` from its default.
        let image = match stage
            .base
            .strip_prefix("${")
            .and_then(|i| i.strip_suffix('}'))
        {
            Some(arg) => args
                .get(arg)
                .unwrap_or_else(|| panic!("ARG {arg} has no default"))
                .to_string(),
            None => stage.base.clone(),
        };
        froms.push(image);
    }
    assert!(stages.len() >= 2, "multi-stage: {froms:?}");
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

#[test]
fn image_is_labelled_per_platform_from_targetarch() {
    // `docker buildx build --platform linux/amd64,linux/arm64` builds the file once per
    // platform with BuildKit's TARGETARCH set (amd64, arm64). The label must come from it,
    // mapped to Home Assistant's names: the final stage starts from a per-architecture stage
    // that carries `io.hass.arch` (an image inherits its base's labels).
    let df = std::fs::read_to_string(root().join("addon/Dockerfile")).unwrap();
    let (global, stages) = dockerfile(&df);
    assert!(
        global.iter().any(|i| i == "ARG TARGETARCH"),
        "`ARG TARGETARCH` (no default: BuildKit sets it) before the first FROM: {global:?}"
    );
    let last = stages.last().expect("stages");
    assert!(
        last.base.contains("${TARGETARCH}"),
        "the final stage starts from a stage chosen by TARGETARCH: FROM {}",
        last.base
    );
    let arch_labels = |s: &Stage| -> Vec<String> {
        s.instructions
            .iter()
            .flat_map(|i| labels(i))
            .filter(|(k, _)| k == "io.hass.arch")
            .map(|(_, v)| v)
            .collect()
    };
    let m = map(&yaml(&root().join("addon/config.yaml")));
    let archs: BTreeSet<&str> = m["arch"]
        .as_sequence()
        .expect("arch list")
        .iter()
        .map(|a| a.as_str().expect("arch string"))
        .collect();
    assert_eq!(
        archs,
        DOCKER_ARCH.iter().map(|(ha, _)| *ha).collect(),
        "every architecture of the manifest has its Docker name here"
    );
    let mut labelled = BTreeSet::new();
    for (ha, docker) in DOCKER_ARCH {
        let name = last.base.replace("${TARGETARCH}", docker);
        let stage = stages
            .iter()
            .find(|s| s.name.as_deref() == Some(name.as_str()))
            .unwrap_or_else(|| panic!("no stage `{name}` for --platform linux/{docker}"));
        assert_eq!(
            arch_labels(stage),
            vec![ha.to_string()],
            "stage {name}: io.hass.arch for linux/{docker}"
        );
        labelled.insert(name);
    }
    // No other stage (the final one included, which would override it) sets the label, and
    // nothing takes it from BUILD_ARCH, which a buildx build does not set per platform.
    for s in &stages {
        if !s.name.as_ref().is_some_and(|n| labelled.contains(n)) {
            assert!(
                arch_labels(s).is_empty(),
                "io.hass.arch set in stage FROM {}",
                s.base
            );
        }
    }
    assert!(!df.contains("BUILD_ARCH"), "io.hass.arch from BUILD_ARCH");
    let final_labels: BTreeMap<String, String> =
        last.instructions.iter().flat_map(|i| labels(i)).collect();
    assert_eq!(
        final_labels.get("io.hass.type").map(String::as_str),
        Some("app")
    );
    assert_eq!(
        final_labels.get("io.hass.version").map(String::as_str),
        Some("${BUILD_VERSION}")
    );
}

/// The add-on linter's schemas, when `../shared` is there.
fn linter_schema(file: &str) -> Option<serde_json::Value> {
    let path = root()
        .join("../shared/homeassistant/addon-linter")
        .join(file);
    let Ok(text) = std::fs::read_to_string(&path) else {
        eprintln!(
            "skipping: {} is absent (the add-on linter's schema lives in ../shared)",
            path.display()
        );
        return None;
    };
    Some(serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

/// Equal as JSON values (numbers by value, `true` is not `1`).
fn json_same(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value as J;
    match (a, b) {
        (J::Number(x), J::Number(y)) => x.as_f64() == y.as_f64(),
        (J::Array(x), J::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_same(a, b))
        }
        (J::Object(x), J::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_same(v, w)))
        }
        _ => a == b,
    }
}

/// The linter's default-value rule: every top-level key whose value equals the schema's
/// `default`.
fn repeated_defaults(manifest: &serde_json::Value, schema: &serde_json::Value) -> Vec<String> {
    let props = schema["properties"].as_object().expect("schema properties");
    manifest
        .as_object()
        .expect("manifest mapping")
        .iter()
        .filter_map(|(k, v)| {
            let default = props.get(k)?.get("default")?;
            json_same(v, default).then(|| format!("`{k}: {v}` repeats the default"))
        })
        .collect()
}

#[test]
fn manifest_repeats_no_linter_default() {
    // The community add-on linter refuses a top-level key equal to its schema default
    // (tests/addon/lint.py runs the whole linter; this is the same rule for `cargo nextest`).
    let Some(schema) = linter_schema("config.schema.json") else {
        return;
    };
    let manifest =
        serde_json::to_value(yaml(&root().join("addon/config.yaml"))).expect("manifest as JSON");
    let problems = repeated_defaults(&manifest, &schema);
    assert!(
        problems.is_empty(),
        "addon/config.yaml (remove them; a comment may say the value):\n  {}",
        problems.join("\n  ")
    );
    // The rule itself finds what the linter found before: the four keys at their defaults,
    // and `ingress_port` written as 8099; a value other than the default passes.
    let mut old = manifest.clone();
    let o = old.as_object_mut().unwrap();
    for (k, v) in [
        ("startup", serde_json::json!("application")),
        ("boot", serde_json::json!("auto")),
        ("init", serde_json::json!(true)),
        ("backup", serde_json::json!("hot")),
        ("ingress_port", serde_json::json!(8099)),
        ("stage", serde_json::json!("experimental")),
    ] {
        o.insert(k.into(), v);
    }
    let found = repeated_defaults(&old, &schema);
    for k in ["startup", "boot", "init", "backup", "ingress_port"] {
        assert!(
            found.iter().any(|p| p.starts_with(&format!("`{k}:"))),
            "{k} not reported: {found:?}"
        );
    }
    assert_eq!(
        found.len(),
        5,
        "`stage: experimental` is not the default: {found:?}"
    );
}

/// Python's `re.match(pattern, value)` for each case: how the Supervisor applies a
/// `match(...)` option type (voluptuous `Match`). `None` when there is no python3.
fn python_re_match(cases: &[(String, String)]) -> Option<Vec<bool>> {
    const SCRIPT: &str = "import json, re, sys\n\
        print(json.dumps([re.match(p, v) is not None for p, v in json.load(sys.stdin)]))";
    let child = Command::new("python3")
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            assert!(
                std::env::var_os("CAMQTT_REQUIRE_PYTHON").is_none(),
                "CAMQTT_REQUIRE_PYTHON is set but there is no python3"
            );
            eprintln!("skipping: no python3 to run the Supervisor's regular expressions");
            return None;
        }
        Err(e) => panic!("python3: {e}"),
    };
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(&serde_json::to_vec(cases).unwrap())
            .unwrap();
    }
    let out = child.wait_with_output().expect("python3 runs");
    assert!(
        out.status.success(),
        "python3 re: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).expect("python3 answer"))
}

/// Every `match(...)` option in the schema: (path such as `cameras[].mac`, pattern, optional).
fn match_fields(schema: &Value, path: &str, out: &mut Vec<(String, String, bool)>) {
    let join = |k: &str| {
        if path.is_empty() {
            k.to_owned()
        } else {
            format!("{path}.{k}")
        }
    };
    match schema {
        Value::Mapping(_) => {
            for (k, v) in map(schema) {
                match_fields(&v, &join(&k), out);
            }
        }
        Value::Sequence(items) => {
            for item in items {
                match_fields(item, &format!("{path}[]"), out);
            }
        }
        Value::String(t) => {
            let (t, optional) = match t.strip_suffix('?') {
                Some(t) => (t, true),
                None => (t.as_str(), false),
            };
            if let Some(p) = t.strip_prefix("match(").and_then(|p| p.strip_suffix(')')) {
                out.push((path.to_owned(), p.to_owned(), optional));
            }
        }
        _ => {}
    }
}

/// Each `match(...)` option: a value it must take and one it must refuse.
const MATCH_SAMPLES: &[(&str, &str, &str)] = &[
    ("mqtt.broker", "mqtt://10.0.0.2:1884", "mqtt://host/path"),
    ("base_topic", "camera", "a/#"),
    ("discovery_prefix", "homeassistant", "home assistant"),
    ("cameras[].mac", "58:5b:69:40:f4:0d", "zz"),
    ("cameras[].id", "gate", "Gate!"),
    ("ftp.passive_address", "192.168.1.10", "host.local"),
    ("poll[].id", "driveway", "Drive Way"),
];

#[test]
fn optional_match_fields_accept_the_empty_string_and_refuse_bad_values() {
    // The UI sends "" for an optional field the user cleared; the Supervisor checks it against
    // the pattern like any value, so an optional pattern that refuses "" makes the options
    // unsavable (for the broker, "" means "ask the Supervisor").
    let m = map(&yaml(&root().join("addon/config.yaml")));
    let mut fields = Vec::new();
    match_fields(&m["schema"], "", &mut fields);
    let paths: BTreeSet<&str> = fields.iter().map(|(p, _, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        MATCH_SAMPLES.iter().map(|(p, _, _)| *p).collect(),
        "every match(...) option has samples here"
    );
    let mut cases = Vec::new();
    for (path, pattern, optional) in &fields {
        let (_, good, bad) = MATCH_SAMPLES.iter().find(|(p, _, _)| p == path).unwrap();
        cases.push((path.clone(), pattern.clone(), good.to_string(), true));
        cases.push((path.clone(), pattern.clone(), bad.to_string(), false));
        // "" must pass an optional pattern; a required one may refuse it.
        if *optional {
            cases.push((path.clone(), pattern.clone(), String::new(), true));
        }
    }
    let input: Vec<(String, String)> = cases
        .iter()
        .map(|(_, p, v, _)| (p.clone(), v.clone()))
        .collect();
    let Some(results) = python_re_match(&input) else {
        return;
    };
    let wrong: Vec<String> = cases
        .iter()
        .zip(&results)
        .filter(|((.., want), got)| want != *got)
        .map(|((path, pattern, value, want), _)| {
            format!(
                "{path}: `{pattern}` {} {value:?}",
                if *want { "refuses" } else { "accepts" }
            )
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "match patterns:\n  {}",
        wrong.join("\n  ")
    );
    assert!(
        fields.iter().filter(|(_, _, optional)| *optional).count() >= 4,
        "the optional match fields were found: {fields:?}"
    );
}

/// The item an option list gets in [`a_cleared_optional_match_field_is_unset_in_add_on_mode`]
/// (a camera needs a way to be matched: here its serial).
const LIST_ITEM: &[(&str, &str)] = &[("cameras", r#"{"name": "Gate", "serial": "N123"}"#)];

/// The default options with `path` (`group.field`, `list[].field` or `field`) set to `value`,
/// or left out with `None`. The field's group is switched on when it has `enabled`.
fn options_with(path: &str, value: Option<&str>) -> serde_json::Value {
    let m = map(&yaml(&root().join("addon/config.yaml")));
    let mut options = serde_json::to_value(&m["options"]).expect("options as JSON");
    let set = |obj: &mut serde_json::Value, field: &str| {
        let obj = obj.as_object_mut().expect("an options mapping");
        match value {
            Some(v) => obj.insert(field.to_owned(), v.into()),
            None => obj.remove(field),
        };
    };
    if let Some((list, field)) = path.split_once("[].") {
        let (_, item) = LIST_ITEM
            .iter()
            .find(|(l, _)| *l == list)
            .unwrap_or_else(|| panic!("no LIST_ITEM for `{list}`"));
        let mut item: serde_json::Value = serde_json::from_str(item).unwrap();
        set(&mut item, field);
        options[list] = serde_json::json!([item]);
    } else if let Some((group, field)) = path.split_once('.') {
        let g = options
            .as_object_mut()
            .unwrap()
            .entry(group)
            .or_insert_with(|| serde_json::json!({}));
        if map(&map(&m["schema"])[group]).contains_key("enabled") {
            g["enabled"] = true.into();
        }
        set(g, field);
    } else {
        set(&mut options, path);
    }
    options
}

#[test]
fn a_cleared_optional_match_field_is_unset_in_add_on_mode() {
    // What the Supervisor writes to options.json for a cleared optional field, "", must mean
    // the same to camqtt as the field left out, for every optional match(...) field; a real
    // value must change the configuration (or the comparison proves nothing).
    let m = map(&yaml(&root().join("addon/config.yaml")));
    let mut fields = Vec::new();
    match_fields(&m["schema"], "", &mut fields);
    let svc = camqtt::addon::parse_mqtt_service(
        200,
        br#"{"result":"ok","data":{"addon":"core_mosquitto","host":"core-mosquitto","port":1883,"ssl":false,"username":"addons","password":"x"}}"#,
    )
    .unwrap();
    let host: std::net::Ipv4Addr = "10.0.0.9".parse().unwrap();
    let config = |options: &serde_json::Value| {
        let opts = camqtt::addon::parse_options(&options.to_string())
            .unwrap_or_else(|e| panic!("{options}: {e}"));
        let c = opts
            .apply_with(
                camqtt::config::Config::default(),
                Path::new("/data"),
                Some(&svc),
                Some(host),
            )
            .unwrap_or_else(|p| panic!("{options}: {p:?}"));
        (opts.needs_service(), format!("{c:?}"))
    };
    let mut checked = BTreeSet::new();
    for (path, _, optional) in &fields {
        if !optional {
            continue;
        }
        let (_, good, _) = MATCH_SAMPLES.iter().find(|(p, _, _)| p == path).unwrap();
        let unset = config(&options_with(path, None));
        let cleared = config(&options_with(path, Some("")));
        let set = config(&options_with(path, Some(good)));
        assert!(cleared == unset, "{path}: \"\" is not the same as unset");
        assert!(set != unset, "{path}: {good:?} changes nothing");
        checked.insert(path.as_str());
    }
    assert_eq!(
        checked,
        BTreeSet::from([
            "mqtt.broker",
            "cameras[].mac",
            "cameras[].id",
            "ftp.passive_address"
        ]),
        "the optional match fields"
    );
    // The broker in particular: "" asks the Supervisor.
    let (needs, _) = config(&options_with("mqtt.broker", Some("")));
    assert!(needs, "an empty broker asks the Supervisor");
}

#[test]
fn config_folder_map_works_on_every_supervisor_and_is_documented() {
    // camqtt reads /config/camqtt.toml: the `addon_config` map puts the add-on's own folder
    // there. Its new name, `app_config` (Supervisor 2026.07.1), is silently ignored by older
    // Supervisors and unknown to the add-on linter; `addon_config` works on all of them (from
    // 2026.07.1 with a "legacy" warning in the Supervisor's log).
    assert!(camqtt::addon::ADVANCED_CONFIG_PATH.starts_with("/config/"));
    let m = map(&yaml(&root().join("addon/config.yaml")));
    let maps: Vec<&str> = m["map"]
        .as_sequence()
        .expect("map list")
        .iter()
        .map(|v| v.as_str().expect("map entries are strings"))
        .collect();
    assert!(
        maps.contains(&"addon_config:rw"),
        "addon_config:rw mapped: {maps:?}"
    );
    assert!(
        !maps
            .iter()
            .any(|v| matches!(v.split(':').next(), Some("app_config" | "config"))),
        "one map type for /config, the one every Supervisor honours: {maps:?}"
    );
    // The user finds the folder under either name, and the reason for the map type.
    let docs = std::fs::read_to_string(root().join("addon/DOCS.md")).unwrap();
    for needle in [
        "/addon_configs/<id>_camqtt",
        "/app_configs/<id>_camqtt",
        "2026.06",
        "`app_config`",
        "2026.07.1",
        "/config/camqtt.toml",
    ] {
        assert!(docs.contains(needle), "DOCS.md does not mention {needle}");
    }
    // ... and which name goes with which Supervisor (the table rows).
    let row =
        |folder: &str, when: &str| docs.lines().any(|l| l.contains(folder) && l.contains(when));
    assert!(
        row("/addon_configs/<id>_camqtt", "before 2026.06"),
        "DOCS.md: /addon_configs before 2026.06"
    );
    assert!(
        row("/app_configs/<id>_camqtt", "2026.06 and later"),
        "DOCS.md: /app_configs from 2026.06"
    );
}

/// Files under `dir`, relative, with their bytes.
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    walk_files(dir)
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p.strip_prefix(dir).unwrap().to_owned(), bytes)
        })
        .collect()
}

#[test]
fn local_add_on_folder_has_everything_its_dockerfile_copies() {
    // The Supervisor builds a local add-on (a folder in /addons without `image:`) with that
    // folder as the context. scripts/addon-local.sh assembles such a folder: addon/ plus the
    // sources the Dockerfile copies, and no `image:`.
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("camqtt");
    let run = Command::new("bash")
        .arg(root().join("scripts/addon-local.sh"))
        .arg(&out)
        .output()
        .expect("bash scripts/addon-local.sh");
    assert!(
        run.status.success(),
        "addon-local.sh: {}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );

    // The manifest: the same, less `image:` (so the Supervisor builds instead of pulling).
    let mut want = map(&yaml(&root().join("addon/config.yaml")));
    assert!(
        want.remove("image").is_some(),
        "addon/config.yaml has image:"
    );
    assert_eq!(map(&yaml(&out.join("config.yaml"))), want);
    // Every other add-on file, and every COPY source of the Dockerfile, byte for byte.
    let addon = tree(&root().join("addon"));
    let built = tree(&out);
    for (rel, bytes) in &addon {
        if rel != Path::new("config.yaml") {
            assert!(built.get(rel) == Some(bytes), "{} differs", rel.display());
        }
    }
    let df = std::fs::read_to_string(out.join("Dockerfile")).unwrap();
    let (_, stages) = dockerfile(&df);
    let mut sources = Vec::new();
    for i in stages.iter().flat_map(|s| &s.instructions) {
        let Some(rest) = i.strip_prefix("COPY ") else {
            continue;
        };
        if rest.contains("--from") {
            continue;
        }
        let words: Vec<&str> = rest
            .split_whitespace()
            .filter(|w| !w.starts_with("--"))
            .collect();
        sources.extend(words[..words.len() - 1].iter().map(|s| s.to_string()));
    }
    assert!(
        ["Cargo.toml", "Cargo.lock", "src"]
            .iter()
            .all(|s| sources.iter().any(|c| c == s)),
        "COPY sources: {sources:?}"
    );
    for src in &sources {
        let (have, repo) = (out.join(src), root().join(src));
        assert!(
            have.exists(),
            "COPY source {src} missing in the local folder"
        );
        if repo.is_dir() {
            assert!(
                tree(&have) == tree(&repo),
                "{src}/ differs from the repository's"
            );
        } else {
            assert!(
                std::fs::read(&have).unwrap() == std::fs::read(&repo).unwrap(),
                "{src} differs"
            );
        }
    }
    // Cargo finds every target of the crate (lib, bins, benches) inside the folder.
    let cargo = option_env!("CARGO").unwrap_or("cargo");
    let meta = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .arg("--manifest-path")
        .arg(out.join("Cargo.toml"))
        .output()
        .expect("cargo metadata");
    assert!(
        meta.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&meta.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&meta.stdout).unwrap();
    let targets = meta["packages"][0]["targets"].as_array().expect("targets");
    assert!(targets.len() >= 3, "{targets:?}");
    let out_real = out.canonicalize().unwrap();
    for t in targets {
        let src = PathBuf::from(t["src_path"].as_str().unwrap());
        assert!(
            src.exists() && src.starts_with(&out_real),
            "target {} at {}",
            t["name"],
            src.display()
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
