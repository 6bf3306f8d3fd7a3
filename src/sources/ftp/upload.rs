//! An uploaded file to a pipeline message (pure).
//!
//! - A JPEG (magic `FF D8 FF`) that is whole ([`jpeg::check`]) becomes a
//!   [`Message::Event`]: its category from the file name / folder rules ([`rules`]), phase
//!   [`Phase::Pulse`], the file as the overview image and the provenance
//!   `{via: ftp, name: <file name>, path: <folder>}`.
//! - A JPEG cut off before its end marker (field case 11 B), or one whose structure is
//!   broken, becomes a [`Message::Unparsed`] (`upload-cut-off`, `bad-jpeg`): a half image
//!   never reaches `…/image`.
//! - An empty file or a small text file (`.txt`, the "FTP test" and keep-alive files some
//!   cameras upload) is a [`Message::Heartbeat`] of the device.
//! - Anything else (video clips, `.dav`, other pictures) is a [`Message::Unparsed`]
//!   (`not-an-image`).
//!
//! The device: a [`HandleKind::FtpUser`] handle with the login, or with the first folder of
//! the path when `device_from = "folder"` or the login is anonymous (the folder first, the
//! login after it).

use std::net::IpAddr;
use std::time::SystemTime;

use bytes::Bytes;

use super::config::DeviceFrom;
use super::rules::{self, Rule};
use crate::event::{
    Category, DeviceInfo, Event, Handle, HandleKind, Image, ImageRole, Message, Phase, Provenance,
    Unparsed, Via,
};
use crate::sources::jpeg::{self, JpegCheck};

/// The source's name (`ftp`).
const SOURCE: &str = super::SOURCE;

/// Text files up to this size are heartbeats.
const HEARTBEAT_TEXT_MAX: usize = 4096;

/// How uploads are turned into messages (from `[ftp]`).
#[derive(Debug, Clone)]
pub struct Classifier {
    /// File name / folder rules, in order.
    pub rules: Vec<Rule>,
    /// Category when no rule matches.
    pub default_category: Category,
    /// Login or folder names the device.
    pub device_from: DeviceFrom,
    /// Largest part of a non-image file copied to `bridge/unparsed`, bytes.
    pub unparsed_body_cap: usize,
}

/// One finished upload.
#[derive(Debug, Clone)]
pub struct Upload<'a> {
    /// The FTP login (`USER`).
    pub user: &'a str,
    /// The camera's address.
    pub peer: IpAddr,
    /// The file's absolute path as the server resolved it (`/2025-12-01/001/jpg/13/11/07[M][0@0][0].jpg`).
    pub path: &'a str,
    /// The file's bytes.
    pub data: Bytes,
    /// When the upload finished.
    pub received: SystemTime,
}

/// What an upload is, besides its message (for logs and counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A picture that became an event.
    Image,
    /// A heartbeat file.
    Heartbeat,
    /// A JPEG that ended early.
    CutOff,
    /// Anything else.
    Other,
}

/// `/a/b/c.jpg` → (`/a/b`, `c.jpg`); `c.jpg` → (`/`, `c.jpg`).
pub fn split_path(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(0) => ("/", &path[1..]),
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("/", path),
    }
}

/// The first non-empty folder of `dir`.
fn first_folder(dir: &str) -> Option<&str> {
    dir.split('/').find(|s| !s.is_empty())
}

/// Logins that say nothing about the camera (RFC 1635 anonymous FTP).
fn is_anonymous(user: &str) -> bool {
    user.eq_ignore_ascii_case("anonymous") || user.eq_ignore_ascii_case("ftp")
}

impl Classifier {
    /// The device an upload comes from.
    pub fn device(&self, user: &str, peer: IpAddr, dir: &str) -> DeviceInfo {
        let mut handles = Vec::with_capacity(2);
        let folder = first_folder(dir).filter(|_| {
            self.device_from == DeviceFrom::Folder || is_anonymous(user) || user.is_empty()
        });
        if let Some(f) = folder {
            handles.push(Handle::new(HandleKind::FtpUser, f));
        }
        if !user.is_empty() && folder != Some(user) {
            handles.push(Handle::new(HandleKind::FtpUser, user));
        }
        DeviceInfo {
            peer: Some(peer),
            handles,
            ..DeviceInfo::default()
        }
    }

    /// The message for one upload, and what it was.
    pub fn message(&self, up: &Upload<'_>) -> (Message, Kind) {
        let (dir, name) = split_path(up.path);
        let device = self.device(up.user, up.peer, dir);
        let data = &up.data;
        let unparsed = |reason: &str, detail: String| {
            let shown = &data[..data.len().min(self.unparsed_body_cap)];
            // Text is shown; binary content (a clip) is not worth its lossy UTF-8.
            let body = match std::str::from_utf8(shown) {
                Ok(t) => t.to_owned(),
                Err(e) if e.error_len().is_none() => {
                    String::from_utf8_lossy(&shown[..e.valid_up_to()]).into_owned()
                }
                Err(_) => String::new(),
            };
            Message::Unparsed(Unparsed {
                peer: up.peer.to_string(),
                source: SOURCE.into(),
                reason: reason.to_owned(),
                detail,
                path: Some(clean(up.path, 512)),
                body,
                body_len: data.len(),
            })
        };
        if jpeg::is_jpeg(data) {
            return match jpeg::check(data) {
                JpegCheck::Complete { .. } => (
                    Message::Event(Box::new(self.event(up, device, dir, name))),
                    Kind::Image,
                ),
                JpegCheck::Truncated => (
                    unparsed(
                        "upload-cut-off",
                        format!(
                            "JPEG ends after {} bytes without its end marker (EOI): the upload was cut off",
                            data.len()
                        ),
                    ),
                    Kind::CutOff,
                ),
                JpegCheck::Malformed(why) => (
                    unparsed("bad-jpeg", format!("JPEG structure broken: {why}")),
                    Kind::Other,
                ),
            };
        }
        let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
        let texty = std::str::from_utf8(data).is_ok();
        if data.is_empty()
            || (ext.as_deref() == Some("txt") && data.len() <= HEARTBEAT_TEXT_MAX && texty)
        {
            return (Message::Heartbeat(device), Kind::Heartbeat);
        }
        let what = match ext.as_deref() {
            Some("jpg" | "jpeg" | "jpe") => "named like a JPEG but not one (no FF D8 FF magic)",
            _ => "not a JPEG picture; only JPEG uploads become events",
        };
        (unparsed("not-an-image", what.to_owned()), Kind::Other)
    }

    fn event(&self, up: &Upload<'_>, device: DeviceInfo, dir: &str, name: &str) -> Event {
        let rule = rules::classify(&self.rules, dir, name);
        let category = rule.map_or_else(|| self.default_category.clone(), |r| r.category.clone());
        let mut e = Event::new(SOURCE, device, category, Phase::Pulse, up.received);
        e.raw_type = rule.map(|r| r.pattern.clone()).unwrap_or_default();
        e.images.push(Image {
            role: ImageRole::Overview,
            data: up.data.clone(),
            content_type: "image/jpeg".into(),
            width: None,
            height: None,
            target_id: None,
        });
        e.provenance = Some(Provenance {
            via: Via::Ftp,
            name: Some(clean(name, 255)),
            path: Some(clean(dir, 512)),
            // `name` is the file already.
            file: None,
        });
        e
    }
}

/// `text` without control characters, at most `max` characters.
fn clean(text: &str, max: usize) -> String {
    text.chars().filter(|c| !c.is_control()).take(max).collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::sources::jpeg::tests::sample;

    fn classifier() -> Classifier {
        Classifier {
            rules: rules::default_rules(),
            default_category: Category::Motion,
            device_from: DeviceFrom::Login,
            unparsed_body_cap: 64,
        }
    }

    fn up<'a>(user: &'a str, path: &'a str, data: Vec<u8>) -> Upload<'a> {
        Upload {
            user,
            peer: "192.0.2.130".parse().unwrap(),
            path,
            data: Bytes::from(data),
            received: SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn dahua_jpeg_is_a_motion_event_with_provenance() {
        let j = sample(5000);
        let (m, k) = classifier().message(&up(
            "porchcam",
            "/2025-12-01/001/jpg/13/11/07[M][0@0][0].jpg",
            j.clone(),
        ));
        assert_eq!(k, Kind::Image);
        let Message::Event(e) = m else { panic!() };
        assert_eq!(e.category, Category::Motion);
        assert_eq!(e.phase, Phase::Pulse);
        assert_eq!(e.source, "ftp");
        assert_eq!(e.raw_type, "[m]");
        assert_eq!(e.images.len(), 1);
        assert_eq!(e.images[0].data.as_ref(), j.as_slice());
        assert_eq!(e.images[0].role, ImageRole::Overview);
        let p = e.provenance.unwrap();
        assert_eq!(p.via, Via::Ftp);
        assert_eq!(p.name.as_deref(), Some("07[M][0@0][0].jpg"));
        assert_eq!(p.path.as_deref(), Some("/2025-12-01/001/jpg/13/11"));
        assert_eq!(
            e.device.handles,
            [Handle::new(HandleKind::FtpUser, "porchcam")]
        );
        assert_eq!(e.device.peer, Some("192.0.2.130".parse().unwrap()));
    }

    #[test]
    fn unmatched_name_gets_the_default_category() {
        let (m, _) = classifier().message(&up("c", "/Porch_01_20251201132003.jpg", sample(10)));
        let Message::Event(e) = m else { panic!() };
        assert_eq!(e.category, Category::Motion);
        assert_eq!(e.raw_type, "");
        assert_eq!(e.provenance.unwrap().path.as_deref(), Some("/"));
    }

    #[test]
    fn cut_off_jpeg_is_unparsed() {
        let j = sample(5000);
        let (m, k) = classifier().message(&up("c", "/a/07.jpg", j[..2048].to_vec()));
        assert_eq!(k, Kind::CutOff);
        let Message::Unparsed(u) = m else { panic!() };
        assert_eq!(u.reason, "upload-cut-off");
        assert_eq!(u.body_len, 2048);
        assert_eq!(u.path.as_deref(), Some("/a/07.jpg"));
        assert!(u.body.len() <= 64);
    }

    #[test]
    fn other_files() {
        let c = classifier();
        let (m, k) = c.message(&up("c", "/alive.txt", b"ok\n".to_vec()));
        assert_eq!(k, Kind::Heartbeat);
        assert!(matches!(m, Message::Heartbeat(d) if d.handles[0].value == "c"));
        assert_eq!(c.message(&up("c", "/x.jpg", Vec::new())).1, Kind::Heartbeat);
        let (m, k) = c.message(&up("c", "/clip.mp4", vec![0, 0, 0, 0x18, b'f', b't', 0xFF]));
        assert_eq!(k, Kind::Other);
        let Message::Unparsed(u) = m else { panic!() };
        assert_eq!(u.reason, "not-an-image");
        assert_eq!(u.body, "");
        let (m, _) = c.message(&up("c", "/fake.jpg", b"hello".to_vec()));
        let Message::Unparsed(u) = m else { panic!() };
        assert!(u.detail.contains("magic"));
        assert_eq!(u.body, "hello");
    }

    #[test]
    fn device_from_folder_or_anonymous() {
        let mut c = classifier();
        let peer = "192.0.2.1".parse().unwrap();
        let d = c.device("anonymous", peer, "/frontdoor/2025");
        assert_eq!(d.handles[0], Handle::new(HandleKind::FtpUser, "frontdoor"));
        assert_eq!(d.handles[1], Handle::new(HandleKind::FtpUser, "anonymous"));
        let d = c.device("shared", peer, "/");
        assert_eq!(d.handles, [Handle::new(HandleKind::FtpUser, "shared")]);
        c.device_from = DeviceFrom::Folder;
        let d = c.device("shared", peer, "/garage/x");
        assert_eq!(d.handles[0].value, "garage");
    }

    #[test]
    fn paths() {
        assert_eq!(split_path("/a/b/c.jpg"), ("/a/b", "c.jpg"));
        assert_eq!(split_path("/c.jpg"), ("/", "c.jpg"));
        assert_eq!(split_path("c.jpg"), ("/", "c.jpg"));
    }

    proptest! {
        /// Never panics, whatever the bytes, user or path; an image event always carries the
        /// uploaded bytes unchanged, and a cut-off JPEG never becomes an event.
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..300), user in "\\PC{0,20}", path in "\\PC{0,60}", cut in 0usize..200) {
            let c = classifier();
            let (m, _) = c.message(&up(&user, &path, data.clone()));
            if let Message::Event(e) = m {
                prop_assert_eq!(e.images[0].data.as_ref(), data.as_slice());
            }
            let j = sample(cut);
            let (m, k) = c.message(&up(&user, &path, j[..cut.min(j.len() - 1)].to_vec()));
            prop_assert!(!matches!(m, Message::Event(_)));
            prop_assert_ne!(k, Kind::Image);
        }
    }
}
