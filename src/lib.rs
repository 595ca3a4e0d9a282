//! Tessera: an OAuth 2.0 authorization server in one binary with one data folder.
//!
//! [`App`] wires the pieces together: the [`backend`] (its [`store`] and [`keys`] vault), the protocol
//! core in [`oauth`], and the HTTP layer in [`http`] and [`pages`]. The CLI in [`cli`] and the
//! integration tests both start servers through it.

pub(crate) mod backend;
pub mod backup;
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
pub(crate) mod documents;
pub(crate) mod files;
pub mod http;
pub(crate) mod import;
pub(crate) mod jose;
pub mod keys;
pub mod log_writer;
pub(crate) mod metrics;
pub(crate) mod net;
pub mod oauth;
pub(crate) mod outbound;
pub(crate) mod pages;
pub mod rate_limit;
pub mod store;
pub(crate) mod syntax;
pub mod urlencoded;

/// Offline verification of Tessera's tokens for resource servers: the `tessera-resource` crate
/// (crates/tessera-resource), which a resource server depends on without the server.
pub use tessera_resource as resource;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use poem::listener::{Acceptor, Listener, TcpAcceptor, TcpListener};

use crate::backend::Backend;
pub use crate::config::Config;
use crate::keys::Keys;
pub use crate::oauth::now;
use crate::oauth::Provider;
use crate::store::Store;

/// How often a running server checks whether `tessera keys` changed the keyring.
const KEY_RELOAD_INTERVAL: Duration = Duration::from_secs(2);
/// How long in-flight requests get to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Purges expired records every `purge_interval` (the store runs its scans off the async
/// workers), so the store does not grow with every token ever issued.
async fn purge_periodically(provider: Arc<Provider>) {
    let mut tick = tokio::time::interval(provider.config.purge_interval);
    tick.tick().await; // the first tick is immediate; nothing has expired at startup
    loop {
        tick.tick().await;
        match provider.purge_expired().await {
            Ok(purged) if purged.total() > 0 => tracing::info!(?purged, "purged expired records"),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "purging expired records failed"),
        }
    }
}

/// A server that is bound to its port and ready to run.
pub struct App {
    acceptor: TcpAcceptor,
    addr: SocketAddr,
    provider: Arc<Provider>,
    control: Option<control::ControlSocket>,
}

pub use crate::backend::postgres::{key_encryption_key, open_database};
pub use crate::backend::{open_key_vault, open_store};

/// Opens the store and keyring named by `config`: what both the server and the CLI need.
/// `issuer` is the resolved issuer identifier.
pub async fn open_provider(config: &Config, issuer: &str) -> anyhow::Result<Arc<Provider>> {
    provider_on(config, issuer, backend::open(config).await?).await
}

async fn provider_on(config: &Config, issuer: &str, backend: Backend) -> anyhow::Result<Arc<Provider>> {
    let keys = Arc::new(Keys::load(backend.vault).await?);
    let provider = Provider::new(backend.store, keys, config.clone(), issuer);
    Ok(Arc::new(match backend.sealing {
        Some(kek) => provider.with_sealed_secrets(kek),
        None => provider,
    }))
}

impl App {
    /// Opens storage and keys and binds the listening socket (port 0 picks a free port).
    pub async fn build(config: Config) -> anyhow::Result<App> {
        let backend = backend::open(&config).await?;
        App::build_on(config, backend).await
    }

    /// [`App::build`] on a store the caller opened (tests keep a handle on it to look inside).
    pub async fn build_with_store(config: Config, store: Arc<dyn Store>) -> anyhow::Result<App> {
        let backend = Backend {
            store,
            vault: open_key_vault(&config).await?,
            sealing: backend::sealing(&config)?,
        };
        App::build_on(config, backend).await
    }

    async fn build_on(config: Config, backend: Backend) -> anyhow::Result<App> {
        let acceptor = TcpListener::bind(config.addr.clone()).into_acceptor().await?;
        let addr = acceptor
            .local_addr()
            .first()
            .and_then(|a| a.as_socket_addr().copied())
            .ok_or_else(|| anyhow::anyhow!("the listener has no socket address"))?;
        let issuer = match &config.issuer {
            Some(url) => url.to_string(),
            None => format!("http://{addr}"),
        };
        if config.outbound.allow_private_addresses {
            tracing::warn!(
                "outbound_allow_private_addresses is on: URLs chosen by users and clients may reach this \
                 machine and its private network (for development and tests only)"
            );
        }
        let provider = provider_on(&config, &issuer, backend).await?;
        let demoted = provider.upgrade().await?;
        if demoted > 0 {
            tracing::warn!(
                clients = demoted,
                "self-registered apps no longer skip consent (only operators can make first-party apps)"
            );
        }
        // `tessera app|user|audit|backup|purge` typed beside this server reach it here, bound
        // now so it is there as soon as the server is (cluster mode has no folder to share:
        // the command line opens the database beside the nodes).
        let control = match &config.database_url {
            Some(_) => None,
            None => control::ControlSocket::bind(&config.data_dir)
                .inspect_err(|e| {
                    tracing::warn!(error = %e, "no control socket in the data folder: data commands cannot run beside this server")
                })
                .ok(),
        };
        Ok(App {
            acceptor,
            addr,
            provider,
            control,
        })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn issuer(&self) -> &str {
        &self.provider.issuer
    }

    /// The protocol core this server runs, for seeding clients and users in-process while the
    /// server holds the data folder (tests, embedding).
    pub fn provider(&self) -> Arc<Provider> {
        self.provider.clone()
    }

    /// Serves until SIGTERM or Ctrl-C, then lets in-flight requests finish.
    pub async fn run(self) -> std::io::Result<()> {
        // The handlers are installed now, before the first request can be served, so a signal
        // sent as soon as the server logs its address is never the default (fatal) one.
        let shutdown = shutdown_signal()?;
        self.run_until(shutdown).await
    }

    /// Serves until `shutdown` completes.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        let keys = self.provider.keys.clone();
        let provider = self.provider.clone();
        let reloader = tokio::spawn(async move {
            let mut tick = tokio::time::interval(KEY_RELOAD_INTERVAL);
            loop {
                tick.tick().await;
                // What `tessera keys` could not record while this server held the data folder.
                if provider.config.database_url.is_none() {
                    if let Err(e) = provider.audit.import_pending_audit(&provider.config.keys_dir).await {
                        tracing::error!(error = %e.description, "could not import the keys folder's pending audit entries");
                    }
                }
                match keys.reload_if_changed().await {
                    Ok(true) => tracing::info!("keyring changed; keys reloaded"),
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "keyring changed but could not be loaded; keeping the previous keys")
                    }
                }
            }
        });
        let purger = tokio::spawn(purge_periodically(self.provider.clone()));
        let control = self
            .control
            .map(|socket| tokio::spawn(socket.serve(self.provider.clone())));
        tracing::info!(addr = %self.addr, issuer = %self.provider.issuer, "serving");
        let routes = http::routes(self.provider.clone(), pages::routes());
        let config = &self.provider.config;
        let limits = http::connections::ConnectionLimits {
            max: config.max_connections,
            max_per_address: config.max_connections_per_address,
            idle_timeout: config.idle_timeout,
            exempt: config.trusted_proxies.clone(),
        };
        let acceptor =
            http::connections::LimitedAcceptor::new(self.acceptor, limits, self.provider.metrics.open_connections());
        let serve_limits = http::server::ServeLimits {
            head_timeout: config.request_head_timeout,
            shutdown_grace: SHUTDOWN_GRACE,
        };
        let result = http::server::serve(acceptor, routes, serve_limits, shutdown).await;
        reloader.abort();
        purger.abort();
        if let Some(control) = control {
            control.abort();
            let _ = control.await; // the socket file is removed when its task is dropped
        }
        tracing::info!("stopped");
        result
    }
}

fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => {},
                _ = terminate.recv() => {},
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    /// The paths `src/README.md`'s map names: the first column of each line of its code block
    /// (paths separated by ", ", ending where two spaces begin the description).
    fn mapped_paths(map: &str) -> Vec<String> {
        let block = map.split("```").nth(1).expect("the map has a code block");
        block
            .lines()
            .filter(|line| !line.is_empty() && !line.starts_with(' '))
            .flat_map(|line| {
                let column = line.split("  ").next().unwrap_or_default();
                column.split(", ").map(str::to_string).collect::<Vec<_>>()
            })
            .collect()
    }

    fn folders(root: &Path, under: &Path, found: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(root.join(under)).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                let path = under.join(entry.file_name());
                found.insert(format!("{}/", path.display()));
                folders(root, &path, found);
            }
        }
    }

    #[test]
    fn the_map_of_src_names_every_folder_and_only_files_that_exist() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let map = std::fs::read_to_string(src.join("README.md")).unwrap();
        let named = mapped_paths(&map);
        assert!(named.len() > 60, "{named:?}");
        for path in &named {
            assert!(
                src.join(path).exists(),
                "src/README.md names {path}, which does not exist"
            );
        }
        let mut every_folder = BTreeSet::new();
        folders(&src, Path::new(""), &mut every_folder);
        for folder in every_folder {
            assert!(
                named.contains(&folder),
                "src/README.md does not name the folder {folder}"
            );
        }
    }
}
