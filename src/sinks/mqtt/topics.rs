//! Topic layout (pure). See the README, "MQTT topics".

/// Longest topic segment taken from a device id or category (characters).
const MAX_SEGMENT: usize = 128;

/// Make `s` safe as one topic level: `/`, `+`, `#`, NUL and other control characters become
/// `_`, a leading `$` (reserved for broker topics) becomes `_`, an empty, blank, `.` or `..`
/// segment becomes `_`, and the result is capped at 128 characters.
pub fn sanitize_segment(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(MAX_SEGMENT)
        .map(|c| {
            if matches!(c, '/' | '+' | '#') || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    if out.starts_with('$') {
        out.replace_range(0..1, "_");
    }
    // Empty, blank, `.` and `..` levels are replaced too: harmless to MQTT, but a level that
    // ever becomes a path component (topic-to-file bridges, logs) must not walk directories.
    if out.trim().is_empty() || out == "." || out == ".." {
        return "_".to_owned();
    }
    out
}

/// Slug for identifiers that HA restricts to `[a-z0-9_]` (entity ids) or `[a-zA-Z0-9_-]`
/// (discovery object ids): lower case, everything else becomes `_`.
pub fn slug(s: &str) -> String {
    let out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() { "_".to_owned() } else { out }
}

/// Builds every topic of the sink from the base topic.
#[derive(Debug, Clone)]
pub struct Topics {
    base: String,
}

impl Topics {
    /// Topics under `base` (already validated: no wildcards, no empty levels).
    pub fn new(base: &str) -> Topics {
        Topics {
            base: base.to_owned(),
        }
    }

    /// The base topic.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `<base>/bridge/state`: `online` / `offline` (last will).
    pub fn bridge_state(&self) -> String {
        format!("{}/bridge/state", self.base)
    }

    /// `<base>/bridge/info`: JSON.
    pub fn bridge_info(&self) -> String {
        format!("{}/bridge/info", self.base)
    }

    /// `<base>/bridge/unparsed`: JSON of inputs that did not become events.
    pub fn bridge_unparsed(&self) -> String {
        format!("{}/bridge/unparsed", self.base)
    }

    /// `<base>/<device>/availability`.
    pub fn availability(&self, device: &str) -> String {
        format!("{}/{}/availability", self.base, sanitize_segment(device))
    }

    /// `<base>/<category>/image`: newest overview of a category, any device.
    pub fn category_image(&self, category: &str) -> String {
        format!("{}/{}/image", self.base, sanitize_segment(category))
    }

    /// `<base>/<device>/<category>/<leaf>` for a fixed leaf (`image`, `target`, `event`,
    /// `state`, `last`, `plate`, `list`, `targets`, `image_json`, ...).
    pub fn device_cat(&self, device: &str, category: &str, leaf: &str) -> String {
        format!(
            "{}/{}/{}/{}",
            self.base,
            sanitize_segment(device),
            sanitize_segment(category),
            sanitize_segment(leaf)
        )
    }

    /// `<base>/<device>/counting/<dir>_<class>`.
    pub fn counter(&self, device: &str, dir: &str, class: &str) -> String {
        self.device_cat(device, "counting", &counter_key(dir, class))
    }

    /// `<base>/<device>/snapshot/take`: the command topic that takes a snapshot (any payload;
    /// the Home Assistant button "Take snapshot" sends `PRESS`).
    pub fn snapshot_take(&self, device: &str) -> String {
        self.device_cat(device, "snapshot", "take")
    }

    /// `<base>/+/snapshot/take`: the filter the sink subscribes to for commands.
    pub fn commands_filter(&self) -> String {
        format!("{}/+/snapshot/take", self.base)
    }

    /// The command a message on `topic` is, if it is one ([`Topics::snapshot_take`] of some
    /// device): the device level must be a non-empty single level.
    pub fn command(&self, topic: &str) -> Option<crate::event::Command> {
        let device = topic
            .strip_prefix(self.base.as_str())?
            .strip_prefix('/')?
            .strip_suffix("/snapshot/take")?;
        (!device.is_empty() && !device.contains('/')).then(|| crate::event::Command::TakeSnapshot {
            device: device.to_owned(),
        })
    }

    /// `<base>/<device>/objects/<key>/<leaf>`: the state (`ON` / `OFF`) or count of one object
    /// label an object detector found in the device's pictures; `key` is the label's
    /// [`crate::event::caps::object_key`].
    pub fn object(&self, device: &str, key: &str, leaf: &str) -> String {
        format!(
            "{}/{}/objects/{}/{}",
            self.base,
            sanitize_segment(device),
            sanitize_segment(key),
            sanitize_segment(leaf)
        )
    }

    /// `<base>/<device>/alarm/<name>[_<id>]`.
    pub fn alarm(&self, device: &str, name: &str, id: Option<&str>) -> String {
        self.device_cat(device, "alarm", &alarm_key(name, id))
    }
}

/// `<dir>_<class>` with both parts sanitised (`enter_person`).
pub fn counter_key(dir: &str, class: &str) -> String {
    format!("{}_{}", sanitize_segment(dir), sanitize_segment(class))
}

/// `<name>[_<id>]` for an alarm-status element.
pub fn alarm_key(name: &str, id: Option<&str>) -> String {
    match id {
        Some(id) if !id.is_empty() => sanitize_segment(&format!("{name}_{id}")),
        _ => sanitize_segment(name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize() {
        assert_eq!(
            sanitize_segment("58_5b_69_40_f4_0d_ch2"),
            "58_5b_69_40_f4_0d_ch2"
        );
        assert_eq!(sanitize_segment("a/b+c#d"), "a_b_c_d");
        assert_eq!(sanitize_segment(".."), "_");
        assert_eq!(sanitize_segment("."), "_");
        assert_eq!(sanitize_segment("../.."), ".._..");
        assert_eq!(sanitize_segment("x\0y\nz\u{7f}"), "x_y_z_");
        assert_eq!(sanitize_segment(""), "_");
        assert_eq!(sanitize_segment("   "), "_");
        assert_eq!(sanitize_segment("$SYS"), "_SYS");
        assert_eq!(sanitize_segment(&"x".repeat(500)).len(), MAX_SEGMENT);
        assert_eq!(sanitize_segment("Einfahrt Süd"), "Einfahrt Süd");
    }

    #[test]
    fn layout() {
        let t = Topics::new("camera");
        assert_eq!(t.bridge_state(), "camera/bridge/state");
        assert_eq!(t.availability("cam1"), "camera/cam1/availability");
        assert_eq!(t.category_image("lpr"), "camera/lpr/image");
        assert_eq!(
            t.device_cat("cam1", "lpr", "target"),
            "camera/cam1/lpr/target"
        );
        assert_eq!(t.device_cat("c/a#m", "", "state"), "camera/c_a_m/_/state");
        assert_eq!(
            t.counter("cam1", "enter", "person"),
            "camera/cam1/counting/enter_person"
        );
        assert_eq!(
            t.alarm("cam1", "perimeterAlarm", Some("1")),
            "camera/cam1/alarm/perimeterAlarm_1"
        );
        assert_eq!(
            t.alarm("cam1", "motionAlarm", None),
            "camera/cam1/alarm/motionAlarm"
        );
        assert_eq!(t.alarm("cam1", "x/y", Some("")), "camera/cam1/alarm/x_y");
        assert_eq!(
            t.object("cam1", "person", "count"),
            "camera/cam1/objects/person/count"
        );
    }

    #[test]
    fn command_topics() {
        use crate::event::Command;
        let t = Topics::new("home/camera");
        assert_eq!(t.commands_filter(), "home/camera/+/snapshot/take");
        assert_eq!(t.snapshot_take("gate"), "home/camera/gate/snapshot/take");
        assert_eq!(
            t.command("home/camera/gate/snapshot/take"),
            Some(Command::TakeSnapshot {
                device: "gate".into()
            })
        );
        for not in [
            "home/camera//snapshot/take",
            "home/camera/a/b/snapshot/take",
            "home/camera/gate/snapshot/image",
            "home/cameragate/snapshot/take",
            "other/gate/snapshot/take",
        ] {
            assert_eq!(t.command(not), None, "{not}");
        }
    }

    #[test]
    fn slugs() {
        assert_eq!(slug("Cam-1.Front"), "cam_1_front");
        assert_eq!(slug(""), "_");
    }
}
