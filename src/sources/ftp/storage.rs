//! libunftp's storage back-end and authenticator for camera uploads.
//!
//! [`UploadStorage`] keeps nothing on disk: `STOR`/`APPE` read the data connection into
//! memory (at most `max_file_size` bytes, within `transfer_timeout`), turn the file into a
//! message ([`super::upload`]), hand it to the pipeline and return only once it is durable,
//! so libunftp's `226 Transfer complete` promises delivery. When the pipeline cannot take it
//! (the bridge is stopping) the transfer fails with `451` and the camera sends it again.
//! Directories are virtual: `MKD`, `CWD`, `RMD`, `DELE` and `RNFR`/`RNTO` succeed without
//! effect (cameras create their date trees level by level, field case 11), listings are empty
//! and nothing can be downloaded (`550`).
//!
//! [`Logins`] accepts any login when no users are configured (the login names the device),
//! otherwise only the configured user names with their passwords (compared in constant time).

use std::collections::HashMap;
use std::fmt::{self, Debug, Display};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use secrecy::{ExposeSecret as _, SecretString};
use subtle::ConstantTimeEq as _;
use tokio::io::{AsyncRead, AsyncReadExt as _};
use tokio::sync::oneshot;
use tracing::Instrument as _;
use unftp_core::auth::{
    AuthenticationError, Authenticator, Credentials, Principal, UserDetail, UserDetailError,
    UserDetailProvider,
};
use unftp_core::storage::{Error, ErrorKind, Fileinfo, Metadata, Result, StorageBackend};

use super::SOURCE;
use super::upload::{Classifier, Kind, Upload};
use crate::event::{Message, Unparsed};
use crate::sources::{Input, SourceContext};

/// A logged-in FTP user: the login name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FtpUser(pub String);

impl Display for FtpUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl UserDetail for FtpUser {}

/// Turns libunftp's authenticated principal into an [`FtpUser`].
#[derive(Debug)]
pub struct Users;

#[async_trait]
impl UserDetailProvider for Users {
    type User = FtpUser;

    async fn provide_user_detail(
        &self,
        principal: &Principal,
    ) -> std::result::Result<FtpUser, UserDetailError> {
        Ok(FtpUser(principal.username.clone()))
    }
}

/// The login check.
pub struct Logins {
    users: HashMap<String, SecretString>,
}

impl Debug for Logins {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Logins")
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Logins {
    /// Only these logins (user name, password); none: any login is accepted.
    pub fn new(users: Vec<(String, SecretString)>) -> Logins {
        Logins {
            users: users.into_iter().collect(),
        }
    }

    /// `true` when any login is accepted (no users configured).
    pub fn is_open(&self) -> bool {
        self.users.is_empty()
    }

    /// Whether `user` / `password` may log in (RFC 959 `USER` / `PASS`).
    pub fn check(
        &self,
        user: &str,
        password: Option<&str>,
    ) -> std::result::Result<(), AuthenticationError> {
        if self.users.is_empty() {
            return Ok(());
        }
        match (self.users.get(user), password) {
            (Some(expected), Some(given))
                if bool::from(expected.expose_secret().as_bytes().ct_eq(given.as_bytes())) =>
            {
                Ok(())
            }
            (Some(_), _) => Err(AuthenticationError::BadPassword),
            (None, _) => Err(AuthenticationError::BadUser),
        }
    }
}

#[async_trait]
impl Authenticator for Logins {
    async fn authenticate(
        &self,
        username: &str,
        creds: &Credentials,
    ) -> std::result::Result<Principal, AuthenticationError> {
        self.check(username, creds.password.as_deref())?;
        Ok(Principal {
            username: username.to_owned(),
        })
    }

    fn name(&self) -> &str {
        "camqtt"
    }
}

/// What every connection's storage shares.
#[derive(Debug)]
pub struct Shared {
    /// Upload → message.
    pub classifier: Classifier,
    /// Largest file, bytes.
    pub max_file_size: usize,
    /// Longest transfer.
    pub transfer_timeout: Duration,
    /// The pipeline and the metrics.
    pub ctx: SourceContext,
}

/// One control connection's storage: knows the camera's real address.
#[derive(Debug, Clone)]
pub struct UploadStorage {
    /// The camera.
    pub peer: IpAddr,
    /// The shared part.
    pub shared: Arc<Shared>,
}

/// Metadata of the virtual tree: every path is an empty directory.
#[derive(Debug, Clone, Copy)]
pub struct Dir;

impl Metadata for Dir {
    fn len(&self) -> u64 {
        0
    }
    fn is_dir(&self) -> bool {
        true
    }
    fn is_file(&self) -> bool {
        false
    }
    fn is_symlink(&self) -> bool {
        false
    }
    fn modified(&self) -> Result<SystemTime> {
        Ok(SystemTime::UNIX_EPOCH)
    }
    fn gid(&self) -> u32 {
        0
    }
    fn uid(&self) -> u32 {
        0
    }
}

impl UploadStorage {
    /// Read, classify, store; the number of bytes received. Errors (the FTP reply): `426`
    /// cut off (reset, timeout, or a JPEG without its end), `552` too large, `451` not stored.
    async fn receive<R: AsyncRead + Unpin>(
        &self,
        user: &str,
        mut input: R,
        path: &Path,
    ) -> Result<u64> {
        let sh = &self.shared;
        let telemetry = &sh.ctx.telemetry;
        let path = path.to_string_lossy().into_owned();
        let started = Instant::now();
        let mut buf = Vec::new();
        let cap = sh.max_file_size as u64 + 1;
        let read = tokio::time::timeout(sh.transfer_timeout, async {
            let n = (&mut input).take(cap).read_to_end(&mut buf).await?;
            if n as u64 == cap {
                // Too large: read the rest and drop it (memory stays bounded; the transfer
                // timeout bounds the time), so that the client is not reset mid-send and reads
                // the 552 that tells it why.
                tokio::io::copy(&mut input, &mut tokio::io::sink()).await?;
            }
            Ok::<_, std::io::Error>(n)
        })
        .await;
        let failed = match read {
            Ok(Ok(_)) if buf.len() > sh.max_file_size => Some((
                "file-too-large",
                format!("larger than ftp.max_file_size ({} bytes)", sh.max_file_size),
                ErrorKind::ExceededStorageAllocationError,
            )),
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some((
                "upload-cut-off",
                format!("data connection failed after {} bytes: {e}", buf.len()),
                ErrorKind::ConnectionClosed,
            )),
            Err(_) => Some((
                "upload-cut-off",
                format!(
                    "transfer not finished within ftp.transfer_timeout ({} s) after {} bytes",
                    sh.transfer_timeout.as_secs(),
                    buf.len()
                ),
                ErrorKind::ConnectionClosed,
            )),
        };
        if let Some((reason, detail, kind)) = failed {
            if reason == "upload-cut-off" {
                telemetry.ftp_cut_off.inc();
            }
            telemetry.unparsed.inc();
            tracing::warn!(peer = %self.peer, user, path = %path, reason, detail = %detail, "FTP upload not taken");
            let msg = Message::Unparsed(Unparsed {
                peer: self.peer.to_string(),
                source: SOURCE.into(),
                reason: reason.into(),
                detail,
                path: Some(path.chars().filter(|c| !c.is_control()).take(512).collect()),
                body: String::new(),
                body_len: buf.len(),
            });
            // Reported, not waited for: the transfer fails whatever happens to the report.
            let _ = sh.ctx.tx.try_send(Input::new(SOURCE, msg));
            return Err(Error::from(kind));
        }
        let len = buf.len() as u64;
        let upload = Upload {
            user,
            peer: self.peer,
            path: &path,
            data: Bytes::from(buf),
            received: SystemTime::now(),
        };
        let (msg, kind) = sh.classifier.message(&upload);
        match (&msg, kind) {
            (Message::Event(e), _) => {
                telemetry.events.inc();
                telemetry.images.inc();
                tracing::info!(peer = %self.peer, user, path = %path, bytes = len, category = %e.category, ms = started.elapsed().as_millis() as u64, "FTP upload: event");
            }
            (Message::Unparsed(u), kind) => {
                if kind == Kind::CutOff {
                    telemetry.ftp_cut_off.inc();
                }
                telemetry.unparsed.inc();
                tracing::warn!(peer = %self.peer, user, path = %path, bytes = len, reason = %u.reason, detail = %u.detail, "FTP upload did not become an event");
            }
            _ => {
                telemetry.heartbeats.inc();
                tracing::debug!(peer = %self.peer, user, path = %path, bytes = len, "FTP upload: heartbeat file");
            }
        }
        if !self.durable(msg).await {
            telemetry.dropped.inc();
            tracing::warn!(peer = %self.peer, user, path = %path, "pipeline stopped; upload not stored, camera told to send again (451)");
            return Err(Error::from(ErrorKind::LocalError));
        }
        if kind == Kind::CutOff {
            // Reported; the camera is told the transfer failed, so it may send it again.
            return Err(Error::from(ErrorKind::ConnectionClosed));
        }
        Ok(len)
    }

    /// Send `msg` and wait until the pipeline stored it. `false`: the pipeline is gone.
    async fn durable(&self, msg: Message) -> bool {
        let (done, stored) = oneshot::channel();
        let input = Input {
            source: SOURCE,
            msg,
            durable: Some(done),
        };
        if self.shared.ctx.tx.send(input).await.is_err() {
            return false;
        }
        stored.await.is_ok()
    }
}

#[async_trait]
impl StorageBackend<FtpUser> for UploadStorage {
    type Metadata = Dir;

    fn name(&self) -> &str {
        "camqtt-upload"
    }

    async fn metadata<P: AsRef<Path> + Send + Debug>(&self, _: &FtpUser, _: P) -> Result<Dir> {
        // `SIZE`, `MDTM`, and `APPE`'s offset: no file is kept, so none exists.
        Err(Error::from(ErrorKind::PermanentFileNotAvailable))
    }

    async fn list<P: AsRef<Path> + Send + Debug>(
        &self,
        _: &FtpUser,
        _: P,
    ) -> Result<Vec<Fileinfo<PathBuf, Dir>>> {
        Ok(Vec::new())
    }

    async fn get<P: AsRef<Path> + Send + Debug>(
        &self,
        _: &FtpUser,
        _: P,
        _: u64,
    ) -> Result<Box<dyn AsyncRead + Send + Sync + Unpin>> {
        Err(Error::from(ErrorKind::PermanentFileNotAvailable))
    }

    async fn put<P: AsRef<Path> + Send + Debug, R: AsyncRead + Send + Sync + Unpin + 'static>(
        &self,
        user: &FtpUser,
        input: R,
        path: P,
        start_pos: u64,
    ) -> Result<u64> {
        if start_pos != 0 {
            // `REST` before `STOR`: a resumed upload cannot be joined to a file not kept.
            return Err(Error::from(ErrorKind::CommandNotImplemented));
        }
        // A root span: libunftp calls this inside its own `instrument` spans, whose fields
        // are whole session dumps; our lines must not carry them.
        let span = tracing::info_span!(parent: None, "ftp_upload");
        self.receive(&user.0, input, path.as_ref())
            .instrument(span)
            .await
    }

    async fn del<P: AsRef<Path> + Send + Debug>(&self, _: &FtpUser, _: P) -> Result<()> {
        Ok(())
    }

    async fn mkd<P: AsRef<Path> + Send + Debug>(&self, _: &FtpUser, _: P) -> Result<()> {
        Ok(())
    }

    async fn rename<P: AsRef<Path> + Send + Debug>(&self, _: &FtpUser, _: P, _: P) -> Result<()> {
        Ok(())
    }

    async fn rmd<P: AsRef<Path> + Send + Debug>(&self, _: &FtpUser, _: P) -> Result<()> {
        Ok(())
    }

    async fn cwd<P: AsRef<Path> + Send + Debug>(&self, _: &FtpUser, _: P) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::mpsc;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::event::Category;
    use crate::sources::ftp::config::DeviceFrom;
    use crate::sources::jpeg::tests::sample;
    use crate::telemetry::Telemetry;

    fn storage(max: usize) -> (UploadStorage, mpsc::Receiver<Input>) {
        let (tx, rx) = mpsc::channel(4);
        let shared = Shared {
            classifier: Classifier {
                rules: crate::sources::ftp::rules::default_rules(),
                default_category: Category::Motion,
                device_from: DeviceFrom::Login,
                unparsed_body_cap: 64,
            },
            max_file_size: max,
            transfer_timeout: Duration::from_secs(5),
            ctx: SourceContext {
                tx,
                telemetry: Telemetry::new(),
                shutdown: CancellationToken::new(),
                commands: tokio::sync::broadcast::channel(1).0,
            },
        };
        let s = UploadStorage {
            peer: "192.0.2.130".parse().unwrap(),
            shared: Arc::new(shared),
        };
        (s, rx)
    }

    #[tokio::test]
    async fn transfer_completes_only_once_the_event_is_durable() {
        let (s, mut rx) = storage(1 << 20);
        let j = sample(3000);
        let user = FtpUser("porchcam".into());
        let put = s.put(&user, std::io::Cursor::new(j.clone()), "/a/07[M].jpg", 0);
        tokio::pin!(put);
        let input = tokio::select! {
            r = &mut put => panic!("answered before the pipeline stored the event: {r:?}"),
            i = rx.recv() => i.unwrap(),
        };
        let Message::Event(e) = &input.msg else {
            panic!("{:?}", input.msg)
        };
        assert_eq!(e.images[0].data.as_ref(), j.as_slice());
        // Still waiting: nothing said it is durable yet.
        assert!(
            tokio::time::timeout(Duration::from_millis(100), &mut put)
                .await
                .is_err()
        );
        input.durable.unwrap().send(()).unwrap();
        assert_eq!(put.await.unwrap(), j.len() as u64);
        assert_eq!(s.shared.ctx.telemetry.events.get(), 1);
    }

    #[tokio::test]
    async fn pipeline_gone_fails_the_transfer_with_451() {
        let (s, rx) = storage(1 << 20);
        drop(rx);
        let user = FtpUser("c".into());
        let err = s
            .put(&user, std::io::Cursor::new(sample(10)), "/x.jpg", 0)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::LocalError);
    }

    #[tokio::test]
    async fn too_large_is_552_and_reported() {
        let (s, mut rx) = storage(1024);
        let user = FtpUser("c".into());
        let err = s
            .put(&user, std::io::Cursor::new(sample(5000)), "/x.jpg", 0)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ExceededStorageAllocationError);
        let Message::Unparsed(u) = rx.recv().await.unwrap().msg else {
            panic!()
        };
        assert_eq!(u.reason, "file-too-large");
        assert_eq!(u.body_len, 1025);
    }

    #[tokio::test]
    async fn cut_off_jpeg_is_reported_and_fails_with_426() {
        let (s, mut rx) = storage(1 << 20);
        let user = FtpUser("c".into());
        let j = sample(5000);
        let put = s.put(&user, std::io::Cursor::new(j[..2048].to_vec()), "/x.jpg", 0);
        tokio::pin!(put);
        let input = tokio::select! {
            r = &mut put => panic!("{r:?}"),
            i = rx.recv() => i.unwrap(),
        };
        let Message::Unparsed(u) = &input.msg else {
            panic!()
        };
        assert_eq!(u.reason, "upload-cut-off");
        input.durable.unwrap().send(()).unwrap();
        assert_eq!(put.await.unwrap_err().kind(), ErrorKind::ConnectionClosed);
        assert_eq!(s.shared.ctx.telemetry.ftp_cut_off.get(), 1);
    }

    #[tokio::test]
    async fn resumed_uploads_are_refused() {
        let (s, _rx) = storage(1 << 20);
        let err = s
            .put(
                &FtpUser("c".into()),
                std::io::Cursor::new(Vec::new()),
                "/x",
                10,
            )
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::CommandNotImplemented);
    }

    #[test]
    fn open_logins_accept_anyone() {
        let l = Logins::new(Vec::new());
        assert!(l.check("porchcam", None).is_ok());
        assert!(l.check("x", Some("y")).is_ok());
    }

    #[test]
    fn configured_logins_need_their_password() {
        let l = Logins::new(vec![("porchcam".into(), SecretString::from("field-only"))]);
        assert!(l.check("porchcam", Some("field-only")).is_ok());
        assert!(matches!(
            l.check("porchcam", Some("wrong")),
            Err(AuthenticationError::BadPassword)
        ));
        assert!(matches!(
            l.check("porchcam", None),
            Err(AuthenticationError::BadPassword)
        ));
        assert!(matches!(
            l.check("other", Some("field-only")),
            Err(AuthenticationError::BadUser)
        ));
        assert!(!format!("{l:?}").contains("field-only"));
    }
}
