//! The `tessera` command line: argument definitions and the commands, each a thin call into
//! the library. Data commands open the store directly, or, while a server holds the data
//! folder (sled's exclusive lock), hand themselves to that server through its control socket
//! ([`crate::control`]).

use crate::oauth::audit::Caller;
use crate::oauth::client::catalogue;
use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::json;

use crate::config::{Config, Overrides};
use crate::keys::{Algorithm, Keyring};
use crate::oauth::client::switches::{SwitchValues, SWITCHES};
use crate::oauth::client::ClientKeys;
use crate::oauth::client::NewClient;
use crate::oauth::user::{ProfileChanges, ProfileEdit};
use crate::oauth::Provider;
use crate::store::{ClientRecord, ClientType, GrantType, TokenExchangePolicy, UserRecord};
use crate::App;

#[derive(Parser, Debug)]
#[command(
    name = "tessera",
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("TESSERA_BUILD"), ")"),
    about = "An OAuth 2.0 authorization server: one binary, one data folder."
)]
pub struct Cli {
    /// Data folder holding clients, users, codes and tokens.
    #[arg(long, global = true, env = "TESSERA_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Keyring folder holding the signing keys.
    #[arg(long, global = true, env = "TESSERA_KEYS_DIR")]
    pub keys_dir: Option<PathBuf>,
    /// TOML configuration file.
    #[arg(long, global = true, env = "TESSERA_CONFIG")]
    pub config: Option<PathBuf>,
    /// Cluster mode: a postgres:// URL of the database every node shares (instead of the data
    /// and keys folders).
    #[arg(long, global = true, env = "TESSERA_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Print the OpenAPI document.
    Openapi,
    /// Manage clients (apps).
    #[command(subcommand)]
    App(AppCommand),
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage the cluster's database.
    #[command(subcommand)]
    Db(DbCommand),
    /// Read the audit trail: who changed what, and security events.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Copy the data folder and the keyring into a new folder, consistently, while the server
    /// runs (or not). The copy holds the private signing keys: keep it as safe as the keys folder.
    Backup {
        /// The folder to create (or an empty one).
        #[arg(long)]
        to: PathBuf,
    },
    /// Remove what expired now, as the server does every `purge_interval`: codes, refresh
    /// families, sessions, revocation entries, grants nothing can use, registrations never
    /// used, audit entries past their retention. Works while the server runs.
    Purge,
    /// Bring a backup back as the data and keys folders, which must be new or empty (stop the
    /// server first; cluster mode restores its database with PostgreSQL's tools).
    Restore {
        /// The folder `tessera backup` made.
        #[arg(long)]
        from: PathBuf,
    },
    /// Print a shell completion script (e.g. `source <(tessera completions bash)`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "TESSERA_ADDR")]
    pub addr: Option<String>,
    /// Issuer URL (defaults to http:// plus the listen address).
    #[arg(long, env = "TESSERA_ISSUER")]
    pub issuer: Option<String>,
    /// Development mode: also serve the playground test consumer at /o/playground/.
    #[arg(long)]
    pub dev: bool,
    /// Log lines as plain text or as one JSON object each.
    #[arg(long, env = "TESSERA_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum ClientTypeArg {
    Confidential,
    Public,
}

/// A `--grant-type` value: a grant of the catalogue, by its CLI name.
#[derive(Clone, Copy, Debug)]
pub struct GrantTypeArg(GrantType);

impl ValueEnum for GrantTypeArg {
    fn value_variants<'a>() -> &'a [Self] {
        static VARIANTS: std::sync::LazyLock<Vec<GrantTypeArg>> =
            std::sync::LazyLock::new(|| catalogue::GRANTS.iter().map(|g| GrantTypeArg(g.grant)).collect());
        &VARIANTS
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        let grant = catalogue::grant(self.0);
        Some(clap::builder::PossibleValue::new(grant.cli).help(grant.label))
    }
}

/// A flag for each client switch (`--dpop-bound-access-tokens`, ...), from the table in
/// `oauth::client::switches`.
#[derive(Clone, Copy, Debug, Default)]
pub struct SwitchFlags(SwitchValues);

impl Args for SwitchFlags {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        SWITCHES.iter().fold(cmd, |cmd, switch| {
            let flag = clap::Arg::new(switch.name)
                .long(switch.flag())
                .action(clap::ArgAction::SetTrue)
                .help(switch.description);
            cmd.arg(flag)
        })
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

impl clap::FromArgMatches for SwitchFlags {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        // As clap's derived code does: an argument it does not know is a missing one.
        let values = SwitchValues::read(|switch| matches.try_get_one::<bool>(switch.name).map(Option::<&bool>::copied));
        values
            .map(SwitchFlags)
            .map_err(|e| clap::Error::raw(clap::error::ErrorKind::MissingRequiredArgument, e))
    }

    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

// Parsed once per run: `Create`'s many flags cost nothing worth boxing them for.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum AppCommand {
    /// Register a client; prints its client_id and (confidential clients) its secret, once.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, value_enum, required_unless_present = "admin")]
        client_type: Option<ClientTypeArg>,
        /// Repeatable.
        #[arg(long = "grant-type", value_enum, required_unless_present = "admin")]
        grant_types: Vec<GrantTypeArg>,
        /// Repeatable; compared exactly at the authorization endpoint.
        #[arg(long = "redirect-uri")]
        redirect_uris: Vec<String>,
        /// Space-separated scopes the client may be granted [default: openid profile email read
        /// write; tessera:admin with --admin].
        #[arg(long)]
        scope: Option<String>,
        /// Repeatable: where OpenID Connect logout may send the browser back to.
        #[arg(long = "post-logout-redirect-uri")]
        post_logout_redirect_uris: Vec<String>,
        /// The algorithm of this client's ID tokens (default RS256, as OpenID Connect expects).
        #[arg(long, value_enum)]
        id_token_alg: Option<crate::keys::Algorithm>,
        /// An administration client for /api/v1/: confidential, client_credentials, scope
        /// tessera:admin (the type, grant and scope flags may then be left out).
        #[arg(long)]
        admin: bool,
        /// Repeatable: RFC 8707 resources (token audiences) the client may ask for.
        #[arg(long = "resource")]
        resources: Vec<String>,
        /// Access token lifetime in seconds, overriding the server's.
        #[arg(long)]
        access_token_ttl: Option<u64>,
        /// Refresh token lifetime in seconds, overriding the server's.
        #[arg(long)]
        refresh_token_ttl: Option<u64>,
        /// A first-party app: its users are not asked for consent.
        #[arg(long)]
        skip_consent: bool,
        /// A JWK Set file with the client's public keys: it authenticates with private_key_jwt
        /// (RFC 7523) instead of a secret (confidential; no secret is made).
        #[arg(long, conflicts_with = "jwks_uri")]
        jwks_file: Option<std::path::PathBuf>,
        /// The https URL where the client publishes its JWK Set, for private_key_jwt.
        #[arg(long)]
        jwks_uri: Option<String>,
        #[command(flatten)]
        switches: SwitchFlags,
        /// Repeatable, with --grant-type token-exchange: an audience the client may ask an
        /// exchanged token for (RFC 8693 `audience` or `resource`).
        #[arg(long = "token-exchange-audience")]
        token_exchange_audiences: Vec<String>,
        /// Repeatable: the client may present subject tokens whose audience includes one of
        /// these [default: the server's default audience].
        #[arg(long = "token-exchange-subject-audience")]
        token_exchange_subject_audiences: Vec<String>,
        /// Every token exchange must present an actor token.
        #[arg(long)]
        token_exchange_require_actor: bool,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// List clients.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show one client.
    Show {
        #[arg(allow_hyphen_values = true)]
        client_id: String,
        #[arg(long)]
        json: bool,
    },
    /// Delete a client.
    Delete {
        #[arg(allow_hyphen_values = true)]
        client_id: String,
    },
    /// Replace a confidential client's secret; prints the new one, once.
    RotateSecret {
        #[arg(allow_hyphen_values = true)]
        client_id: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Create a user; the password is read from standard input.
    Create {
        #[arg(long)]
        username: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        #[arg(long)]
        email: Option<String>,
        /// Give the user the operator role (the operator's console).
        #[arg(long)]
        operator: bool,
    },
    /// List users.
    List,
    /// Give a user the operator role (--on) or take it away (--off).
    SetOperator {
        username: String,
        #[arg(long, conflicts_with = "off", required_unless_present = "off")]
        on: bool,
        #[arg(long)]
        off: bool,
    },
    /// Disable a user: they cannot log in, their sessions end and their grants are revoked.
    Disable { username: String },
    /// Let a disabled user log in again (their revoked grants stay revoked).
    Enable { username: String },
    /// Delete a user.
    Delete { username: String },
    /// Remove every sign-in factor of a user (authenticator app, recovery codes): for a user
    /// who lost them. They sign in with their password alone next, and enrol again if asked.
    ResetFactors { username: String },
    /// Set a user's password, read from standard input.
    SetPassword {
        username: String,
        #[arg(long)]
        password_stdin: bool,
        /// Also revoke every grant the user gave, so no app keeps tokens obtained before.
        #[arg(long)]
        revoke_grants: bool,
    },
    /// Show a user's profile: the OpenID Connect claims apps may receive.
    Show {
        username: String,
        #[arg(long)]
        json: bool,
    },
    /// Change profile fields; only the flags given change, and an empty value clears one.
    SetProfile {
        username: String,
        #[command(flatten)]
        fields: ProfileChanges,
        /// Whether the user's email is verified (a changed email is unverified unless this says so).
        #[arg(long)]
        email_verified: Option<bool>,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Add a key: published in the JWKS, not signing yet (unless it is the only key).
    Generate {
        #[arg(long, value_enum, default_value = "ES256")]
        alg: Algorithm,
    },
    /// Add a key and make it the signing key now; older keys stay published.
    Rotate {
        #[arg(long, value_enum, default_value = "ES256")]
        alg: Algorithm,
    },
    /// Make a published key the signing key.
    Promote {
        /// A kid may begin with '-': it is a base64url thumbprint.
        #[arg(allow_hyphen_values = true)]
        kid: String,
    },
    /// Stop publishing a key.
    Retire {
        #[arg(allow_hyphen_values = true)]
        kid: String,
    },
    /// List keys and their status.
    List,
    /// Print a new random key-encryption key (cluster mode seals the keyring under it).
    NewEncryptionKey,
}

#[derive(Subcommand, Debug)]
pub enum DbCommand {
    /// Bring the database schema up to date (serve and every data command also do).
    Migrate,
    /// Copy a single node's data folder and keyring into an empty cluster database.
    Import {
        /// The data folder to copy (the node must be stopped).
        #[arg(long)]
        from_data_dir: PathBuf,
        /// The keys folder to copy (default: `keys` beside the data folder's parent, or
        /// `--keys-dir`).
        #[arg(long)]
        from_keys_dir: Option<PathBuf>,
    },
}

impl Cli {
    fn config(&self, serve: Option<&ServeArgs>) -> anyhow::Result<Config> {
        let overrides = Overrides {
            config_file: self.config.clone(),
            issuer: serve.and_then(|s| s.issuer.clone()),
            addr: serve.and_then(|s| s.addr.clone()),
            data_dir: self.data_dir.clone(),
            keys_dir: self.keys_dir.clone(),
            dev: serve.is_some_and(|s| s.dev),
            database_url: self.database_url.clone(),
        };
        Ok(Config::load(&overrides)?)
    }
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Serve(args) => {
            let config = cli.config(Some(args))?;
            let app = App::build(config.clone()).await?;
            let provider = app.provider();
            let demo = if config.playground {
                provider.seed_demo().await.map_err(|e| anyhow::anyhow!(e.description))?
            } else {
                None
            };
            let has_users = provider.has_users().await.map_err(|e| anyhow::anyhow!(e.description))?;
            print_banner(&cli, &config, app.addr(), app.issuer(), has_users, demo.as_ref());
            app.run().await?;
        }
        Command::Openapi => println!("{}", crate::http::spec()),
        Command::App(_) | Command::User(_) | Command::Audit(_) | Command::Backup { .. } | Command::Purge => {
            let config = cli.config(None)?;
            if config.database_url.is_some() && matches!(cli.command, Command::Backup { .. }) {
                bail!("in cluster mode, back up the database with PostgreSQL's own tools (pg_dump) and keep the key-encryption key: see docs/cluster.md");
            }
            // The lifetimes and retentions decide what goes: in cluster mode the command line
            // purges with its own, so they must be the nodes', from their configuration file.
            if config.database_url.is_some() && matches!(cli.command, Command::Purge) && cli.config.is_none() {
                bail!("in cluster mode, tessera purge applies this command line's lifetimes and retentions: name the nodes' configuration file with --config or TESSERA_CONFIG");
            }
            let inputs = Inputs::gather(&cli.command)?;
            // A server running on the data folder holds it (sled lets one process open it):
            // the command is then run by that server, which is handed what was read here.
            if config.database_url.is_none() && crate::control::forward(&config.data_dir, &inputs).await? {
                return Ok(());
            }
            let provider = offline_provider(&config).await?;
            data_command(&provider, &Caller::cli(), &cli.command, &inputs, &mut std::io::stdout()).await?;
        }
        Command::Restore { from } => println!("{}", crate::backup::restore(&cli.config(None)?, from).await?),
        Command::Keys(cmd) => keys_command(&cli.config(None)?, cmd).await?,
        Command::Db(cmd) => db_command(&cli.config(None)?, cmd).await?,
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(*shell, &mut Cli::command(), "tessera", &mut std::io::stdout());
        }
    }
    Ok(())
}

impl Command {
    /// Whether this is a data command (`app`, `user`, `audit`, `backup`, `purge`): one that
    /// runs on the store, in this process or in the running server it is handed to.
    pub(crate) fn runs_on_the_data_folder(&self) -> bool {
        matches!(
            self,
            Command::App(_) | Command::User(_) | Command::Audit(_) | Command::Backup { .. } | Command::Purge
        )
    }
}

/// Runs a data command ([`Command::runs_on_the_data_folder`]) on `provider`,
/// as `by`, writing what it prints to `out`: in this process, or in a running server that was
/// handed the command through its control socket.
pub(crate) async fn data_command(
    provider: &Provider,
    by: &Caller,
    command: &Command,
    inputs: &Inputs,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    match command {
        Command::App(cmd) => app_command(provider, by, cmd, inputs, out).await,
        Command::User(cmd) => user_command(provider, by, cmd, inputs, out).await,
        Command::Audit(cmd) => audit_command(provider, cmd, out).await,
        Command::Backup { to } => {
            let summary = provider.back_up(by, &inputs.absolute(to)).await?;
            Ok(writeln!(out, "{summary}")?)
        }
        Command::Purge => {
            let started = std::time::Instant::now();
            let purged = provider
                .purge_now(by)
                .await
                .map_err(|e| anyhow::anyhow!(e.description))?;
            let took = started.elapsed().as_secs_f64() * 1000.0;
            writeln!(
                out,
                "purged {} records in {took:.0} ms: {}",
                purged.total(),
                purged.summary()
            )?;
            if purged.busy {
                writeln!(
                    out,
                    "another node was purging: codes, tokens, sessions and grants were left to it"
                )?;
            }
            Ok(())
        }
        _ => bail!("only the app, user, audit, backup and purge commands are run on the data folder"),
    }
}

/// What a data command reads from the machine it is typed on, read before it runs: a password
/// on standard input, a key set file. A command handed to a running server carries them, so
/// the server reads nothing of the caller's (not its terminal, not a path relative to it).
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Inputs {
    password: Option<String>,
    jwks: Option<String>,
    /// The working directory, which relative paths given to the server are relative to.
    cwd: Option<PathBuf>,
}

impl Inputs {
    fn gather(command: &Command) -> anyhow::Result<Inputs> {
        let mut inputs = Inputs::default();
        match command {
            Command::User(UserCommand::Create { password_stdin, .. })
            | Command::User(UserCommand::SetPassword { password_stdin, .. }) => {
                if !password_stdin {
                    bail!("pass --password-stdin and give the password on standard input (passwords on the command line leak into shell history and ps)");
                }
                let mut line = String::new();
                std::io::stdin().lock().read_line(&mut line)?;
                inputs.password = Some(line.trim_end_matches(['\r', '\n']).to_string());
            }
            Command::App(AppCommand::Create {
                jwks_file: Some(path), ..
            }) => {
                // Read no more than a key set may be: the path might be /dev/zero.
                use std::io::Read;
                let limit = crate::oauth::client::keys::MAX_JWKS_BYTES;
                let mut text = String::new();
                std::fs::File::open(path)
                    .and_then(|f| f.take(limit as u64 + 1).read_to_string(&mut text))
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
                if text.len() > limit {
                    bail!(
                        "{} is larger than {limit} bytes, the most a JWK Set may be",
                        path.display()
                    );
                }
                inputs.jwks = Some(text);
            }
            Command::Backup { .. } => inputs.cwd = Some(std::env::current_dir()?),
            _ => {}
        }
        Ok(inputs)
    }

    /// `path`, relative to the caller's working directory if it is relative.
    fn absolute(&self, path: &std::path::Path) -> PathBuf {
        match &self.cwd {
            Some(cwd) => cwd.join(path),
            None => path.to_path_buf(),
        }
    }

    fn password(&self) -> anyhow::Result<&str> {
        self.password.as_deref().context("no password was read")
    }
}

/// How this binary was started, for commands to print: `cargo run --release --` when it runs
/// from a Cargo build folder, else its name when it is the `tessera` on PATH, else its path;
/// plus the folder and config flags this run was given (they apply to every command).
fn command_prefix(cli: &Cli) -> String {
    let exe = std::env::current_exe().ok();
    let in_target = |profile: &str| {
        exe.as_ref()
            .is_some_and(|p| p.ends_with(format!("target/{profile}/tessera")))
    };
    let mut prefix = if in_target("release") {
        "cargo run --release --".to_string()
    } else if in_target("debug") {
        "cargo run --".to_string()
    } else {
        let on_path = std::env::var_os("PATH").is_some_and(|path| {
            std::env::split_paths(&path).any(|dir| {
                let found = dir.join("tessera").canonicalize().ok();
                found.is_some() && found == exe.as_ref().and_then(|e| e.canonicalize().ok())
            })
        });
        match (&exe, on_path) {
            (Some(exe), false) => exe.display().to_string(),
            _ => "tessera".to_string(),
        }
    };
    for (flag, value) in [
        ("--data-dir", &cli.data_dir),
        ("--keys-dir", &cli.keys_dir),
        ("--config", &cli.config),
    ] {
        if let Some(value) = value {
            prefix.push_str(&format!(" {flag} {}", shell_word(&value.display().to_string())));
        }
    }
    prefix
}

/// A database URL without its credentials, to print.
fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            let _ = parsed.set_password(None);
            let _ = parsed.set_username("");
            parsed.set_query(None);
            parsed.to_string()
        }
        Err(_) => "(an unparsable URL)".into(),
    }
}

/// `word` quoted for a POSIX shell when it needs to be.
fn shell_word(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:=@,".contains(c))
    {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// What a person starting the server needs next, on standard output (logs go to stderr):
/// where it serves, its docs and discovery URLs, and on a store without users the command that
/// creates one, or with `--dev` on a first start the demo user and app (secrets shown once).
fn print_banner(
    cli: &Cli,
    config: &Config,
    addr: std::net::SocketAddr,
    issuer: &str,
    has_users: bool,
    demo: Option<&crate::oauth::demo::Demo>,
) {
    let mut out = format!(
        "Tessera {version} is listening on {addr}\n\
         \x20 issuer:     {issuer}\n\
         \x20 API docs:   {issuer}/docs\n\
         \x20 discovery:  {issuer}/.well-known/openid-configuration\n",
        version = env!("CARGO_PKG_VERSION"),
    );
    if config.playground {
        out.push_str(&format!("  playground: {issuer}/o/playground/\n"));
    }
    match &config.database_url {
        Some(url) => out.push_str(&format!("  database:   {} (cluster mode)\n", redacted(url))),
        None => out.push_str(&format!(
            "  data:       {} (signing keys in {})\n",
            config.data_dir.display(),
            config.keys_dir.display()
        )),
    }
    if let Some(demo) = demo {
        out.push_str(&format!(
            "\nDevelopment mode created a demo user and a demo app (shown only this once):\n\
             \x20 username:      {}\n\
             \x20 password:      {}\n\
             \x20 client_id:     {}\n\
             \x20 client_secret: {}\n\
             \x20 redirect_uri:  {}\n\
             Open {issuer}/o/playground/, enter the client_id and client_secret, and press Authorize.\n",
            demo.username, demo.password, demo.client_id, demo.client_secret, demo.redirect_uri
        ));
    } else if !has_users {
        out.push_str(&format!(
            "\nThere is no user yet. Create one in another shell while the server runs (the command reads the password from standard input):\n\
             \x20 echo 'a long password' | {} user create --username alice --password-stdin\n",
            command_prefix(cli)
        ));
    }
    print!("{out}");
    let _ = std::io::stdout().flush();
}

async fn offline_provider(config: &Config) -> anyhow::Result<std::sync::Arc<crate::oauth::Provider>> {
    let issuer = config
        .issuer
        .as_ref()
        .map(|u| u.to_string())
        .unwrap_or_else(|| format!("http://{}", config.addr));
    crate::open_provider(config, &issuer).await
}

fn client_json(client: &ClientRecord, secret: Option<&str>) -> serde_json::Value {
    let mut value = json!({
        "client_id": client.client_id,
        "name": client.name,
        "client_type": client.client_type,
        "grant_types": client.grant_types,
        "redirect_uris": client.redirect_uris,
        "scope": client.scopes.join(" "),
        "resources": client.resources,
        "access_token_ttl": client.access_token_ttl,
        "refresh_token_ttl": client.refresh_token_ttl,
        "created_at": client.created_at,
        "skip_consent": client.skip_consent,
        "post_logout_redirect_uris": client.post_logout_redirect_uris,
        "id_token_signed_response_alg": client.id_token_signed_response_alg.unwrap_or(Algorithm::RS256),
        "admin": client.admin,
        "token_endpoint_auth_method": client.token_endpoint_auth_method,
    });
    for (switch, on) in SwitchValues::of(&client.policy).iter() {
        value[switch.name] = json!(on);
    }
    if client.grant_types.contains(&GrantType::TokenExchange) {
        let exchange = &client.policy.token_exchange;
        value["token_exchange_audiences"] = json!(exchange.audiences);
        value["token_exchange_subject_audiences"] = json!(exchange.subject_audiences);
        value["token_exchange_require_actor"] = json!(exchange.require_actor);
    }
    if let Some(jwks) = &client.jwks {
        value["jwks"] = jwks.clone();
    }
    if let Some(uri) = &client.jwks_uri {
        value["jwks_uri"] = json!(uri);
    }
    if let Some(secret) = secret {
        value["client_secret"] = json!(secret);
    }
    value
}

fn print_client(out: &mut dyn Write, client: &ClientRecord) -> std::io::Result<()> {
    let grants: Vec<_> = client
        .grant_types
        .iter()
        .map(|g| crate::oauth::client::catalogue::wire(*g))
        .collect();
    writeln!(out, "client_id:     {}", client.client_id)?;
    writeln!(out, "name:          {}", client.name)?;
    writeln!(out, "type:          {:?}", client.client_type)?;
    writeln!(out, "grant types:   {}", grants.join(", "))?;
    writeln!(out, "redirect URIs: {}", client.redirect_uris.join(" "))?;
    writeln!(out, "scope:         {}", client.scopes.join(" "))?;
    if !client.resources.is_empty() {
        writeln!(out, "resources:     {}", client.resources.join(" "))?;
    }
    if client.skip_consent {
        writeln!(out, "consent:       skipped (first-party app)")?;
    }
    if !client.post_logout_redirect_uris.is_empty() {
        writeln!(out, "post-logout:   {}", client.post_logout_redirect_uris.join(" "))?;
    }
    let alg = client.id_token_signed_response_alg.unwrap_or(Algorithm::RS256);
    writeln!(out, "ID tokens:     {alg}")?;
    if let Some(uri) = &client.jwks_uri {
        writeln!(out, "keys:          {uri} (private_key_jwt)")?;
    } else if let Some(jwks) = &client.jwks {
        let count = jwks["keys"].as_array().map_or(0, Vec::len);
        writeln!(out, "keys:          {count} registered (private_key_jwt)")?;
    }
    for (switch, on) in SwitchValues::of(&client.policy).iter().filter(|(_, on)| *on) {
        writeln!(out, "{:<14} {}", format!("{}:", switch.title), switch.shown(on))?;
    }
    if client.grant_types.contains(&GrantType::TokenExchange) {
        let exchange = &client.policy.token_exchange;
        writeln!(out, "exchanges for: {}", exchange.audiences.join(" "))?;
        let subjects = match exchange.subject_audiences.is_empty() {
            true => "the server's default audience".to_string(),
            false => exchange.subject_audiences.join(" "),
        };
        writeln!(out, "exchanges:     tokens for {subjects}")?;
        if exchange.require_actor {
            writeln!(out, "actor token:   required")?;
        }
    }
    Ok(())
}

async fn app_command(
    provider: &Provider,
    by: &Caller,
    cmd: &AppCommand,
    inputs: &Inputs,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    match cmd {
        AppCommand::Create {
            name,
            client_type,
            grant_types,
            redirect_uris,
            scope,
            resources,
            access_token_ttl,
            refresh_token_ttl,
            skip_consent,
            post_logout_redirect_uris,
            id_token_alg,
            admin,
            jwks_file,
            jwks_uri,
            switches,
            token_exchange_audiences,
            token_exchange_subject_audiences,
            token_exchange_require_actor,
            json,
        } => {
            let mut grant_types: Vec<GrantType> = grant_types.iter().map(|g| g.0).collect();
            if *admin && grant_types.is_empty() {
                grant_types.push(GrantType::ClientCredentials);
            }
            let keys = match (jwks_file, jwks_uri) {
                (Some(path), _) => {
                    let text = inputs.jwks.as_deref().context("the key set file was not read")?;
                    let jwks = serde_json::from_str(text)
                        .map_err(|e| anyhow::anyhow!("{} is not JSON: {e}", path.display()))?;
                    Some(ClientKeys::Jwks(jwks))
                }
                (None, Some(uri)) => Some(ClientKeys::JwksUri(uri.clone())),
                (None, None) => None,
            };
            let new = NewClient {
                name: name.clone(),
                client_type: match client_type {
                    Some(ClientTypeArg::Public) => ClientType::Public,
                    Some(ClientTypeArg::Confidential) | None => ClientType::Confidential,
                },
                grant_types,
                redirect_uris: redirect_uris.clone(),
                scope: scope
                    .clone()
                    .unwrap_or_else(|| crate::oauth::client::default_scope(*admin).to_string()),
                resources: resources.clone(),
                access_token_ttl: *access_token_ttl,
                refresh_token_ttl: *refresh_token_ttl,
                skip_consent: *skip_consent,
                owner_user_id: None,
                post_logout_redirect_uris: post_logout_redirect_uris.clone(),
                id_token_signed_response_alg: *id_token_alg,
                admin: *admin,
                keys,
                policy: switches.0.with(TokenExchangePolicy {
                    audiences: token_exchange_audiences.clone(),
                    subject_audiences: token_exchange_subject_audiences.clone(),
                    require_actor: *token_exchange_require_actor,
                }),
            };
            let (client, secret) = provider
                .clients
                .register_client(by, new)
                .await
                .map_err(|e| anyhow::anyhow!(e.description))?;
            if *json {
                writeln!(out, "{}", client_json(&client, secret.as_deref()))?;
            } else {
                print_client(out, &client)?;
                if let Some(secret) = secret {
                    writeln!(out, "client_secret: {secret}")?;
                    writeln!(out, "\nThe secret is shown only this once; store it now.")?;
                }
            }
        }
        AppCommand::List { json } => {
            let clients = provider.clients.list_clients().await?;
            if *json {
                writeln!(
                    out,
                    "{}",
                    serde_json::Value::Array(clients.iter().map(|c| client_json(c, None)).collect())
                )?;
            } else {
                for c in clients {
                    writeln!(
                        out,
                        "{}  {:<13} {}",
                        c.client_id,
                        format!("{:?}", c.client_type).to_lowercase(),
                        c.name
                    )?;
                }
            }
        }
        AppCommand::Show { client_id, json } => {
            let client = provider
                .clients
                .find_client(client_id)
                .await?
                .with_context(|| format!("no client {client_id}"))?;
            if *json {
                writeln!(out, "{}", client_json(&client, None))?;
            } else {
                print_client(out, &client)?;
            }
        }
        AppCommand::Delete { client_id } => {
            // Its grants are revoked first, so none of its tokens outlives it.
            if !provider
                .delete_client(by, client_id)
                .await
                .map_err(|e| anyhow::anyhow!(e.description))?
            {
                bail!("no client {client_id}");
            }
            writeln!(out, "deleted client {client_id}")?;
        }
        AppCommand::RotateSecret { client_id, json } => {
            let secret = provider
                .clients
                .rotate_client_secret(by, client_id)
                .await
                .map_err(|e| anyhow::anyhow!(e.description))?;
            if *json {
                writeln!(out, "{}", json!({"client_id": client_id, "client_secret": secret}))?;
            } else {
                writeln!(
                    out,
                    "client_secret: {secret}\n\nThe old secret no longer works. The new one is shown only this once."
                )?;
            }
        }
    }
    Ok(())
}

async fn find_user(provider: &Provider, username: &str) -> anyhow::Result<UserRecord> {
    provider
        .accounts
        .find_user_by_name(username)
        .await?
        .with_context(|| format!("no user {username}"))
}

/// A user as JSON: the id, username and every profile claim.
fn user_json(user: &UserRecord) -> serde_json::Value {
    let mut value = json!({
        "user_id": user.user_id,
        "username": user.username,
        "email": user.email,
        "email_verified": user.email_verified,
        "created_at": user.created_at,
        "updated_at": user.updated_at,
        "operator": user.operator,
        "disabled": user.disabled,
    });
    if let (Some(object), Ok(serde_json::Value::Object(profile))) =
        (value.as_object_mut(), serde_json::to_value(&user.profile))
    {
        object.extend(profile);
    }
    value
}

fn print_user(out: &mut dyn Write, user: &UserRecord, as_json: bool) -> std::io::Result<()> {
    let value = user_json(user);
    if as_json {
        return writeln!(out, "{value}");
    }
    if let Some(object) = value.as_object() {
        for (name, v) in object {
            let shown = match v {
                serde_json::Value::Null => continue,
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            writeln!(out, "{:<15}{shown}", format!("{name}:"))?;
        }
    }
    Ok(())
}

async fn user_command(
    provider: &Provider,
    by: &Caller,
    cmd: &UserCommand,
    inputs: &Inputs,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    match cmd {
        UserCommand::Create {
            username,
            password_stdin: _,
            email,
            operator,
        } => {
            let password = inputs.password()?;
            let mut user = provider
                .accounts
                .create_user(by, username, password, email.clone())
                .await
                .map_err(|e| anyhow::anyhow!(e.description))?;
            if *operator {
                user = provider
                    .accounts
                    .set_operator(by, &user.user_id, true)
                    .await
                    .map_err(|e| anyhow::anyhow!(e.description))?;
            }
            let role = if user.operator { ", operator" } else { "" };
            writeln!(out, "created user {} ({}{role})", user.username, user.user_id)?;
        }
        UserCommand::SetOperator { username, on, .. } => {
            let user = find_user(provider, username).await?;
            provider
                .accounts
                .set_operator(by, &user.user_id, *on)
                .await
                .map_err(|e| anyhow::anyhow!(e.description))?;
            match on {
                true => writeln!(out, "{username} is an operator")?,
                false => writeln!(out, "{username} is no longer an operator")?,
            }
        }
        UserCommand::Disable { username } | UserCommand::Enable { username } => {
            let disable = matches!(cmd, UserCommand::Disable { .. });
            let user = find_user(provider, username).await?;
            let (_, revoked) = provider
                .accounts
                .set_disabled(by, &user.user_id, disable)
                .await
                .map_err(|e| anyhow::anyhow!(e.description))?;
            match disable {
                true => writeln!(out, "{username} is disabled; {revoked} grant(s) revoked")?,
                false => writeln!(out, "{username} is enabled")?,
            }
        }
        UserCommand::List => {
            for user in provider.accounts.list_users().await? {
                writeln!(
                    out,
                    "{}  {}  {}",
                    user.user_id,
                    user.username,
                    user.email.unwrap_or_default()
                )?;
            }
        }
        UserCommand::ResetFactors { username } => {
            let user = find_user(provider, username).await?;
            let removed = provider
                .accounts
                .reset_factors(by, &user)
                .await
                .map_err(|e| anyhow::anyhow!(e.description))?;
            writeln!(out, "removed {removed} sign-in factor(s) of {username}")?;
        }
        UserCommand::Delete { username } => {
            let user = find_user(provider, username).await?;
            provider
                .delete_user(by, &user.user_id)
                .await
                .map_err(|e| anyhow::anyhow!(e.description))?;
            writeln!(out, "deleted user {username}")?;
        }
        UserCommand::SetPassword {
            username,
            password_stdin: _,
            revoke_grants,
        } => {
            let password = inputs.password()?;
            let user = find_user(provider, username).await?;
            provider
                .accounts
                .set_password(by, &user.user_id, password)
                .await
                .map_err(|e| anyhow::anyhow!(e.description))?;
            writeln!(out, "password changed for {username}; their sessions are ended")?;
            if *revoke_grants {
                let revoked = provider
                    .accounts
                    .revoke_user_grants(by, &user.user_id)
                    .await
                    .map_err(|e| anyhow::anyhow!(e.description))?;
                writeln!(out, "revoked {revoked} grants of {username}")?;
            }
        }
        UserCommand::Show { username, json } => {
            let user = find_user(provider, username).await?;
            print_user(out, &user, *json)?;
        }
        UserCommand::SetProfile {
            username,
            fields,
            email_verified,
        } => {
            let user = find_user(provider, username).await?;
            let mut edit = ProfileEdit::of(&user);
            fields.apply(&mut edit);
            edit.email_verified = *email_verified;
            let user = provider
                .accounts
                .update_profile(by, &user.user_id, edit)
                .await
                .map_err(|e| anyhow::anyhow!(e.description))?;
            print_user(out, &user, false)?;
        }
    }
    Ok(())
}

async fn db_command(config: &Config, cmd: &DbCommand) -> anyhow::Result<()> {
    if config.database_url.is_none() {
        bail!("`tessera db` works on a cluster's database: pass --database-url or set TESSERA_DATABASE_URL");
    }
    match cmd {
        DbCommand::Migrate => {
            let database = crate::open_database(config).await?;
            println!(
                "the database schema is at version {} (this Tessera's)",
                database.schema_version().await?
            );
        }
        DbCommand::Import {
            from_data_dir,
            from_keys_dir,
        } => {
            let keys_dir = from_keys_dir.clone().unwrap_or_else(|| config.keys_dir.clone());
            let imported = crate::import::import(config, from_data_dir, &keys_dir).await?;
            println!("{imported}");
        }
    }
    Ok(())
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// List entries, newest first (from a running server too, through its control socket).
    List {
        /// Only entries since then: a time (2026-12-01T09:00:00Z) or an age (90s, 30m, 12h, 7d).
        #[arg(long, value_parser = parse_since)]
        since: Option<i64>,
        /// Only entries by this actor (id or name).
        #[arg(long)]
        actor: Option<String>,
        /// Only this action, e.g. `client.delete`.
        #[arg(long)]
        action: Option<String>,
        /// Only entries about this target (id or name).
        #[arg(long)]
        target: Option<String>,
        /// At most this many entries.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        limit: u32,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
}

/// `--since`: an RFC 3339 time, or an age counted back from now; as milliseconds since the epoch.
fn parse_since(text: &str) -> Result<i64, String> {
    if let Ok(at) = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339) {
        return Ok((at.unix_timestamp_nanos() / 1_000_000) as i64);
    }
    let unit = |c: char| match c {
        's' => Some(1),
        'm' => Some(60),
        'h' => Some(3600),
        'd' => Some(86_400),
        _ => None,
    };
    let age = text
        .char_indices()
        .last()
        .and_then(|(i, c)| Some((text[..i].parse::<u32>().ok()?, unit(c)?)))
        .map(|(n, seconds)| i64::from(n) * seconds * 1000);
    match age {
        Some(age) => Ok(crate::clock::now_ms() - age),
        None => Err("expected a time like 2026-12-01T09:00:00Z or an age like 30m, 12h or 7d".into()),
    }
}

async fn audit_command(provider: &Provider, cmd: &AuditCommand, out: &mut (dyn Write + Send)) -> anyhow::Result<()> {
    let AuditCommand::List {
        since,
        actor,
        action,
        target,
        limit,
        json,
    } = cmd;
    let filter = crate::store::AuditFilter {
        actor: actor.clone(),
        action: action.clone(),
        target: target.clone(),
        since_ms: *since,
        until_ms: None,
    };
    let (mut left, mut before) = (*limit as usize, None::<String>);
    while left > 0 {
        let page = provider
            .audit
            .audit_page(&filter, before.as_deref(), left)
            .await
            .map_err(|e| anyhow::anyhow!(e.description))?;
        for entry in &page {
            if *json {
                writeln!(out, "{}", serde_json::to_string(entry)?)?;
            } else {
                writeln!(out, "{}", audit_line(entry))?;
            }
        }
        left -= page.len();
        match page.last() {
            Some(last) if left > 0 => before = Some(last.id.clone()),
            _ => break,
        }
    }
    Ok(())
}

/// One entry on one line: when, who (from where), what, to what, how it ended.
fn audit_line(entry: &crate::store::AuditRecord) -> String {
    let at = crate::clock::rfc3339(entry.at_ms / 1000);
    // Cleaned again: an entry may come from an older version, or a database edited by hand.
    use crate::oauth::audit::clean;
    let actor = match entry.actor.kind.as_str() {
        // A client's name is whatever it registered: its id tells it apart.
        "client" => format!("client:{} [{}]", clean(&entry.actor.name), clean(&entry.actor.id)),
        kind => format!("{}:{}", clean(kind), clean(&entry.actor.name)),
    };
    let from = entry
        .address
        .as_deref()
        .map(|a| format!(" ({})", clean(a)))
        .unwrap_or_default();
    let target = match (&entry.target_kind, &entry.target_name, &entry.target_id) {
        (Some(kind), Some(name), Some(id)) if !id.is_empty() => {
            format!("{} {} [{}]", clean(kind), clean(name), clean(id))
        }
        (Some(kind), Some(name), _) => format!("{} {}", clean(kind), clean(name)),
        _ => String::new(),
    };
    format!(
        "{at}  {actor}{from}  {}  {target}  {}",
        clean(&entry.action),
        clean(&entry.outcome)
    )
}

async fn keys_command(config: &Config, cmd: &KeysCommand) -> anyhow::Result<()> {
    if let KeysCommand::NewEncryptionKey = cmd {
        println!("{}", crate::keys::database::KeyEncryptionKey::generate());
        return Ok(());
    }
    let vault = crate::open_key_vault(config).await?;
    let vault = vault.as_ref();
    let keys = Keyring::open_or_init(vault).await?;
    let show = |k: &crate::keys::KeyInfo| {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}  {:<5}  {:?}", k.kid, k.alg, k.status).map_err(anyhow::Error::from)
    };
    let (action, changed) = match cmd {
        KeysCommand::Generate { alg } => ("key.generate", Keyring::generate(vault, *alg).await?),
        KeysCommand::Rotate { alg } => ("key.rotate", Keyring::rotate(vault, *alg).await?),
        KeysCommand::Promote { kid } => ("key.promote", Keyring::promote(vault, kid).await?),
        KeysCommand::Retire { kid } => ("key.retire", Keyring::retire(vault, kid).await?),
        KeysCommand::List => {
            for key in &keys {
                show(key)?;
            }
            return Ok(());
        }
        KeysCommand::NewEncryptionKey => return Ok(()), // answered above, without opening the keyring
    };
    // Recorded before it is shown: a closed output must not leave a change without a trace.
    record_key_change(config, action, &changed).await;
    show(&changed)?;
    Ok(())
}

/// Records a `tessera keys` change in the audit trail. While a server runs on the data folder
/// (sled lets one process open it) the entry waits in the keys folder for that server to move
/// into the trail. The change is made either way: it is never undone for want of a record.
async fn record_key_change(config: &Config, action: &str, key: &crate::keys::KeyInfo) {
    let alg = key.alg.to_string();
    let target = crate::oauth::audit::Target {
        kind: "key",
        id: &key.kid,
        name: &alg,
    };
    let entry = crate::oauth::audit::audit_entry(&Caller::cli(), action, Some(target), "ok");
    let recorded = match crate::open_store(config).await {
        Ok(store) => match store.append_audit(&entry).await {
            Ok(()) => store.durable().await.map_err(anyhow::Error::from),
            Err(e) => Err(e.into()),
        },
        Err(_) if config.database_url.is_none() => {
            crate::oauth::audit::queue_pending_audit(&config.keys_dir, &entry).map_err(anyhow::Error::from)
        }
        Err(e) => Err(e),
    };
    if let Err(e) = recorded {
        eprintln!("warning: the change is made, but could not be recorded in the audit trail: {e}");
    }
}
