//! The archive's I/O: [`Archive`] writes pictures, `latest*.jpg` and the event logs and
//! prunes them; [`query`], [`resolve`] and [`latest`] read the directory for the web server
//! (free functions: safe to call from other threads while an [`Archive`] writes).
//!
//! Crash safety: a picture is written to a hidden temporary file (`.camqtt-tmp-…`) in its
//! folder and hard-linked to its name, so it appears complete or not at all and never replaces
//! a file; leftovers of a crash are removed by [`Archive::open`]. `latest*.jpg` are replaced
//! by `rename`. A log line is one `write_all` in append mode; a line cut by a crash is ended
//! before the next one is written, and skipped by [`query`].

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use jiff::tz::TimeZone;
use tracing::{debug, info, warn};

use super::config::ArchiveConfig;
use super::naming::{self, Naming, Values, is_safe_relative, sanitize_component, with_suffix};
use super::record::{self, EventRecord, ImageRecord};
use super::retention::{Index, Pruned};
use crate::event::{Device, Event, ImageRole};

/// Name of each device's day log.
pub const LOG_NAME: &str = "events.jsonl";
/// The file that marks a directory as an archive (hidden, at its top).
pub const MARKER: &str = ".camqtt-archive";
/// Prefix of temporary files (hidden); any left at open are removed.
const TMP_PREFIX: &str = ".camqtt-tmp-";
/// Names tried for one picture (`name.jpg`, `name-1.jpg`, …) before giving up.
const MAX_TRIES: u32 = 10_000;
/// A local date holds instants up to this far either side of the same UTC date (jiff's
/// largest offset is under 26 hours).
const TZ_SLACK: Duration = Duration::from_secs(26 * 3600);
const DAY: Duration = Duration::from_secs(86_400);

/// What went wrong, with the path and what was being done.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// [`ArchiveConfig::dir`] is not set.
    #[error("archive.dir is not set")]
    NoDir,
    /// [`ArchiveConfig::naming`] is not a valid template.
    #[error("archive.naming: {0}")]
    Naming(String),
    /// The directory holds files but no [`MARKER`]: it is not the archive's, and retention
    /// would delete what is in it.
    #[error(
        "{} is not an archive: it holds other files and no {MARKER}; choose an empty directory or a new one below it",
        path.display()
    )]
    NotArchive {
        /// The configured directory.
        path: PathBuf,
    },
    /// A file system operation failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done (`write`, `create directory`, `rename`, …).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Every name tried for a picture was taken.
    #[error("cannot name {}: {MAX_TRIES} names taken", path.display())]
    Collision {
        /// The name the template gave.
        path: PathBuf,
    },
}

/// An `map_err` adaptor: [`ArchiveError::Io`] for `action` on `path`.
fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ArchiveError + 'a {
    move |source| ArchiveError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// What [`Archive::write`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    /// The line appended to the device's day log.
    pub record: EventRecord,
    /// What the prune after the write deleted.
    pub pruned: Pruned,
}

/// A filter for [`query`]. Times are inclusive; `limit` is the most records returned (0: none).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Query {
    /// Only this device id.
    pub device: Option<String>,
    /// Only this category name.
    pub category: Option<String>,
    /// Only events at or after this time.
    pub since: Option<SystemTime>,
    /// Only events at or before this time.
    pub until: Option<SystemTime>,
    /// The most records returned.
    pub limit: usize,
}

/// An open archive: its directory, naming, time zone, retention bounds and an index of the
/// files retention manages. One per directory (it assumes it is the only writer).
#[derive(Debug)]
pub struct Archive {
    root: PathBuf,
    config: ArchiveConfig,
    naming: Naming,
    tz: TimeZone,
    index: Index,
    tmp_seq: u64,
}

impl Archive {
    /// Open the archive in `cfg.dir`: create the directory, claim it with [`MARKER`] (an
    /// existing directory must be empty, hold only hidden entries and `lost+found`, or have the
    /// marker), remove temporary files left by a crash, index the pictures and logs by their
    /// modification time and size, then prune as of `now`. Logs one line with what it found.
    ///
    /// `tz` is the time zone of dates and times in paths. Errors: [`ArchiveError::NoDir`],
    /// [`ArchiveError::Naming`], [`ArchiveError::NotArchive`], [`ArchiveError::Io`] (the
    /// directory cannot be created or read; unreadable subfolders are logged and skipped).
    pub fn open(
        cfg: &ArchiveConfig,
        tz: TimeZone,
        now: SystemTime,
    ) -> Result<Archive, ArchiveError> {
        let root = cfg.dir.clone().ok_or(ArchiveError::NoDir)?;
        let naming = Naming::parse(&cfg.naming).map_err(ArchiveError::Naming)?;
        fs::create_dir_all(&root).map_err(io_err("create directory", &root))?;
        claim(&root)?;
        let mut archive = Archive {
            root,
            config: cfg.clone(),
            naming,
            tz,
            index: Index::default(),
            tmp_seq: 0,
        };
        let stale = archive.scan()?;
        let (files, bytes) = (archive.index.len(), archive.index.bytes());
        let pruned = archive.prune(now);
        info!(
            dir = %archive.root.display(),
            files,
            bytes,
            stale_temporaries = stale,
            pruned_files = pruned.files,
            pruned_bytes = pruned.bytes,
            "archive opened"
        );
        Ok(archive)
    }

    /// The archive's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Total size of the pictures and logs retention manages, bytes. `latest*.jpg` are not
    /// counted: they are hard links to archived pictures (no space of their own while the
    /// picture is kept) and there are at most a few per device.
    pub fn bytes(&self) -> u64 {
        self.index.bytes()
    }

    /// Archive one event of `device`: each picture under the name [`Naming`] gives (a taken
    /// name gets `-1`, `-2`, …), then `<device>/latest.jpg` and
    /// `<device>/latest_<category>.jpg` replaced by its first overview (else its first
    /// picture), then one line appended to `<device>/<YYYY-MM-DD>/events.jsonl` (events without
    /// pictures too), then a prune as of `now`. `now` is also the age retention gives the new
    /// files.
    ///
    /// Errors: [`ArchiveError::Io`] (nothing half-written is left visible; pictures written
    /// before the failure stay and are indexed), [`ArchiveError::Collision`].
    pub fn write(
        &mut self,
        device: &Device,
        event: &Event,
        now: SystemTime,
    ) -> Result<Written, ArchiveError> {
        let local = self.tz.to_datetime(record::timestamp(event.time));
        let device_dir = sanitize_component(&device.id);
        let category = event.category.as_str();
        let mut images = Vec::with_capacity(event.images.len());
        for image in &event.images {
            let rel = self.naming.render(&Values {
                device: &device.id,
                category,
                role: record::role_name(image.role),
                event: &event.raw_type,
                ext: naming::extension(&image.content_type),
                time: local,
            });
            let file = self.store_image(&rel, &image.data, now)?;
            images.push(ImageRecord {
                role: image.role,
                file,
                bytes: image.data.len() as u64,
            });
        }
        let newest = images
            .iter()
            .find(|i| i.role == ImageRole::Overview)
            .or(images.first());
        if let Some(image) = newest {
            let source = self.root.join(&image.file);
            self.replace_latest(&device_dir, "latest.jpg", &source)?;
            let per_category = format!("latest_{}.jpg", sanitize_component(category));
            self.replace_latest(&device_dir, &per_category, &source)?;
        }
        let record = EventRecord::new(
            device,
            event,
            self.config.priority_of(&event.category),
            images,
        );
        let day = format!(
            "{:04}-{:02}-{:02}",
            local.year(),
            local.month(),
            local.day()
        );
        self.append_log(&format!("{device_dir}/{day}/{LOG_NAME}"), &record, now)?;
        let pruned = self.prune(now);
        Ok(Written { record, pruned })
    }

    /// Delete, oldest first, the pictures and logs modified more than `max_age` before `now`,
    /// then more while the rest exceed `max_bytes`; never `latest*.jpg`. Folders left empty
    /// (days, devices) are removed. A file that cannot be deleted is logged and forgotten.
    /// Returns what was deleted.
    pub fn prune(&mut self, now: SystemTime) -> Pruned {
        let mut pruned = Pruned::default();
        for (rel, bytes) in self
            .index
            .expired(now, self.config.max_age, self.config.max_bytes)
        {
            self.index.remove(&rel);
            let path = self.root.join(&rel);
            match fs::remove_file(&path) {
                Ok(()) => {
                    pruned.files += 1;
                    pruned.bytes += bytes;
                    self.remove_empty_parents(&path);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(error) => {
                    warn!(path = %path.display(), %error, "archive file cannot be deleted; forgotten")
                }
            }
        }
        if pruned.files > 0 {
            debug!(
                files = pruned.files,
                bytes = pruned.bytes,
                left = self.index.bytes(),
                "archive pruned"
            );
        }
        pruned
    }

    /// Remove the folders above `path` that are now empty, up to (not including) the root.
    fn remove_empty_parents(&self, path: &Path) {
        let mut dir = path.parent();
        while let Some(d) = dir {
            if d == self.root || !d.starts_with(&self.root) || fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
        }
    }

    /// Index every picture and log below the root; remove temporary files. Returns how many
    /// temporaries were removed.
    fn scan(&mut self) -> Result<u64, ArchiveError> {
        let mut stale = 0;
        let mut stack = vec![(self.root.clone(), String::new())];
        while let Some((dir, prefix)) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if dir == self.root => return Err(io_err("read directory", &dir)(e)),
                Err(error) => {
                    warn!(dir = %dir.display(), %error, "archive folder unreadable; skipped");
                    continue;
                }
            };
            for entry in entries.flatten() {
                let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                    continue;
                };
                let path = entry.path();
                let Ok(kind) = entry.file_type() else {
                    continue;
                };
                let rel = format!("{prefix}{name}");
                if name.starts_with(TMP_PREFIX) && kind.is_file() {
                    match fs::remove_file(&path) {
                        Ok(()) => stale += 1,
                        Err(error) => {
                            warn!(path = %path.display(), %error, "archive temporary file cannot be deleted")
                        }
                    }
                } else if name.starts_with('.') {
                    // The marker and anything else hidden: not ours to manage.
                } else if kind.is_dir() {
                    stack.push((path, format!("{rel}/")));
                } else if kind.is_file() && !is_latest(&rel) {
                    match entry.metadata().and_then(|m| Ok((m.modified()?, m.len()))) {
                        Ok((modified, len)) => self.index.upsert(&rel, modified, len),
                        Err(error) => {
                            warn!(path = %path.display(), %error, "archive file unreadable; skipped")
                        }
                    }
                }
            }
        }
        Ok(stale)
    }

    /// A new hidden temporary file in `dir` holding `data`.
    fn write_tmp(&mut self, dir: &Path, data: &[u8]) -> Result<PathBuf, ArchiveError> {
        let tmp = self.tmp_path(dir);
        let written = File::create_new(&tmp).and_then(|mut f| f.write_all(data));
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(io_err("write", &tmp)(e));
        }
        Ok(tmp)
    }

    fn tmp_path(&mut self, dir: &Path) -> PathBuf {
        self.tmp_seq += 1;
        dir.join(format!(
            "{TMP_PREFIX}{}-{}",
            std::process::id(),
            self.tmp_seq
        ))
    }

    /// Write `data` as `rel`, or the first free `rel-<n>`; index it. Returns the name used.
    fn store_image(
        &mut self,
        rel: &str,
        data: &[u8],
        now: SystemTime,
    ) -> Result<String, ArchiveError> {
        debug_assert!(is_safe_relative(rel), "{rel}");
        let target = self.root.join(rel);
        let dir = target.parent().unwrap_or(&self.root).to_owned();
        fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        let tmp = self.write_tmp(&dir, data)?;
        let linked = self.link_unique(&tmp, rel);
        // After a link the temporary is a second name; after a rename it is gone already.
        let _ = fs::remove_file(&tmp);
        let file = linked?;
        self.index.upsert(&file, now, data.len() as u64);
        Ok(file)
    }

    /// Give the complete file `tmp` the first free name of `rel`, `rel-1`, … without ever
    /// replacing a file.
    fn link_unique(&self, tmp: &Path, rel: &str) -> Result<String, ArchiveError> {
        for n in 0..MAX_TRIES {
            let candidate = with_suffix(rel, n);
            let path = self.root.join(&candidate);
            match fs::hard_link(tmp, &path) {
                Ok(()) => return Ok(candidate),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) if no_hard_links(&e) => {
                    // FAT and some network shares have no hard links: rename onto a free name.
                    // This archive is the folder's only writer, so the name stays free.
                    if fs::symlink_metadata(&path).is_err() {
                        fs::rename(tmp, &path).map_err(io_err("rename", &path))?;
                        return Ok(candidate);
                    }
                }
                Err(e) => return Err(io_err("link", &path)(e)),
            }
        }
        Err(ArchiveError::Collision {
            path: self.root.join(rel),
        })
    }

    /// Atomically replace `<root>/<device_dir>/<name>` by the picture `source` (a hard link,
    /// or a copy where links are not supported).
    fn replace_latest(
        &mut self,
        device_dir: &str,
        name: &str,
        source: &Path,
    ) -> Result<(), ArchiveError> {
        let dir = self.root.join(device_dir);
        fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        let tmp = self.tmp_path(&dir);
        let staged = match fs::hard_link(source, &tmp) {
            Err(e) if no_hard_links(&e) => fs::copy(source, &tmp).map(drop),
            other => other,
        };
        let target = dir.join(name);
        let replaced = staged
            .map_err(io_err("link", &tmp))
            .and_then(|()| fs::rename(&tmp, &target).map_err(io_err("replace", &target)));
        if replaced.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        replaced
    }

    /// Append `record` as one line to the log `rel` (created if missing); index it.
    fn append_log(
        &mut self,
        rel: &str,
        record: &EventRecord,
        now: SystemTime,
    ) -> Result<(), ArchiveError> {
        let path = self.root.join(rel);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
        }
        let mut line = serde_json::to_vec(record)
            .map_err(|e| io_err("encode a line for", &path)(io::Error::other(e)))?;
        line.push(b'\n');
        let len = append_line(&path, line).map_err(io_err("append to", &path))?;
        self.index.upsert(rel, now, len);
        Ok(())
    }
}

/// Append `line` (ending in `\n`) to `path` with one `write_all` in append mode, after a `\n`
/// when the file does not end with one (a line cut short by a crash). Returns the new size.
fn append_line(path: &Path, mut line: Vec<u8>) -> io::Result<u64> {
    let mut f = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)?;
    let len = f.metadata()?.len();
    if len > 0 {
        let mut last = [0u8];
        f.seek(SeekFrom::End(-1))?;
        f.read_exact(&mut last)?;
        if last[0] != b'\n' {
            line.insert(0, b'\n');
        }
    }
    f.write_all(&line)?;
    Ok(len + line.len() as u64)
}

/// Errors of `hard_link` on file systems without hard links (EPERM on FAT, EOPNOTSUPP).
fn no_hard_links(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::Unsupported | io::ErrorKind::PermissionDenied
    )
}

/// `latest.jpg` / `latest_*.jpg` directly in a device folder (`<device>/latest.jpg`).
fn is_latest(rel: &str) -> bool {
    let mut parts = rel.split('/');
    matches!((parts.next(), parts.next(), parts.next()), (Some(_), Some(name), None) if naming::is_latest_name(name))
}

/// Make `root` ours: it has the marker, or gets it when nothing but hidden entries and
/// `lost+found` is in it.
fn claim(root: &Path) -> Result<(), ArchiveError> {
    let marker = root.join(MARKER);
    if marker.exists() {
        return Ok(());
    }
    let entries = fs::read_dir(root).map_err(io_err("read directory", root))?;
    let foreign = entries.flatten().any(|e| {
        let name = e.file_name();
        let name = name.to_string_lossy();
        !name.starts_with('.') && name != "lost+found"
    });
    if foreign {
        return Err(ArchiveError::NotArchive {
            path: root.to_owned(),
        });
    }
    fs::write(
        &marker,
        "camqtt archive: pictures and event logs; files here are deleted by age and size.\n",
    )
    .map_err(io_err("write", &marker))
}

/// The records matching `q` in the archive at `root`, newest first, at most `q.limit`.
///
/// Reads only the day logs whose date can hold a match (per device when `q.device` is set;
/// a day is widened by 26 hours each side, as the archive's time zone is not known here) and
/// stops once older days cannot hold anything newer than what it has. Lines that do not parse
/// are skipped (logged at debug level). Safe to call while an [`Archive`] writes.
///
/// Errors: [`ArchiveError::Io`] when the root, a device folder or a log cannot be read (a
/// missing device folder or log is not an error).
pub fn query(root: &Path, q: &Query) -> Result<Vec<EventRecord>, ArchiveError> {
    if q.limit == 0 {
        return Ok(Vec::new());
    }
    let devices: Vec<String> = match &q.device {
        Some(id) => vec![sanitize_component(id)],
        None => fs::read_dir(root)
            .map_err(io_err("read directory", root))?
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .filter(|n| !n.starts_with('.'))
            .collect(),
    };
    let first = q
        .since
        .map(|t| utc_day(t.checked_sub(2 * DAY).unwrap_or(t)));
    let last = q
        .until
        .map(|t| utc_day(t.checked_add(2 * DAY).unwrap_or(t)));
    let mut logs = Vec::new();
    for device in devices {
        let dir = root.join(&device);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err("read directory", &dir)(e)),
        };
        for entry in entries.flatten() {
            let Some(day) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let in_range = is_day_name(&day)
                && first.as_ref().is_none_or(|f| day >= *f)
                && last.as_ref().is_none_or(|l| day <= *l);
            if in_range {
                logs.push((day, entry.path().join(LOG_NAME)));
            }
        }
    }
    logs.sort_by(|a, b| b.cmp(a));

    let mut out: Vec<EventRecord> = Vec::new();
    for (day, path) in logs {
        if out.len() >= q.limit
            && let Some(end) = day_end(&day)
            && end < out[q.limit - 1].time
        {
            break;
        }
        let text = match fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err("read", &path)(e)),
        };
        // Newest line first: events with the same time (a camera clock's resolution) keep
        // the order they were written in, newest first, through the stable sort below.
        let lines: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
        for (n, line) in lines.into_iter().enumerate().rev() {
            if line.is_empty() {
                continue;
            }
            match serde_json::from_slice::<EventRecord>(line) {
                Ok(r) if matches(&r, q) => out.push(r),
                Ok(_) => {}
                Err(error) => {
                    debug!(path = %path.display(), line = n + 1, %error, "archive log line unreadable; skipped")
                }
            }
        }
        out.sort_by_key(|r| std::cmp::Reverse((r.time, r.received)));
        out.truncate(q.limit);
    }
    Ok(out)
}

fn matches(r: &EventRecord, q: &Query) -> bool {
    q.device.as_ref().is_none_or(|d| r.device == *d)
        && q.category.as_ref().is_none_or(|c| r.category == *c)
        && q.since.is_none_or(|t| r.time >= t)
        && q.until.is_none_or(|t| r.time <= t)
}

/// `YYYY-MM-DD` of `t` in UTC.
fn utc_day(t: SystemTime) -> String {
    let d = TimeZone::UTC.to_datetime(record::timestamp(t));
    format!("{:04}-{:02}-{:02}", d.year(), d.month(), d.day())
}

/// `NNNN-NN-NN`.
fn is_day_name(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() == 10
        && b.iter().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        })
}

/// The latest instant a log of local date `day` can hold: its UTC end plus [`TZ_SLACK`].
fn day_end(day: &str) -> Option<SystemTime> {
    let date: jiff::civil::Date = day.parse().ok()?;
    let start = TimeZone::UTC
        .to_timestamp(date.to_datetime(jiff::civil::Time::midnight()))
        .ok()?;
    SystemTime::try_from(start)
        .ok()?
        .checked_add(DAY + TZ_SLACK)
}

/// The archive file `rel` names, for serving it: `Some` only when `rel` is a plain relative
/// path (`/`-separated; no leading `/`, `\`, empty, hidden, `.` or `..` components) of a
/// regular file that is, after resolving symbolic links, inside `root` and not hidden there.
/// Returns the canonical path.
pub fn resolve(root: &Path, rel: &str) -> Option<PathBuf> {
    if !is_safe_relative(rel) {
        return None;
    }
    let root = root.canonicalize().ok()?;
    let path = root.join(rel).canonicalize().ok()?;
    let inside = path.strip_prefix(&root).ok()?;
    let safe = inside.components().all(
        |c| matches!(c, std::path::Component::Normal(n) if !n.to_string_lossy().starts_with('.')),
    );
    (safe && path.is_file()).then_some(path)
}

/// The `latest.jpg` of device id `device`, or its `latest_<category>.jpg`, if there is one
/// (checked like [`resolve`]).
pub fn latest(root: &Path, device: &str, category: Option<&str>) -> Option<PathBuf> {
    let name = match category {
        Some(c) => format!("latest_{}.jpg", sanitize_component(c)),
        None => "latest.jpg".to_owned(),
    };
    resolve(root, &format!("{}/{name}", sanitize_component(device)))
}
