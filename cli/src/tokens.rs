//! `sluice tokens create NAME --role ROLE | list | revoke NAME`: API tokens, on the data
//! directory (or, with `--endpoint`, through the server's `/api/v1/tokens`).
//!
//! The token is printed once, alone on stdout (so `TOKEN=$(sluice tokens create …)`
//! works); only its SHA-256 is stored.

use std::path::Path;

use clap::Subcommand;
use serde_json::Value;
use sluice_core::model::Role;
use sluice_embedded::EmbeddedStore;

use crate::client::Client;
use crate::InvalidInput;

#[derive(Subcommand)]
pub enum TokensCommand {
    /// Create a token with a role; it is shown once.
    Create {
        name: String,
        /// view, execute, configuration, developer or administrator.
        #[arg(long)]
        role: String,
    },
    /// Token names, roles and creation times (never the tokens).
    List,
    /// Revoke a token.
    Revoke { name: String },
}

fn parse_role(role: &str) -> anyhow::Result<Role> {
    role.parse::<Role>()
        .map_err(|e| InvalidInput(format!("--role: {e}")).into())
}

fn print_list(tokens: &[Value]) {
    for t in tokens {
        println!(
            "{:<32} {:<14} {}",
            t["name"].as_str().unwrap_or(""),
            t["role"].as_str().unwrap_or(""),
            t["created_at"].as_str().unwrap_or("")
        );
    }
}

fn print_created(name: &str, role: &str, token: &str) {
    eprintln!("Created token {name} (role {role}). Store it now: it is not shown again.");
    println!("{token}");
}

/// On the data directory.
pub async fn local(data_dir: &Path, cmd: TokensCommand) -> anyhow::Result<u8> {
    let store = EmbeddedStore::open(data_dir)?;
    let access = store.access();
    match cmd {
        TokensCommand::Create { name, role } => {
            let role = parse_role(&role)?;
            let (record, token) = sluice_api::create_api_token(access.as_ref(), &name, role)
                .await
                .map_err(crate::client::api_error)?;
            print_created(&record.name, record.role.as_str(), &token);
        }
        TokensCommand::List => {
            let tokens: Vec<Value> = access
                .list_tokens()
                .await?
                .iter()
                .map(|t| serde_json::json!({"name": t.name, "role": t.role, "created_at": sluice_core::task::rfc3339(&t.created_at)}))
                .collect();
            print_list(&tokens);
        }
        TokensCommand::Revoke { name } => {
            if !access.delete_token(&name).await? {
                return Err(InvalidInput(format!("token \"{name}\" not found")).into());
            }
            println!("Revoked token {name}");
        }
    }
    Ok(0)
}

/// Through a server.
pub async fn remote(client: &Client, cmd: TokensCommand) -> anyhow::Result<u8> {
    match cmd {
        TokensCommand::Create { name, role } => {
            let role = parse_role(&role)?;
            let doc = client
                .post(
                    "/api/v1/tokens",
                    &serde_json::json!({"name": name, "role": role}),
                )
                .await?;
            print_created(
                doc["name"].as_str().unwrap_or(""),
                doc["role"].as_str().unwrap_or(""),
                doc["token"].as_str().unwrap_or(""),
            );
        }
        TokensCommand::List => {
            let doc = client.get("/api/v1/tokens").await?;
            print_list(doc.as_array().map(Vec::as_slice).unwrap_or_default());
        }
        TokensCommand::Revoke { name } => {
            client
                .delete(&format!("/api/v1/tokens/{}", crate::client::segment(&name)))
                .await?;
            println!("Revoked token {name}");
        }
    }
    Ok(0)
}
