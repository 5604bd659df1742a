//! `ssh_command`: one command on a remote host over SSH; the output is its exit code,
//! standard output and standard error.
//!
//! The client is `russh` (pure Rust, on the same `ring` crypto as the TLS stack). The
//! server's host key is checked against the step's `known_hosts` value (OpenSSH
//! `known_hosts` lines) before any credential is sent; an unknown or changed key is
//! refused unless `insecure_accept_any_host_key` is set. The password, private key and
//! passphrase are never logged nor put in a message.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use hmac::{Hmac, KeyInit, Mac};
use russh::client::{self, Handle};
use russh::keys::ssh_key::known_hosts::{Entry, HostPatterns, KnownHosts, Marker};
use russh::keys::{
    decode_secret_key, HashAlg, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate,
};
use russh::{ChannelMsg, ChannelReadHalf, Disconnect};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};
use sha1::Sha1;
use sluice_sdk::{StepContext, StepError, StepOutput, TypedStep};

use crate::common::{timeout_param, truncate};

/// Bytes of standard output, and separately of standard error, kept in the output;
/// the rest is read and dropped, and the step ends with a warning saying so.
pub const MAX_STREAM_BYTES: usize = 1024 * 1024;

/// How much of standard error a failure message quotes.
const ERROR_STDERR_CHARS: usize = 300;

/// Parameters of `ssh_command`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
// The host key is checked against `known_hosts` unless checking is explicitly off.
#[schemars(extend(
    "if" = {"properties": {"insecure_accept_any_host_key": {"const": true}}, "required": ["insecure_accept_any_host_key"]},
    "else" = {"required": ["known_hosts"]}
))]
pub struct SshCommandParams {
    /// The host name or IP address.
    pub host: String,
    /// The SSH port.
    #[serde(default = "default_port")]
    #[schemars(range(min = 1))]
    pub port: u16,
    /// The user to log in as.
    pub user: String,
    /// The password (password authentication), normally `${config.…}` of an encrypted
    /// configuration value. Never logged.
    #[serde(default)]
    pub password: Option<String>,
    /// The private key (public key authentication): the text of an OpenSSH
    /// (`-----BEGIN OPENSSH PRIVATE KEY-----`) or PEM private key file, normally
    /// `${config.…}` of an encrypted configuration value. Tried before `password` when
    /// both are given. Never logged.
    #[serde(default)]
    pub private_key: Option<String>,
    /// The passphrase of an encrypted `private_key`.
    #[serde(default)]
    pub private_key_passphrase: Option<String>,
    /// The command, run by the user's shell on the remote host. It may not hold `${…}`
    /// references: pass values in `env` or `stdin`, which the command reads (`"$NAME"`).
    #[schemars(extend(
        "x-sluice-literal" = true,
        "x-sluice-literal-reason" = "values would become shell input; pass them in \"env\" (read as \"$NAME\") or \"stdin\""
    ))]
    pub command: String,
    /// Text written to the command's standard input (then closed). Absent: the input
    /// is closed at once.
    #[serde(default)]
    pub stdin: Option<String>,
    /// Environment variables set for the command (sent as SSH `env` requests: the
    /// server's `AcceptEnv` must allow their names). A value that is not a string is
    /// sent as its JSON text.
    #[serde(default)]
    pub env: BTreeMap<String, Value>,
    /// Exit codes that count as success; any other fails the attempt (retryably).
    #[serde(default = "default_exit_codes")]
    pub expected_exit_codes: Vec<u32>,
    /// Seconds the whole exchange (connecting, logging in, running the command) may take.
    #[serde(default = "default_timeout")]
    #[schemars(range(min = 0.001, max = 900.0))]
    pub timeout_seconds: f64,
    /// The host's keys as OpenSSH `known_hosts` lines (what `ssh-keyscan -p PORT HOST`
    /// prints; hashed names and `[host]:port` entries work). Required unless
    /// `insecure_accept_any_host_key` is `true`.
    #[serde(default)]
    pub known_hosts: Option<String>,
    /// `true`: accept whatever key the host presents (no protection against a
    /// man-in-the-middle). For test systems only.
    #[serde(default)]
    pub insecure_accept_any_host_key: bool,
}

// By hand: the derived one would print the password and the private key.
impl std::fmt::Debug for SshCommandParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshCommandParams")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("command", &self.command)
            .finish_non_exhaustive()
    }
}

fn default_port() -> u16 {
    22
}

fn default_exit_codes() -> Vec<u32> {
    vec![0]
}

fn default_timeout() -> f64 {
    60.0
}

/// The `ssh_command` step type. Connects anew for every invocation (an SSH session is
/// tied to its user and credentials, and commands are seldom frequent enough to pool).
#[derive(Debug, Clone, Default)]
pub struct SshCommand;

impl SshCommand {
    /// The step type.
    pub fn new() -> Self {
        Self
    }
}

#[async_trait]
impl TypedStep for SshCommand {
    const NAME: &'static str = "ssh_command";
    const DESCRIPTION: &'static str =
        "Runs one command on a host over SSH (host key checked); the output is its exit code, stdout and stderr.";
    const VERSION: &'static str = "1.0.0";
    type Params = SshCommandParams;

    async fn run(
        &self,
        params: SshCommandParams,
        ctx: &StepContext,
    ) -> Result<StepOutput, StepError> {
        let timeout = timeout_param(params.timeout_seconds)?;
        let target = format!("{}@{}:{}", params.user, params.host, params.port);
        let host_keys = if params.insecure_accept_any_host_key {
            HostKeyPolicy::AcceptAny
        } else {
            let text = params.known_hosts.as_deref().ok_or_else(|| {
                StepError::Fatal(
                    "\"known_hosts\" is required (the host's key lines, as `ssh-keyscan` prints them) unless \"insecure_accept_any_host_key\" is true".into(),
                )
            })?;
            HostKeyPolicy::Known(parse_known_hosts(text)?)
        };
        if params.password.is_none() && params.private_key.is_none() {
            return Err(StepError::Fatal(
                "give \"password\" or \"private_key\" (or both)".into(),
            ));
        }
        let env = environment(&params.env)?;

        let started = Instant::now();
        let result = tokio::time::timeout(timeout, exchange(&params, host_keys, &env)).await;
        let outcome = match result {
            Ok(outcome) => outcome?,
            Err(_) => {
                return Err(StepError::Retryable(format!(
                    "ssh {target} timed out after {} s",
                    params.timeout_seconds
                )))
            }
        };
        let exit_code = match outcome.exit {
            Exit::Code(code) => code,
            Exit::Signal(signal) => {
                return Err(StepError::Retryable(format!(
                    "ssh {target}: the command was killed by signal {signal}"
                )))
            }
            Exit::Unknown => {
                return Err(StepError::Retryable(format!(
                    "ssh {target}: the channel closed without the command's exit status"
                )))
            }
        };
        ctx.log.info(format!(
            "ssh {target}: exit code {exit_code}, {} bytes of stdout, {} of stderr ({} ms)",
            outcome.stdout.total,
            outcome.stderr.total,
            started.elapsed().as_millis()
        ));
        let stderr = String::from_utf8_lossy(&outcome.stderr.kept).into_owned();
        if !params.expected_exit_codes.contains(&exit_code) {
            let detail = match stderr.trim() {
                "" => String::new(),
                text => format!("; stderr: {}", truncate(text, ERROR_STDERR_CHARS)),
            };
            return Err(StepError::Retryable(format!(
                "ssh {target}: the command exited with {exit_code} (expected {:?}){detail}",
                params.expected_exit_codes
            )));
        }
        let mut output = StepOutput::value(json!({
            "exit_code": exit_code,
            "stdout": String::from_utf8_lossy(&outcome.stdout.kept),
            "stderr": stderr,
        }));
        for (name, stream) in [("stdout", &outcome.stdout), ("stderr", &outcome.stderr)] {
            if stream.total > stream.kept.len() {
                output = output.with_warning(format!(
                    "{name} was {} bytes; the output keeps the first {MAX_STREAM_BYTES}",
                    stream.total
                ));
            }
        }
        Ok(output)
    }
}

/// The `env` parameter as name/text pairs; a name the shell could not read fails.
fn environment(env: &BTreeMap<String, Value>) -> Result<Vec<(String, String)>, StepError> {
    env.iter()
        .map(|(name, value)| {
            let mut chars = name.chars();
            let valid = chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(StepError::Fatal(format!(
                    "invalid environment variable name \"{name}\" in \"env\" (letters, digits and _, not starting with a digit)"
                )));
            }
            let text = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            Ok((name.clone(), text))
        })
        .collect()
}

/// How the command ended.
enum Exit {
    Code(u32),
    Signal(String),
    Unknown,
}

/// One output stream: the bytes kept and how many came.
#[derive(Default)]
struct Stream {
    kept: Vec<u8>,
    total: usize,
}

impl Stream {
    fn push(&mut self, data: &[u8]) {
        self.total += data.len();
        let room = MAX_STREAM_BYTES.saturating_sub(self.kept.len());
        self.kept.extend_from_slice(&data[..data.len().min(room)]);
    }
}

struct Outcome {
    exit: Exit,
    stdout: Stream,
    stderr: Stream,
}

/// Connects, checks the host key, logs in, runs the command and collects its output.
async fn exchange(
    params: &SshCommandParams,
    host_keys: HostKeyPolicy,
    env: &[(String, String)],
) -> Result<Outcome, StepError> {
    let address = format!("{}:{}", params.host, params.port);
    let refusal = Arc::new(Mutex::new(None));
    let checker = HostKeyChecker {
        policy: host_keys,
        host: params.host.to_ascii_lowercase(),
        port: params.port,
        refusal: refusal.clone(),
    };
    let config = Arc::new(client::Config::default());
    let mut session = client::connect(config, (params.host.as_str(), params.port), checker)
        .await
        .map_err(|e| {
            if let Some(reason) = refusal.lock().expect("host key refusal").take() {
                return StepError::Fatal(reason);
            }
            match e {
                russh::Error::IO(io) => {
                    StepError::Retryable(format!("cannot connect to {address}: {io}"))
                }
                other => StepError::Retryable(format!(
                    "the SSH handshake with {address} failed: {other}"
                )),
            }
        })?;

    authenticate(&mut session, params, &address).await?;

    let protocol = |e: russh::Error| {
        StepError::Retryable(format!("the SSH session with {address} failed: {e}"))
    };
    let mut channel = session.channel_open_session().await.map_err(protocol)?;
    for (name, value) in env {
        channel
            .set_env(true, name.as_str(), value.as_str())
            .await
            .map_err(protocol)?;
        if !request_accepted(&mut channel).await {
            return Err(StepError::Fatal(format!(
                "{address} refused the environment variable \"{name}\" (its sshd_config must accept it: AcceptEnv {name})"
            )));
        }
    }
    channel
        .exec(true, params.command.as_str())
        .await
        .map_err(protocol)?;
    if !request_accepted(&mut channel).await {
        return Err(StepError::Retryable(format!(
            "{address} refused to run the command"
        )));
    }

    let (reader, writer) = channel.split();
    let write = async {
        if let Some(stdin) = &params.stdin {
            writer.data(stdin.as_bytes()).await?;
        }
        writer.eof().await
    };
    // Written and read together: a command that writes much before reading all of its
    // input must not wait on us.
    let (written, outcome) = tokio::join!(write, collect(reader));
    if let (Err(e), Exit::Unknown) = (written, &outcome.exit) {
        return Err(protocol(e));
    }
    // The result is in; a failure to say goodbye changes nothing.
    let _ = session
        .disconnect(Disconnect::ByApplication, "", "en")
        .await;
    Ok(outcome)
}

/// Logs in with the private key, then (if it was refused or absent) the password.
async fn authenticate(
    session: &mut Handle<HostKeyChecker>,
    params: &SshCommandParams,
    address: &str,
) -> Result<(), StepError> {
    let failed =
        |e: russh::Error| StepError::Retryable(format!("logging in to {address} failed: {e}"));
    let mut tried = Vec::new();
    if let Some(text) = &params.private_key {
        // The key's own error names no part of the key.
        let key = decode_secret_key(text, params.private_key_passphrase.as_deref()).map_err(
            |e| match e {
                russh::keys::Error::KeyIsEncrypted => StepError::Fatal(
                    "\"private_key\" is encrypted: give its \"private_key_passphrase\"".into(),
                ),
                other => StepError::Fatal(format!(
                    "\"private_key\" is not a usable private key ({other})"
                )),
            },
        )?;
        let hash = if key.algorithm().is_rsa() {
            session
                .best_supported_rsa_hash()
                .await
                .map_err(failed)?
                .flatten()
        } else {
            None
        };
        let result = session
            .authenticate_publickey(
                params.user.as_str(),
                PrivateKeyWithHashAlg::new(Arc::new(key), hash),
            )
            .await
            .map_err(failed)?;
        if result.success() {
            return Ok(());
        }
        tried.push("private_key");
    }
    if let Some(password) = &params.password {
        let result = session
            .authenticate_password(params.user.as_str(), password.as_str())
            .await
            .map_err(failed)?;
        if result.success() {
            return Ok(());
        }
        tried.push("password");
    }
    Err(StepError::Fatal(format!(
        "{address} refused to log in user \"{}\" (tried {})",
        params.user,
        tried.join(", then ")
    )))
}

/// Waits for the answer to a request sent with `want_reply`.
async fn request_accepted(channel: &mut russh::Channel<client::Msg>) -> bool {
    loop {
        match channel.wait().await {
            Some(ChannelMsg::Success) => return true,
            Some(ChannelMsg::Failure) | None => return false,
            Some(_) => continue,
        }
    }
}

/// Reads the channel until it closes.
async fn collect(mut reader: ChannelReadHalf) -> Outcome {
    let mut outcome = Outcome {
        exit: Exit::Unknown,
        stdout: Stream::default(),
        stderr: Stream::default(),
    };
    while let Some(message) = reader.wait().await {
        match message {
            ChannelMsg::Data { data } => outcome.stdout.push(&data),
            // Extended data type 1 is standard error (RFC 4254 §5.2).
            ChannelMsg::ExtendedData { data, ext: 1 } => outcome.stderr.push(&data),
            ChannelMsg::ExitStatus { exit_status } => outcome.exit = Exit::Code(exit_status),
            ChannelMsg::ExitSignal { signal_name, .. } => {
                outcome.exit = Exit::Signal(format!("{signal_name:?}"))
            }
            ChannelMsg::Close => break,
            _ => {}
        }
    }
    outcome
}

/// Which host keys are trusted.
enum HostKeyPolicy {
    AcceptAny,
    Known(Vec<Entry>),
}

/// The `known_hosts` value's entries; a line that does not parse fails, naming it by
/// number (key lines are public, but the message need not repeat them).
fn parse_known_hosts(text: &str) -> Result<Vec<Entry>, StepError> {
    let entries = KnownHosts::new(text)
        .enumerate()
        .map(|(index, entry)| {
            entry.map_err(|e| {
                StepError::Fatal(format!(
                    "\"known_hosts\": entry {} is not an OpenSSH known_hosts line ({e})",
                    index + 1
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if entries.is_empty() {
        return Err(StepError::Fatal("\"known_hosts\" holds no key line".into()));
    }
    Ok(entries)
}

/// The client handler: judges the server's host key, and remembers why it refused one
/// (russh reports only "unknown key").
struct HostKeyChecker {
    policy: HostKeyPolicy,
    host: String,
    port: u16,
    refusal: Arc<Mutex<Option<String>>>,
}

impl client::Handler for HostKeyChecker {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_public_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let entries = match &self.policy {
            HostKeyPolicy::AcceptAny => return Ok(true),
            HostKeyPolicy::Known(entries) => entries,
        };
        let verdict = match server_public_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => {
                host_key_verdict(entries, &self.host, self.port, key)
            }
            PublicKeyOrCertificate::Certificate(_) => Err(format!(
                "{}:{} presented a host certificate; list its host key in \"known_hosts\" (certificate authorities are not supported)",
                self.host, self.port
            )),
        };
        match verdict {
            Ok(()) => Ok(true),
            Err(reason) => {
                *self.refusal.lock().expect("host key refusal") = Some(reason);
                Ok(false)
            }
        }
    }
}

/// Whether `known_hosts` vouches for `key` as the key of `host` on `port`, as OpenSSH
/// judges it: a matching `@revoked` line refuses, a matching key line accepts, a host
/// with lines for other keys is a changed key, a host without lines is unknown.
fn host_key_verdict(
    entries: &[Entry],
    host: &str,
    port: u16,
    key: &PublicKey,
) -> Result<(), String> {
    // OpenSSH records a host on another port than 22 as `[host]:port`.
    let name = if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    };
    let fingerprint = key.fingerprint(HashAlg::Sha256);
    let shown = format!("{} key {fingerprint}", key.algorithm());
    let mut host_listed = false;
    for entry in entries
        .iter()
        .filter(|e| host_matches(e.host_patterns(), &name))
    {
        let same_key = entry.public_key().key_data() == key.key_data();
        match entry.marker() {
            Some(Marker::Revoked) if same_key => {
                return Err(format!(
                    "the host key of {name} ({shown}) is revoked in \"known_hosts\""
                ))
            }
            Some(_) => {}
            None if same_key => return Ok(()),
            None => host_listed = true,
        }
    }
    if host_listed {
        Err(format!(
            "the host key of {name} ({shown}) does not match \"known_hosts\": it changed, or someone is in the middle"
        ))
    } else {
        Err(format!(
            "{name} ({shown}) is not in \"known_hosts\" (add the line `ssh-keyscan` prints, or set \"insecure_accept_any_host_key\")"
        ))
    }
}

/// OpenSSH's host matching: hashed names by HMAC-SHA1, patterns with `*` and `?`, a
/// matching `!pattern` excluding the host whatever else matches.
fn host_matches(patterns: &HostPatterns, name: &str) -> bool {
    match patterns {
        HostPatterns::HashedName { salt, hash } => Hmac::<Sha1>::new_from_slice(salt)
            .map(|mac| mac.chain_update(name.as_bytes()).verify_slice(hash).is_ok())
            .unwrap_or(false),
        HostPatterns::Patterns(patterns) => {
            let mut matched = false;
            for pattern in patterns {
                let pattern = pattern.to_ascii_lowercase();
                if let Some(negated) = pattern.strip_prefix('!') {
                    if glob(negated.as_bytes(), name.as_bytes()) {
                        return false;
                    }
                } else if glob(pattern.as_bytes(), name.as_bytes()) {
                    matched = true;
                }
            }
            matched
        }
    }
}

/// `*` (any run) and `?` (any one character) matching of the whole text.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|skip| glob(rest, &text[skip..])),
        Some((b'?', rest)) => !text.is_empty() && glob(rest, &text[1..]),
        Some((c, rest)) => text.first() == Some(c) && glob(rest, &text[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_patterns_match_as_openssh_does() {
        let patterns =
            |p: &[&str]| HostPatterns::Patterns(p.iter().map(|s| s.to_string()).collect());
        assert!(host_matches(
            &patterns(&["a.example", "b.example"]),
            "b.example"
        ));
        assert!(host_matches(&patterns(&["*.example"]), "db.example"));
        assert!(host_matches(
            &patterns(&["[10.0.0.?]:2222"]),
            "[10.0.0.5]:2222"
        ));
        assert!(!host_matches(&patterns(&["[10.0.0.5]:2222"]), "10.0.0.5"));
        assert!(!host_matches(
            &patterns(&["*.example", "!db.example"]),
            "db.example"
        ));
        assert!(host_matches(&patterns(&["DB.Example"]), "db.example"));
    }

    #[test]
    fn hashed_host_names_match() {
        // `ssh-keygen -H` of "[127.0.0.1]:2222" with this salt.
        let salt = b"0123456789abcdefghij".to_vec();
        let mac = Hmac::<Sha1>::new_from_slice(&salt)
            .unwrap()
            .chain_update(b"[127.0.0.1]:2222")
            .finalize()
            .into_bytes();
        let hash: [u8; 20] = mac.as_slice().try_into().unwrap();
        let hashed = HostPatterns::HashedName { salt, hash };
        assert!(host_matches(&hashed, "[127.0.0.1]:2222"));
        assert!(!host_matches(&hashed, "127.0.0.1"));
    }
}
