//! Where a recording lives: a local directory, or a prefix in object storage.
//!
//! `-d/--data` takes either. A value with a URL scheme (`s3://bucket/prefix`, `gs://`, `az://`,
//! `abfs://`, `file:///path`) names a location reached through the `object_store` crate, the one
//! DataFusion itself reads through; anything else is a local path. Credentials, regions and
//! endpoints come from the environment as each cloud's own tools read them (`AWS_ACCESS_KEY_ID`,
//! `AWS_REGION`, `AWS_ENDPOINT` and `AWS_ALLOW_HTTP` for an S3-compatible server, `GOOGLE_*`,
//! `AZURE_*`), so nothing secret is ever typed on a command line.
//!
//! The layout under a remote prefix is the local one (`operations/session_id=.../date=.../*.parquet`),
//! so the same files can be copied either way and read by any engine that reads hive partitions.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::path::Path as StorePath;
use url::Url;

/// Why a `-d/--data` value cannot name a recording.
#[derive(Debug, thiserror::Error)]
pub enum LocationError {
    /// The value looks like a URL but is not one.
    #[error("{value:?} is not a valid URL: {reason}")]
    BadUrl {
        /// What was given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The scheme names no store KubeStep can reach.
    #[error(
        "{value:?}: unsupported scheme {scheme:?} (use a local path, file://, s3://, gs://, az://, abfs:// or abfss://)"
    )]
    UnsupportedScheme {
        /// What was given.
        value: String,
        /// Its scheme.
        scheme: String,
    },
    /// The store could not be configured (a missing bucket name or region, a bad setting).
    #[error("{value}: cannot reach the object store: {reason}")]
    Store {
        /// What was given.
        value: String,
        /// What the store's builder said.
        reason: String,
    },
}

/// A recording's location, resolved.
#[derive(Debug, Clone)]
pub enum RecordingLocation {
    /// A directory on this machine.
    Local(PathBuf),
    /// A prefix in an object store.
    Remote(RemoteRecording),
}

/// A recording in object storage.
#[derive(Debug, Clone)]
pub struct RemoteRecording {
    /// The URL as given, without a trailing slash: what messages show.
    pub url: String,
    /// `scheme://bucket`: what the store is registered under in a query engine (DataFusion looks
    /// stores up by scheme and authority only).
    pub store_url: Url,
    /// The store, rooted at the bucket.
    pub store: Arc<dyn ObjectStore>,
    /// The recording's prefix inside the bucket (empty for a whole bucket).
    pub prefix: StorePath,
}

impl RemoteRecording {
    /// The URL of a directory of the recording (`operations`, say), with a trailing slash: what a
    /// listing table is given.
    pub fn url_of(&self, relative: &str) -> String {
        let mut url = self.store_url.as_str().trim_end_matches('/').to_owned();
        for part in self.prefix.parts().map(|p| p.as_ref().to_owned()).chain(relative.split('/').map(str::to_owned)) {
            if !part.is_empty() {
                url.push('/');
                url.push_str(&part);
            }
        }
        url.push('/');
        url
    }

    /// The store path of something inside the recording (`operations/session_id=a`).
    pub fn path_of(&self, relative: &str) -> StorePath {
        relative.split('/').filter(|p| !p.is_empty()).fold(self.prefix.clone(), |path, part| path.join(part))
    }
}

impl RecordingLocation {
    /// Resolves a `-d/--data` value. Building a remote store does not touch the network: a wrong
    /// bucket or missing credentials show up at the first read, with the store's own message.
    pub fn parse(value: &Path) -> Result<RecordingLocation, LocationError> {
        let Some(text) = value.to_str().filter(|t| looks_like_url(t)) else {
            return Ok(RecordingLocation::Local(value.to_owned()));
        };
        let bad = |reason: String| LocationError::BadUrl { value: text.to_owned(), reason };
        let url = Url::parse(text).map_err(|e| bad(e.to_string()))?;
        let scheme = url.scheme().to_owned();
        if scheme == "file" {
            let path = url.to_file_path().map_err(|()| bad("not a local path".to_owned()))?;
            return Ok(RecordingLocation::Local(path));
        }
        let bucket = url.host_str().filter(|h| !h.is_empty()).ok_or_else(|| bad("no bucket name".to_owned()))?;
        let store_url = Url::parse(&format!("{scheme}://{bucket}")).map_err(|e| bad(e.to_string()))?;
        let store_error =
            |e: object_store::Error| LocationError::Store { value: text.to_owned(), reason: e.to_string() };
        let store: Arc<dyn ObjectStore> = match scheme.as_str() {
            "s3" | "s3a" => {
                Arc::new(AmazonS3Builder::from_env().with_url(store_url.as_str()).build().map_err(store_error)?)
            }
            "gs" => Arc::new(
                GoogleCloudStorageBuilder::from_env().with_url(store_url.as_str()).build().map_err(store_error)?,
            ),
            "az" | "abfs" | "abfss" | "azure" => {
                Arc::new(MicrosoftAzureBuilder::from_env().with_url(url.as_str()).build().map_err(store_error)?)
            }
            _ => return Err(LocationError::UnsupportedScheme { value: text.to_owned(), scheme }),
        };
        let prefix = StorePath::parse(url.path().trim_matches('/')).map_err(|e| bad(e.to_string()))?;
        Ok(RecordingLocation::Remote(RemoteRecording {
            url: text.trim_end_matches('/').to_owned(),
            store_url,
            store,
            prefix,
        }))
    }
}

/// An object-store error as one line: S3 and Azure answer failures with an XML body, of which only
/// the error code and message are kept (`404 Not Found: NoSuchBucket: The specified bucket does not
/// exist` instead of the whole document).
///
/// With no credentials in the environment, the S3 client asks the instance metadata service
/// (169.254.169.254) for some; off a cloud instance that fails with an error about that address,
/// which is said in terms of what to set instead.
pub fn store_error_line(error: &object_store::Error) -> String {
    let text = error.to_string();
    if text.contains(INSTANCE_METADATA_ADDRESS) {
        return format!(
            "no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_REGION, AWS_ENDPOINT for an \
             S3-compatible store), or run where the instance metadata service gives some ({})",
            text.split_whitespace().collect::<Vec<_>>().join(" ")
        );
    }
    let Some(xml_start) = text.find("<?xml").or_else(|| text.find("<Error>")) else {
        return text.split_whitespace().collect::<Vec<_>>().join(" ");
    };
    let element = |name: &str| {
        let (open, close) = (format!("<{name}>"), format!("</{name}>"));
        let start = text[xml_start..].find(&open)? + xml_start + open.len();
        let end = text[start..].find(&close)? + start;
        Some(text[start..end].to_owned())
    };
    let head = text[..xml_start].trim_end().trim_end_matches(':');
    let detail: Vec<String> = [element("Code"), element("Message")].into_iter().flatten().collect();
    let line = if detail.is_empty() { head.to_owned() } else { format!("{head}: {}", detail.join(": ")) };
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The instance metadata service, where cloud SDKs look for credentials the environment lacks.
const INSTANCE_METADATA_ADDRESS: &str = "169.254.169.254";

/// True for `scheme://...` with a scheme of two letters or more (a one-letter "scheme" is a Windows
/// drive, `C:\...`).
fn looks_like_url(text: &str) -> bool {
    text.split_once("://").is_some_and(|(scheme, _)| {
        scheme.len() >= 2 && scheme.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_paths_and_file_urls_are_directories() {
        for (value, expected) in [
            ("./kubestep-data", "./kubestep-data"),
            ("/var/lib/kubestep", "/var/lib/kubestep"),
            ("file:///var/lib/kubestep", "/var/lib/kubestep"),
            ("odd://name", ""),
        ] {
            match RecordingLocation::parse(Path::new(value)) {
                Ok(RecordingLocation::Local(path)) => assert_eq!(path, Path::new(expected), "{value}"),
                Ok(other) => panic!("{value}: {other:?}"),
                Err(e) => assert!(expected.is_empty() && e.to_string().contains("unsupported scheme"), "{value}: {e}"),
            }
        }
    }

    #[test]
    fn bucket_urls_name_the_store_and_the_prefix() {
        let Ok(RecordingLocation::Remote(remote)) = RecordingLocation::parse(Path::new("s3://recordings/prod/eu-1/"))
        else {
            panic!("an s3 URL is remote")
        };
        assert_eq!(remote.url, "s3://recordings/prod/eu-1");
        assert_eq!(remote.store_url.as_str(), "s3://recordings");
        assert_eq!(remote.prefix.as_ref(), "prod/eu-1");
        assert_eq!(remote.url_of("operations"), "s3://recordings/prod/eu-1/operations/");
        assert_eq!(remote.path_of("operations/session_id=a").as_ref(), "prod/eu-1/operations/session_id=a");
        let Ok(RecordingLocation::Remote(whole)) = RecordingLocation::parse(Path::new("s3://recordings")) else {
            panic!("a bucket alone is remote")
        };
        assert_eq!(whole.url_of("operations"), "s3://recordings/operations/");
        let error = object_store::Error::Generic {
            store: "S3",
            source: "GET /x - 404 Not Found: <?xml version=\"1.0\"?>\n<Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist</Message></Error>".into(),
        };
        assert_eq!(
            store_error_line(&error),
            "Generic S3 error: GET /x - 404 Not Found: NoSuchBucket: The specified bucket does not exist"
        );
        let no_bucket = RecordingLocation::parse(Path::new("s3:///prefix")).map(|_| ()).unwrap_err();
        assert!(no_bucket.to_string().contains("no bucket name"), "{no_bucket}");
    }

    #[test]
    fn missing_credentials_say_what_to_set() {
        let error = object_store::Error::Generic {
            store: "S3",
            source: "Error performing PUT http://169.254.169.254/latest/api/token in 2ms - 403 Forbidden".into(),
        };
        let line = store_error_line(&error);
        assert!(line.starts_with("no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"), "{line}");
        assert!(line.contains("169.254.169.254/latest/api/token"), "{line}");
        let other = object_store::Error::Generic { store: "S3", source: "connection refused".into() };
        assert_eq!(store_error_line(&other), "Generic S3 error: connection refused");
    }
}
