//! How the client commands (`session`, `simulate --to`) reach a `kubestep serve`: TLS trust, a
//! client certificate and a bearer token, as the API server's webhook kubeconfig can present them.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

/// Credentials and trust for talking to the ingest service.
#[derive(clap::Args, Clone, Default)]
pub struct ClientArgs {
    /// Send `Authorization: Bearer` with the first token in this file.
    #[arg(long, global = true, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Trust this CA (PEM) for an https server, instead of the public roots.
    #[arg(long, global = true, value_name = "FILE")]
    ca_cert: Option<PathBuf>,
    /// Present this client certificate (PEM); needs --client-key.
    #[arg(long, global = true, value_name = "FILE", requires = "client_key")]
    client_cert: Option<PathBuf>,
    /// The private key of --client-cert (PEM).
    #[arg(long, global = true, value_name = "FILE", requires = "client_cert")]
    client_key: Option<PathBuf>,
}

impl ClientArgs {
    /// An HTTP client that reports every status (no error for non-2xx) and gives up after `timeout`.
    pub fn agent(&self, timeout: Duration) -> anyhow::Result<ureq::Agent> {
        use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig};
        let read = |path: &PathBuf| std::fs::read(path).with_context(|| format!("reading {}", path.display()));
        let mut tls = TlsConfig::builder();
        if let Some(ca) = &self.ca_cert {
            let pem = read(ca)?;
            let cert =
                Certificate::from_pem(&pem).with_context(|| format!("no PEM certificate in {}", ca.display()))?;
            tls = tls.root_certs(RootCerts::new_with_certs(&[cert]));
        }
        if let (Some(cert), Some(key)) = (&self.client_cert, &self.client_key) {
            let (cert_pem, key_pem) = (read(cert)?, read(key)?);
            let cert = Certificate::from_pem(&cert_pem)
                .with_context(|| format!("no PEM certificate in {}", cert.display()))?;
            let key =
                PrivateKey::from_pem(&key_pem).with_context(|| format!("no PEM private key in {}", key.display()))?;
            tls = tls.client_cert(Some(ClientCert::new_with_certs(&[cert], key)));
        }
        Ok(ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .tls_config(tls.build())
            .build()
            .into())
    }

    /// The bearer token, if a token file was given: its first line that is not blank or a comment.
    pub fn token(&self) -> anyhow::Result<Option<String>> {
        let Some(path) = &self.token_file else { return Ok(None) };
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let token = text.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with('#'));
        Ok(Some(token.with_context(|| format!("no token in {}", path.display()))?.to_owned()))
    }
}
