//! [`RemoteError`]: why a remote tier could not be opened (or an operation on it failed).

use std::error::Error as StdError;
use std::fmt;

type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Why a remote tier could not be opened, naming its URL and what to do about it.
pub struct RemoteError {
    url: String,
    kind: RemoteErrorKind,
    source: Option<BoxError>,
}

/// The reason in a [`RemoteError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RemoteErrorKind {
    /// The URL does not parse, or names no bucket or folder.
    InvalidUrl,
    /// The URL's scheme is not one ckpt shares through (`s3://`, `file://`, `memory://`).
    UnsupportedScheme,
    /// The options or environment cannot work (a setting the client refuses).
    Config,
    /// No usable credentials: none found, or the server refused them.
    Credentials,
    /// The bucket (or the shared folder) does not exist.
    BucketNotFound,
    /// The server could not be reached, failed (5xx), or did not answer in time.
    Unreachable,
    /// The internal runtime that drives the object store could not be started.
    Runtime,
    /// Any other failure of the object store.
    Other,
}

impl RemoteError {
    pub(crate) fn new(url: &str, kind: RemoteErrorKind, source: Option<BoxError>) -> RemoteError {
        RemoteError {
            url: url.to_string(),
            kind,
            source,
        }
    }

    /// The remote's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Why it failed.
    pub fn kind(&self) -> RemoteErrorKind {
        self.kind
    }
}

/// With the message (and its advice) first: what `main` prints when it returns the error.
impl fmt::Debug for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteError")
            .field("message", &self.to_string())
            .field("kind", &self.kind)
            .field("url", &self.url)
            .field("source", &self.source)
            .finish()
    }
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = &self.url;
        // A shared folder has no credentials, bucket or endpoint: its advice is about folders.
        let folder = url
            .trim_start()
            .get(..5)
            .is_some_and(|s| s.eq_ignore_ascii_case("file:"));
        match self.kind {
            RemoteErrorKind::Credentials if folder => write!(
                f,
                "remote {url}: this user may not create, read or write the shared folder; check \
                 its permissions, or give another folder"
            ),
            RemoteErrorKind::BucketNotFound if folder => write!(
                f,
                "remote {url}: the shared folder, or a file in it, is missing or cannot be made \
                 there (a file of that name, or a file system that refuses it); check the folder"
            ),
            RemoteErrorKind::InvalidUrl => write!(
                f,
                "remote {url} is not a valid location; give s3://bucket/prefix, \
                 file:///absolute/folder or memory://"
            ),
            RemoteErrorKind::UnsupportedScheme => write!(
                f,
                "remote {url} has a scheme ckpt cannot share through; use s3://, file:// or \
                 memory://"
            ),
            RemoteErrorKind::Config => write!(
                f,
                "remote {url} cannot be configured from these options and the AWS_* environment"
            ),
            RemoteErrorKind::Credentials => write!(
                f,
                "remote {url} has no usable credentials; set AWS_ACCESS_KEY_ID and \
                 AWS_SECRET_ACCESS_KEY (or a role), and check they may read and write the bucket"
            ),
            RemoteErrorKind::BucketNotFound => write!(
                f,
                "remote {url}: the bucket or folder does not exist; create it, or check the name \
                 and AWS_ENDPOINT_URL"
            ),
            RemoteErrorKind::Unreachable => write!(
                f,
                "remote {url} is unreachable or failing; check the endpoint (AWS_ENDPOINT_URL), \
                 the network, and AWS_ALLOW_HTTP for a plain-http server"
            ),
            RemoteErrorKind::Runtime => {
                write!(f, "remote {url}: cannot start ckpt's internal i/o runtime")
            }
            RemoteErrorKind::Other => write!(f, "remote {url} failed"),
        }?;
        if let Some(source) = &self.source {
            write!(f, " ({source})")?;
        }
        Ok(())
    }
}

impl StdError for RemoteError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_ref()
            .map(|s| s.as_ref() as &(dyn StdError + 'static))
    }
}

/// What kind of failure an object store error is (for messages that stay the same from one
/// call to the next, so that a down remote is warned about once, and for the open's error).
pub(crate) fn classify(e: &object_store::Error) -> RemoteErrorKind {
    use object_store::Error as E;
    match e {
        E::NotFound { .. } => RemoteErrorKind::BucketNotFound,
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => RemoteErrorKind::Credentials,
        E::InvalidPath { .. } => RemoteErrorKind::InvalidUrl,
        E::UnknownConfigurationKey { .. } | E::NotSupported { .. } => RemoteErrorKind::Config,
        other => {
            let text = other.to_string().to_ascii_lowercase();
            if text.contains("credential") || text.contains("accessdenied") {
                RemoteErrorKind::Credentials
            } else if text.contains("nosuchbucket") {
                RemoteErrorKind::BucketNotFound
            } else {
                RemoteErrorKind::Unreachable
            }
        }
    }
}

/// A short, stable description of an object store failure: the same for every object, so that
/// the warning hook sees one message per kind of outage.
pub(crate) fn stable_reason(e: &object_store::Error) -> String {
    // The innermost cause ("Connection refused (os error 111)", "operation timed out") names
    // what failed without naming the object.
    let mut inner: &dyn StdError = e;
    while let Some(next) = inner.source() {
        inner = next;
    }
    let kind = match classify(e) {
        RemoteErrorKind::Credentials => "access refused",
        RemoteErrorKind::BucketNotFound => "bucket not found",
        RemoteErrorKind::Unreachable => "unreachable or failing",
        RemoteErrorKind::Config => "not supported by this store",
        _ => "failed",
    };
    let detail = inner.to_string();
    // A server's error body can carry request ids; keep the first line, bounded.
    let detail: String = detail
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(120)
        .collect();
    if matches!(e, object_store::Error::Generic { .. }) && !std::ptr::eq(inner, e as &dyn StdError)
    {
        format!("{kind}: {detail}")
    } else {
        kind.to_string()
    }
}
