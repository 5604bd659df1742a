//! [`SecretsManagerStore`]: encrypted configuration values, one Secrets Manager secret per
//! configuration holding a JSON object of its encrypted values (encrypted at rest with
//! KMS by Secrets Manager). Read only when a step needs a value; the runtime caches the
//! decrypted map for a short while (`RuntimeConfig::secret_ttl`).

use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_sdk_secretsmanager::Client;
use serde_json::Value;
use sluice_core::ports::{SecretError, SecretStore};

use crate::error::secret as secret_error;

#[derive(Clone, Debug)]
pub struct SecretsManagerStore {
    client: Client,
    prefix: String,
}

impl SecretsManagerStore {
    /// Secrets are named `<prefix><configuration>`.
    pub fn new(client: Client, prefix: impl Into<String>) -> Self {
        Self {
            client,
            prefix: prefix.into(),
        }
    }

    fn name(&self, configuration: &str) -> String {
        format!("{}{configuration}", self.prefix)
    }
}

fn not_found<E: aws_sdk_secretsmanager::error::ProvideErrorMetadata>(
    e: &aws_sdk_secretsmanager::error::SdkError<E>,
) -> bool {
    e.as_service_error()
        .and_then(|se| se.code())
        .is_some_and(|c| c == "ResourceNotFoundException")
}

#[async_trait]
impl SecretStore for SecretsManagerStore {
    async fn put_secrets(
        &self,
        configuration: &str,
        values: &BTreeMap<String, Value>,
    ) -> Result<(), SecretError> {
        let name = self.name(configuration);
        let text =
            serde_json::to_string(values).map_err(|e| SecretError::Backend(e.to_string()))?;
        let put = self
            .client
            .put_secret_value()
            .secret_id(&name)
            .secret_string(&text)
            .send()
            .await;
        match put {
            Ok(_) => Ok(()),
            Err(e) if not_found(&e) => {
                self.client
                    .create_secret()
                    .name(&name)
                    .description(format!(
                        "Encrypted values of the Sluice configuration \"{configuration}\""
                    ))
                    .secret_string(&text)
                    .send()
                    .await
                    .map_err(|e| secret_error("CreateSecret", e))?;
                Ok(())
            }
            Err(e) => Err(secret_error("PutSecretValue", e)),
        }
    }

    async fn get_secrets(
        &self,
        configuration: &str,
    ) -> Result<BTreeMap<String, Value>, SecretError> {
        let result = self
            .client
            .get_secret_value()
            .secret_id(self.name(configuration))
            .send()
            .await;
        match result {
            Ok(out) => {
                let text = out.secret_string().unwrap_or("{}");
                serde_json::from_str(text).map_err(|e| SecretError::Decrypt {
                    configuration: configuration.to_string(),
                    reason: format!("the secret is not a JSON object of values ({e})"),
                })
            }
            Err(e) if not_found(&e) => Ok(BTreeMap::new()),
            Err(e) => Err(secret_error("GetSecretValue", e)),
        }
    }

    /// Deleted without a recovery window, so a configuration of the same name can be
    /// created again at once.
    async fn delete_secrets(&self, configuration: &str) -> Result<(), SecretError> {
        let result = self
            .client
            .delete_secret()
            .secret_id(self.name(configuration))
            .force_delete_without_recovery(true)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            Err(e) => Err(secret_error("DeleteSecret", e)),
        }
    }
}
