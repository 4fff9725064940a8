//! The store commands (`apply`, `export`, `create-key`, `set-role`) beside
//! a running server.
//!
//! The embedded store is one file that one process holds open. A server on
//! it (`maas up`, `portal` or `proxy`) therefore also listens on a Unix
//! socket in the data directory, `maas.sock`, made readable and writable by
//! its owner alone: whoever may connect could as well open the store file.
//! A command finds the socket, sends itself as one JSON line and gets its
//! output back as one JSON line; the server runs it with the same code
//! against the store it holds. With no server (no socket, or a stale one)
//! the command opens the store itself. Redis needs none of this: any
//! number of processes share it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use maas_conf::MaasConfig;
use maas_store::{Environment, Store, StoreLocation};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::commands;

/// A command that reads or writes the store, as sent over the socket.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum StoreCommand {
    /// `text` is the catalog file's content, `source` its name in errors.
    Apply {
        source: String,
        text: String,
        prune: bool,
        promote_to: Option<Environment>,
    },
    Export {
        tenants: bool,
    },
    CreateKey {
        app: String,
        label: String,
    },
    SetRole {
        email: String,
        role: maas_store::model::UserRole,
    },
}

/// What a command printed, and its error if it failed.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct CommandOutput {
    pub stdout: String,
    pub stderr: String,
    pub error: Option<String>,
}

impl StoreCommand {
    /// Runs the command against `store`, collecting what it prints.
    pub async fn run(self, store: &Store) -> CommandOutput {
        let mut output = CommandOutput::default();
        let result = match self {
            StoreCommand::Apply {
                source,
                text,
                prune,
                promote_to,
            } => commands::apply(store, &source, &text, prune, promote_to, &mut output).await,
            StoreCommand::Export { tenants } => commands::export(store, tenants, &mut output).await,
            StoreCommand::CreateKey { app, label } => commands::create_key(store, &app, label, &mut output).await,
            StoreCommand::SetRole { email, role } => commands::set_role(store, &email, role, &mut output).await,
        };
        if let Err(error) = result {
            output.error = Some(format!("{error:#}"));
        }
        output
    }
}

/// The socket of a server on the embedded store in `data_dir`.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("maas.sock")
}

/// Runs `command`: through the socket of a server that holds the embedded
/// store, else on the store opened here.
pub fn execute(config: &MaasConfig, command: StoreCommand) -> Result<CommandOutput> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        if let StoreLocation::Embedded { data_dir } = config.store.location() {
            let socket = socket_path(&data_dir);
            if let Some(output) = send(&socket, &command).await? {
                return Ok(output);
            }
        }
        let store = commands::open_store(config)
            .await
            .map_err(|error| in_use_hint(config, error))?;
        let output = command.run(&store).await;
        store.flush().await.context("flushing the store")?;
        Ok(output)
    })
}

/// Sends `command` to the server listening on `socket`; `None` when no
/// server listens there (no socket file, or one a stopped server left).
async fn send(socket: &Path, command: &StoreCommand) -> Result<Option<CommandOutput>> {
    let stream = match tokio::net::UnixStream::connect(socket).await {
        Ok(stream) => stream,
        Err(error)
            if matches!(
                error.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None);
        }
        Err(error) => {
            return Err(error).with_context(|| format!("connecting to the running maas at {}", socket.display()));
        }
    };
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_string(command)?;
    line.push('\n');
    write.write_all(line.as_bytes()).await?;
    write.shutdown().await?;
    let mut answer = String::new();
    BufReader::new(read)
        .read_line(&mut answer)
        .await
        .with_context(|| format!("reading the answer of the running maas at {}", socket.display()))?;
    let output = serde_json::from_str(&answer)
        .with_context(|| format!("the running maas at {} answered `{}`", socket.display(), answer.trim()))?;
    Ok(Some(output))
}

/// Says what to do when the store file is held by a server without a
/// socket (one started before this version, or on a path too long for one).
fn in_use_hint(config: &MaasConfig, error: anyhow::Error) -> anyhow::Error {
    let held = error
        .chain()
        .any(|cause| cause.to_string().contains("already open in another process"));
    match config.store.location() {
        StoreLocation::Embedded { data_dir } if held => error.context(format!(
            "another maas process holds the store in {} and does not take commands on {}; stop it and run \
             this command again, or run this command with the same version as that server",
            data_dir.display(),
            socket_path(&data_dir).display()
        )),
        _ => error,
    }
}

/// Listens on the data directory's socket for store commands, for as long
/// as the runtime runs; the socket file is removed at exit by [`ControlSocket`]'s drop.
pub fn listen(runtime: &tokio::runtime::Runtime, store: &Store, data_dir: &Path) -> Result<ControlSocket> {
    let path = socket_path(data_dir);
    // A socket a crashed server left behind: nothing answers on it (this
    // process holds the store, so no other server can).
    let _ = std::fs::remove_file(&path);
    let listener = {
        let _guard = runtime.enter();
        tokio::net::UnixListener::bind(&path).with_context(|| format!("listening on {}", path.display()))?
    };
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restricting {} to its owner", path.display()))?;
    let store = store.clone();
    runtime.spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let store = store.clone();
            tokio::spawn(async move {
                if let Err(error) = serve_one(stream, &store).await {
                    tracing::warn!(%error, "a command on the control socket failed");
                }
            });
        }
    });
    Ok(ControlSocket { path })
}

async fn serve_one(stream: tokio::net::UnixStream, store: &Store) -> Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    // A command carries a catalog file; 16 MiB is far above any catalog.
    let mut reader = BufReader::new(tokio::io::AsyncReadExt::take(read, 16 << 20));
    reader.read_line(&mut line).await?;
    let output = match serde_json::from_str::<StoreCommand>(&line) {
        Ok(command) => command.run(store).await,
        Err(error) => CommandOutput {
            error: Some(format!(
                "not a command this maas knows ({error}); is the CLI another version?"
            )),
            ..CommandOutput::default()
        },
    };
    let mut answer = serde_json::to_string(&output)?;
    answer.push('\n');
    write.write_all(answer.as_bytes()).await?;
    write.shutdown().await?;
    Ok(())
}

/// Removes the socket file when the server stops.
pub struct ControlSocket {
    path: PathBuf,
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
