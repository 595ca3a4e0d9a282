//! An https server on loopback for the documents clients publish (Client ID Metadata
//! Documents, JWK Sets), with a certificate from a throwaway authority that the server under
//! test is told to trust (`outbound_ca_file`). Each path serves what the test set, and counts
//! how often it was asked for.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// What one path answers.
#[derive(Clone, Debug)]
pub struct Doc {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Waited before answering.
    pub delay: Duration,
}

impl Doc {
    /// A JSON document (`application/json`), with no caching headers.
    pub fn json(value: &Value) -> Doc {
        Doc {
            status: 200,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: value.to_string().into_bytes(),
            delay: Duration::ZERO,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Doc {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// The server; stops when dropped.
pub struct DocumentServer {
    /// `https://127.0.0.1:PORT`
    pub base: String,
    /// The authority that signed the server's certificate (PEM).
    pub ca_file: PathBuf,
    docs: Arc<Mutex<HashMap<String, Doc>>>,
    hits: Arc<Mutex<HashMap<String, usize>>>,
    _dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for DocumentServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl DocumentServer {
    pub async fn start() -> DocumentServer {
        let dir = tempfile::tempdir().unwrap();
        crate::postgres::make_certificates(dir.path());
        DocumentServer::start_in(dir).await
    }

    /// Another server, on another port, with this one's certificate: a second host as the
    /// server under test counts hosts (host and port), trusted through the same authority.
    pub async fn another(&self) -> DocumentServer {
        let dir = tempfile::tempdir().unwrap();
        for file in ["ca.crt", "server.crt", "server.key"] {
            std::fs::copy(self._dir.path().join(file), dir.path().join(file)).unwrap();
        }
        DocumentServer::start_in(dir).await
    }

    async fn start_in(dir: tempfile::TempDir) -> DocumentServer {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.path().join("server.crt"))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let key = PrivateKeyDer::from_pem_file(dir.path().join("server.key")).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("https://{}", listener.local_addr().unwrap());
        let docs: Arc<Mutex<HashMap<String, Doc>>> = Default::default();
        let hits: Arc<Mutex<HashMap<String, usize>>> = Default::default();
        let (served, counted) = (docs.clone(), hits.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let (acceptor, served, counted) = (acceptor.clone(), served.clone(), counted.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&head);
                    let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                    *counted.lock().unwrap().entry(path.clone()).or_default() += 1;
                    let doc = served.lock().unwrap().get(&path).cloned().unwrap_or(Doc {
                        status: 404,
                        headers: vec![],
                        body: b"not found".to_vec(),
                        delay: Duration::ZERO,
                    });
                    tokio::time::sleep(doc.delay).await;
                    let mut response = format!(
                        "HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                        doc.status,
                        doc.body.len()
                    );
                    for (name, value) in &doc.headers {
                        response.push_str(&format!("{name}: {value}\r\n"));
                    }
                    response.push_str("\r\n");
                    let _ = tls.write_all(response.as_bytes()).await;
                    let _ = tls.write_all(&doc.body).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        DocumentServer {
            base,
            ca_file: dir.path().join("ca.crt"),
            docs,
            hits,
            _dir: dir,
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Serves `doc` at `path` from now on.
    pub fn serve(&self, path: &str, doc: Doc) {
        self.docs.lock().unwrap().insert(path.into(), doc);
    }

    /// How many requests `path` has had.
    pub fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    /// Makes `config` trust this server: its authority, and loopback addresses.
    pub fn trusted_by(&self, config: &mut tessera::Config) {
        let pem = std::fs::read(&self.ca_file).unwrap();
        config.outbound.extra_roots = reqwest::Certificate::from_pem_bundle(&pem).unwrap();
        config.outbound.allow_private_addresses = true;
    }
}
