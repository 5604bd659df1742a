//! `sluice tokens create NAME --role ROLE | list | revoke NAME`: API tokens, through
//! `/api/v1/tokens` (a server's with `--endpoint`, else in process on the data directory).
//!
//! The token is printed once, alone on stdout (so `TOKEN=$(sluice tokens create …)`
//! works); only its SHA-256 is stored.

use clap::Subcommand;
use sluice_api::documents::{NewToken, Token};
use sluice_core::model::Role;
use sluice_core::task::rfc3339;

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

fn print_list(tokens: &[Token]) {
    for t in tokens {
        println!(
            "{:<32} {:<14} {}",
            t.name,
            t.role.as_str(),
            rfc3339(&t.created_at)
        );
    }
}

fn print_created(name: &str, role: &str, token: &str) {
    eprintln!("Created token {name} (role {role}). Store it now: it is not shown again.");
    println!("{token}");
}

/// Through the API (a server's with `--endpoint`, else in process on the data directory).
pub async fn run(client: &Client, cmd: TokensCommand) -> anyhow::Result<u8> {
    match cmd {
        TokensCommand::Create { name, role } => {
            let role = parse_role(&role)?;
            let created: NewToken = client
                .post_as(
                    "/api/v1/tokens",
                    &serde_json::json!({"name": name, "role": role}),
                )
                .await?;
            print_created(
                &created.record.name,
                created.record.role.as_str(),
                &created.token,
            );
        }
        TokensCommand::List => {
            let tokens: Vec<Token> = client.get_as("/api/v1/tokens").await?;
            print_list(&tokens);
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
