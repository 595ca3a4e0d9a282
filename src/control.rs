//! The control socket: `tessera app|user|audit|backup|purge` typed beside a running embedded
//! server.
//!
//! sled lets one process open a data folder, so while a server runs on it the command line
//! hands the server its command through a Unix socket in that folder, and prints what the
//! server answers: the same output, the same errors, and the same audit actor as when the
//! command opens the folder itself. Only the server's own OS account (and root, which can read
//! the folder anyway) may use it: the folder is 0700, the socket 0600, and the server checks
//! each connection's peer credentials. The user id the kernel reports there, never one the
//! request claims, names the audit actor.
//!
//! The exchange is one JSON request (the arguments as typed, what was read from standard
//! input or a file, the name `$USER` claims), the writing half closed, then one JSON answer.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

use crate::cli::{Cli, Inputs};
use crate::oauth::audit::{claimed_account, own_uid, Caller};
use crate::oauth::Provider;

/// The socket's name in the data folder.
pub const SOCKET_FILE: &str = "control.sock";
/// The most a request may hold: arguments and a key set file (64 KiB at most) with room over.
const MAX_REQUEST_BYTES: u64 = 1 << 20;
/// How long a connection may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the answer may take to be read.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// Commands run at once; more connections wait for a turn.
const CONCURRENT_COMMANDS: usize = 8;

#[derive(Serialize, Deserialize)]
struct Request {
    /// The command line as typed, program name first; parsed again by the server.
    args: Vec<String>,
    inputs: Inputs,
    /// `$SUDO_USER` or `$USER` of the caller, shown after the account's name.
    claimed: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Answer {
    /// What the command printed on standard output.
    out: String,
    /// Why it failed, as it would have been printed after `error: `.
    error: Option<String>,
}

impl Answer {
    fn refused(why: impl Into<String>) -> Answer {
        Answer {
            out: String::new(),
            error: Some(why.into()),
        }
    }
}

/// The listening socket of a running server; removed from the folder when dropped.
pub struct ControlSocket {
    path: PathBuf,
    listener: UnixListener,
}

impl ControlSocket {
    /// Listens in `data_dir`. A socket file left by a server that stopped without removing it
    /// is replaced: this process holds the folder's lock, so no other server listens there.
    pub fn bind(data_dir: &Path) -> std::io::Result<ControlSocket> {
        use std::os::unix::fs::PermissionsExt;
        let path = data_dir.join(SOCKET_FILE);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let listener = UnixListener::bind(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        Ok(ControlSocket { path, listener })
    }

    /// Answers connections until the task is dropped.
    pub async fn serve(self, provider: Arc<Provider>) {
        let turns = Arc::new(tokio::sync::Semaphore::new(CONCURRENT_COMMANDS));
        loop {
            // A turn before a connection is taken: more callers wait in the kernel's backlog,
            // holding nothing of the server's.
            let Ok(turn) = turns.clone().acquire_owned().await else {
                return;
            };
            let stream = match self.listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "control socket: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let provider = provider.clone();
            tokio::spawn(async move {
                let _turn = turn;
                if let Err(e) = answer(&provider, stream).await {
                    tracing::warn!(error = %e, "control socket: a command's answer could not be sent");
                }
            });
        }
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Reads one request from `stream`, runs it if its peer may, and writes the answer.
async fn answer(provider: &Provider, mut stream: UnixStream) -> std::io::Result<()> {
    let uid = stream.peer_cred()?.uid();
    let answer = if !own_or_root(uid) {
        tracing::warn!(uid, "control socket: refused a connection from another OS account");
        Answer::refused("the control socket serves only the server's own OS account")
    } else {
        match read_request(&mut stream).await {
            Ok(request) => run(provider, uid, request).await,
            Err(why) => Answer::refused(why),
        }
    };
    let body = serde_json::to_vec(&answer).map_err(std::io::Error::other)?;
    let sent = async {
        stream.write_all(&body).await?;
        stream.shutdown().await
    };
    // A caller that never reads its answer gives its turn back.
    tokio::time::timeout(ANSWER_TIMEOUT, sent)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

async fn read_request(stream: &mut UnixStream) -> Result<Request, String> {
    let mut body = Vec::new();
    let mut limited = (&mut *stream).take(MAX_REQUEST_BYTES + 1);
    let read = limited.read_to_end(&mut body);
    match tokio::time::timeout(REQUEST_TIMEOUT, read).await {
        Err(_) => return Err("the request was not sent in time".into()),
        Ok(Err(e)) => return Err(format!("the request could not be read: {e}")),
        Ok(Ok(_)) if body.len() as u64 > MAX_REQUEST_BYTES => {
            return Err(format!("a request holds at most {MAX_REQUEST_BYTES} bytes"))
        }
        Ok(Ok(_)) => {}
    }
    serde_json::from_slice(&body).map_err(|e| format!("the request is not one this server reads: {e}"))
}

async fn run(provider: &Provider, uid: u32, request: Request) -> Answer {
    let cli = match Cli::try_parse_from(&request.args) {
        Ok(cli) => cli,
        Err(e) => return Answer::refused(e.to_string().trim_end().to_string()),
    };
    if !cli.command.runs_on_the_data_folder() {
        return Answer::refused("only the app, user, audit, backup and purge commands are run by the server");
    }
    let by = Caller::cli_as(uid, request.claimed.as_deref());
    let mut out = Vec::new();
    let result = crate::cli::data_command(provider, &by, &cli.command, &request.inputs, &mut out).await;
    Answer {
        out: String::from_utf8_lossy(&out).into_owned(),
        error: result.err().map(|e| format!("{e:#}")),
    }
}

/// Whether `uid` is this process's own account or root: the peers the socket trusts both ways.
fn own_or_root(uid: u32) -> bool {
    uid == 0 || own_uid() == Some(uid)
}

/// Whether the process listening in `data_dir`, running as `server`, may be handed a command.
fn trusted_server(data_dir: &Path, server: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    if own_or_root(server) {
        return true;
    }
    // Root runs commands for a service account's server (systemd's DynamicUser=): trusted
    // when that account owns the data folder and the folder above it is root's or its own,
    // and open to no one else.
    let owner_of = |path: &Path| std::fs::symlink_metadata(path).ok().map(|m| (m.uid(), m.mode()));
    let parent = data_dir
        .canonicalize()
        .ok()
        .and_then(|dir| dir.parent().map(Path::to_path_buf));
    match (own_uid(), owner_of(data_dir), parent.as_deref().and_then(owner_of)) {
        (Some(0), Some((folder, _)), Some((above, mode))) => {
            folder == server && (above == 0 || above == server) && mode & 0o022 == 0
        }
        _ => false,
    }
}

/// Hands the command this process was started with to the server listening in `data_dir`,
/// prints its output and returns its failure as this command's. `false` when no server
/// listens there: the caller then opens the folder itself.
pub(crate) async fn forward(data_dir: &Path, inputs: &Inputs) -> anyhow::Result<bool> {
    let Ok(mut stream) = UnixStream::connect(data_dir.join(SOCKET_FILE)).await else {
        return Ok(false);
    };
    // What is sent (a password) goes only to a server this account trusts: one the kernel
    // says runs as this account or root, or, for root, as the owner of a data folder that
    // nobody else could have put there.
    let server = stream.peer_cred()?.uid();
    if !trusted_server(data_dir, server) {
        anyhow::bail!(
            "{} is served by uid {server}, not by this account: refusing to hand it the command",
            data_dir.join(SOCKET_FILE).display()
        );
    }
    let args = std::env::args_os()
        .map(|arg| arg.into_string())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|arg| anyhow::anyhow!("an argument is not UTF-8: {arg:?}"))?;
    let request = Request {
        args,
        inputs: inputs.clone(),
        claimed: claimed_account(),
    };
    stream.write_all(&serde_json::to_vec(&request)?).await?;
    stream.shutdown().await?;
    let mut body = Vec::new();
    stream.read_to_end(&mut body).await?;
    let answer: Answer = serde_json::from_slice(&body)
        .map_err(|e| anyhow::anyhow!("the server on {} answered unreadably: {e}", data_dir.display()))?;
    {
        use std::io::Write;
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(answer.out.as_bytes())?;
        stdout.flush()?;
    }
    match answer.error {
        Some(error) => Err(anyhow::anyhow!(error)),
        None => Ok(true),
    }
}
