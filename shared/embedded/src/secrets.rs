//! [`EmbeddedSecrets`]: encrypted configuration values, AES-256-GCM under a key file
//! `secret.key` (32 random bytes, mode 0600) created in the data directory on first use.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use async_trait::async_trait;
use rusqlite::{params, OptionalExtension};
use serde_json::Value;
use sluice_core::ports::{SecretError, SecretStore};

use crate::db::Shared;

/// File name of the key inside the data directory.
pub const SECRET_KEY_FILE: &str = "secret.key";
const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;

/// The secret store of one data directory: one ciphertext row per configuration (its map
/// name → value encrypted as a whole, with the configuration name as associated data so a
/// row copied under another name does not decrypt). Cheap to clone.
#[derive(Clone)]
pub struct EmbeddedSecrets {
    pub(crate) shared: Arc<Shared>,
}

fn backend(error: impl std::fmt::Display) -> SecretError {
    SecretError::Backend(error.to_string())
}

/// The `secrets` row holding the key check value: [`KEY_CHECK_TEXT`] encrypted under the
/// key, which only that key decrypts. Not a valid configuration name, so no
/// configuration can collide with it.
const KEY_CHECK_ROW: &str = "#key-check";
const KEY_CHECK_TEXT: &[u8] = b"sluice secret key check";

/// A row of the `secrets` table: (configuration, nonce, ciphertext).
type StoredRow = (String, Vec<u8>, Vec<u8>);

impl EmbeddedSecrets {
    /// The cipher, loading or creating the key on first use, and checked against what
    /// the database was encrypted with (see [`EmbeddedSecrets::check_key`]).
    async fn cipher(&self) -> Result<&Aes256Gcm, SecretError> {
        if let Some(cipher) = self.shared.cipher.get() {
            return Ok(cipher);
        }
        let path = self.shared.data_dir.join(SECRET_KEY_FILE);
        let stored_rows = self.rows()?;
        let key_is_missing = !path.exists();
        let holds_values = stored_rows.iter().any(|(name, ..)| name != KEY_CHECK_ROW);
        if key_is_missing && holds_values {
            return Err(backend(format!(
                "the secret key {} is missing, but the database holds values encrypted with                  it: restore that file (e.g. `sluice restore` of a backup); a new key could                  never decrypt them, so none is created",
                path.display()
            )));
        }
        let key = load_or_create_key(&path)?;
        let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&key));
        let wrong_key = || {
            backend(format!(
                "the secret key {} is not the key the stored values were encrypted with                  (the key check failed): restore the original file",
                path.display()
            ))
        };
        // With no stored values a missing key is simply new: the old check is void.
        let check = stored_rows
            .iter()
            .find(|(name, ..)| name == KEY_CHECK_ROW)
            .filter(|_| !key_is_missing);
        match check {
            Some((_, nonce, ciphertext)) => {
                if decrypt(&cipher, KEY_CHECK_ROW, nonce, ciphertext).as_deref()
                    != Some(KEY_CHECK_TEXT)
                {
                    return Err(wrong_key());
                }
            }
            None => {
                // A data directory from before key checks: the key must still open what
                // is stored before it is vouched for.
                let value_row = stored_rows.iter().find(|(name, ..)| name != KEY_CHECK_ROW);
                if let Some((name, nonce, ciphertext)) = value_row {
                    if decrypt(&cipher, name, nonce, ciphertext).is_none() {
                        return Err(wrong_key());
                    }
                }
                let (nonce, ciphertext) = encrypt(&cipher, KEY_CHECK_ROW, KEY_CHECK_TEXT)?;
                self.store_row(KEY_CHECK_ROW, &nonce, &ciphertext).await?;
            }
        }
        // A concurrent first use loaded the same file: either instance will do.
        let _ = self.shared.cipher.set(cipher);
        Ok(self.shared.cipher.get().expect("cipher was just set"))
    }

    /// Loads the key and checks it against the database now, so that a missing or
    /// replaced `secret.key` stops a command at its start with a clear error rather
    /// than failing runs later.
    /// Without a key file and without stored values there is nothing to check (the key
    /// is created on first use).
    pub async fn check_key(&self) -> Result<(), SecretError> {
        let key_exists = self.shared.data_dir.join(SECRET_KEY_FILE).exists();
        if !key_exists && self.rows()?.iter().all(|(name, ..)| name == KEY_CHECK_ROW) {
            return Ok(());
        }
        self.cipher().await.map(|_| ())
    }

    /// Every stored row.
    fn rows(&self) -> Result<Vec<StoredRow>, SecretError> {
        self.shared
            .read(|conn| {
                conn.prepare_cached("SELECT configuration, nonce, ciphertext FROM secrets")?
                    .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
                    .collect()
            })
            .map_err(backend)
    }

    async fn store_row(
        &self,
        configuration: &str,
        nonce: &[u8],
        ciphertext: &[u8],
    ) -> Result<(), SecretError> {
        self.shared
            .write(|conn| {
                conn.prepare_cached(
                    "INSERT INTO secrets (configuration, nonce, ciphertext) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (configuration) DO UPDATE SET nonce = excluded.nonce, \
                     ciphertext = excluded.ciphertext",
                )?
                .execute(params![configuration, nonce, ciphertext])
            })
            .await
            .map_err(backend)?;
        Ok(())
    }
}

/// AES-256-GCM under a fresh random nonce, with the row name as associated data.
fn encrypt(
    cipher: &Aes256Gcm,
    configuration: &str,
    plaintext: &[u8],
) -> Result<(Vec<u8>, Vec<u8>), SecretError> {
    let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
    let ciphertext = cipher
        .encrypt(
            &nonce,
            Payload {
                msg: plaintext,
                aad: configuration.as_bytes(),
            },
        )
        .map_err(|_| backend("encryption failed"))?;
    Ok((nonce.to_vec(), ciphertext))
}

/// The plaintext of a row, or `None` when this key (or the row) is not the right one.
fn decrypt(
    cipher: &Aes256Gcm,
    configuration: &str,
    nonce: &[u8],
    ciphertext: &[u8],
) -> Option<Vec<u8>> {
    if nonce.len() != NONCE_LEN {
        return None;
    }
    cipher
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad: configuration.as_bytes(),
            },
        )
        .ok()
}

/// Reads the key file, or creates it. Creation writes a private temporary file
/// (`create_new`, mode 0600, fsynced) and hard-links it into place: the link fails if
/// another process won the race, and nobody ever reads a half-written key.
pub(crate) fn load_or_create_key(path: &Path) -> Result<Vec<u8>, SecretError> {
    match std::fs::read(path) {
        Ok(key) => return check_key(path, key),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(backend(format!("cannot read {}: {e}", path.display()))),
    }
    let key = Aes256Gcm::generate_key(OsRng);
    let dir = path.parent().unwrap_or(Path::new("."));
    let temp = dir.join(format!(
        ".{SECRET_KEY_FILE}.{}.{:016x}.tmp",
        std::process::id(),
        rand::random::<u64>()
    ));
    let write = || -> std::io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)?;
        file.write_all(key.as_slice())?;
        file.sync_all()
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&temp);
        return Err(backend(format!("cannot create {}: {e}", path.display())));
    }
    let linked = std::fs::hard_link(&temp, path);
    let _ = std::fs::remove_file(&temp);
    match linked {
        Ok(()) => {
            // Make the new directory entry durable: losing the key loses every secret.
            if let Ok(dir) = std::fs::File::open(dir) {
                let _ = dir.sync_all();
            }
            tracing::info!(path = %path.display(), "created a new secret key");
            Ok(key.to_vec())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let key = std::fs::read(path)
                .map_err(|e| backend(format!("cannot read {}: {e}", path.display())))?;
            check_key(path, key)
        }
        Err(e) => Err(backend(format!("cannot create {}: {e}", path.display()))),
    }
}

fn check_key(path: &Path, key: Vec<u8>) -> Result<Vec<u8>, SecretError> {
    if key.len() != KEY_LEN {
        return Err(backend(format!(
            "the secret key file {} holds {} bytes, expected {KEY_LEN}: it is not a sluice \
             key (restore the original, or remove it only if no secret was ever stored)",
            path.display(),
            key.len()
        )));
    }
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{:o}", meta.permissions().mode() & 0o777),
                "the secret key file is readable by other users; chmod 600 it"
            );
        }
    }
    Ok(key)
}

#[async_trait]
impl SecretStore for EmbeddedSecrets {
    /// Encrypts the whole map under a fresh random nonce. An empty map deletes the row.
    async fn put_secrets(
        &self,
        configuration: &str,
        values: &BTreeMap<String, Value>,
    ) -> Result<(), SecretError> {
        if values.is_empty() {
            return self.delete_secrets(configuration).await;
        }
        let cipher = self.cipher().await?;
        let plaintext = serde_json::to_vec(values).map_err(backend)?;
        let (nonce, ciphertext) = encrypt(cipher, configuration, &plaintext)?;
        drop(plaintext);
        self.store_row(configuration, &nonce, &ciphertext).await
    }

    async fn get_secrets(
        &self,
        configuration: &str,
    ) -> Result<BTreeMap<String, Value>, SecretError> {
        let row: Option<(Vec<u8>, Vec<u8>)> = self
            .shared
            .read(|conn| {
                conn.prepare_cached(
                    "SELECT nonce, ciphertext FROM secrets WHERE configuration = ?1",
                )?
                .query_row([configuration], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()
            })
            .map_err(backend)?;
        let Some((nonce, ciphertext)) = row else {
            return Ok(BTreeMap::new());
        };
        let decrypt_error = |reason: &str| SecretError::Decrypt {
            configuration: configuration.to_string(),
            reason: reason.to_string(),
        };
        if nonce.len() != NONCE_LEN {
            return Err(decrypt_error("the stored nonce is malformed"));
        }
        let plaintext = decrypt(self.cipher().await?, configuration, &nonce, &ciphertext)
            .ok_or_else(|| {
                decrypt_error(
                    "authentication failed: secret.key is not the key these values were \
                     encrypted with, or the stored data was altered",
                )
            })?;
        serde_json::from_slice(&plaintext)
            .map_err(|_| decrypt_error("the decrypted data is not a JSON object"))
    }

    async fn delete_secrets(&self, configuration: &str) -> Result<(), SecretError> {
        self.shared
            .write(|conn| {
                conn.prepare_cached("DELETE FROM secrets WHERE configuration = ?1")?
                    .execute([configuration])
            })
            .await
            .map_err(backend)?;
        Ok(())
    }
}
