//! A real S3-compatible server for the tests: moto's server mode (PyPI `moto[server]`), started on a
//! free loopback port and stopped when dropped. `.ci/test` installs it; `KUBESTEP_MOTO_SERVER` names
//! another `moto_server` executable.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where `.ci/test` installs moto.
fn installed_moto() -> Option<PathBuf> {
    let home = std::env::var_os("HOME")?;
    let path = Path::new(&home).join(".cache/kubestep-moto/bin/moto_server");
    path.exists().then_some(path)
}

fn moto_server() -> PathBuf {
    if let Some(path) = std::env::var_os("KUBESTEP_MOTO_SERVER") {
        return PathBuf::from(path);
    }
    if let Some(path) = installed_moto() {
        return path;
    }
    panic!(
        "no moto_server: run the tests with `bash .ci/test` (it installs moto from PyPI into ~/.cache/kubestep-moto) \
         or set KUBESTEP_MOTO_SERVER"
    );
}

/// A running S3-compatible server with one bucket.
pub struct S3Server {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The bucket created at start.
    pub bucket: String,
}

impl S3Server {
    /// Starts the server and creates `bucket`.
    pub fn start(bucket: &str) -> S3Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let child = Command::new(moto_server())
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting moto_server");
        let server = S3Server { child, endpoint: format!("http://127.0.0.1:{port}"), bucket: bucket.to_owned() };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match ureq::put(&format!("{}/{bucket}", server.endpoint)).send_empty() {
                Ok(_) => break,
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
                Err(e) => panic!("moto_server did not answer on {}: {e}", server.endpoint),
            }
        }
        server
    }

    /// The environment a `kubestep` process needs to reach the server (the standard AWS variables).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", "kubestep-test".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "kubestep-test".to_owned()),
            ("AWS_REGION", "us-east-1".to_owned()),
            ("AWS_ENDPOINT", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".to_owned()),
        ]
    }

    /// `s3://BUCKET/PREFIX`.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", self.bucket)
    }

    /// Runs `kubestep ARGS...` with the server's environment.
    pub fn kubestep(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_kubestep"))
            .args(args)
            .envs(self.env())
            .stdin(Stdio::null())
            .output()
            .expect("running kubestep")
    }
}

impl S3Server {
    /// A client of the bucket, for tests that look at or change objects directly.
    pub fn store(&self) -> object_store::aws::AmazonS3 {
        object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(&self.bucket)
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_access_key_id("kubestep-test")
            .with_secret_access_key("kubestep-test")
            .build()
            .expect("an S3 client")
    }

    fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(future)
    }

    /// Copies every file of the local recording `dir` under `prefix` in the bucket, as they are.
    pub fn upload(&self, dir: &Path, prefix: &str) -> usize {
        let mut uploaded = 0;
        for file in super::all_files(dir) {
            let relative = file.strip_prefix(dir).expect("inside the recording").to_string_lossy().into_owned();
            self.put(&format!("{prefix}/{relative}"), std::fs::read(&file).expect("reading a recording file"));
            uploaded += 1;
        }
        uploaded
    }

    /// Writes the object `key`.
    pub fn put(&self, key: &str, bytes: Vec<u8>) {
        use object_store::{ObjectStoreExt, PutPayload};
        let store = self.store();
        Self::block_on(store.put(&object_store::path::Path::from(key), PutPayload::from(bytes))).expect("uploading");
    }

    /// The object `key`, if it is there.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        use object_store::ObjectStoreExt;
        let store = self.store();
        Self::block_on(async { store.get(&object_store::path::Path::from(key)).await?.bytes().await })
            .ok()
            .map(|b| b.to_vec())
    }

    /// The keys under `prefix`, sorted.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        use futures::TryStreamExt;
        use object_store::ObjectStore;
        let store = self.store();
        let prefix = object_store::path::Path::from(prefix);
        let mut keys: Vec<String> = Self::block_on(store.list(Some(&prefix)).try_collect::<Vec<_>>())
            .expect("listing")
            .into_iter()
            .map(|o| o.location.to_string())
            .collect();
        keys.sort();
        keys
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
