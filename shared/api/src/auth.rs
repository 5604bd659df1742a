//! Authentication and roles (SPEC §6).
//!
//! Three ways in, each ending in an [`Identity`] with one [`Role`]:
//! - the administrator by HTTP Basic: `SLUICE_ADMIN_USER` (default `admin`) and a
//!   password kept only as an Argon2 hash ([`hash_password`]);
//! - bearer API tokens (`slc_…`, [`new_token`]), stored as their SHA-256 with a role;
//! - on AWS, JWTs already verified by API Gateway's JWT authorizer: the Lambda adapter
//!   inserts [`JwtClaims`] into the request's extensions and the role is the highest of
//!   the role bindings naming the user or one of its groups.
//!
//! API tokens are hashed with plain SHA-256, not a slow password hash: a token is 256
//! random bits, so neither guessing nor a precomputed table can recover it from its
//! hash, and a keyed hash lookup keeps every request at one store read.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine;
use rand::RngCore;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sluice_core::model::{OwnerType, Role};
use sluice_core::ports::AccessStore;

use crate::error::ApiError;
use crate::limits::{ApiClock, CallerLimiter};

/// Prefix of Sluice API tokens: tells them apart from JWTs at a glance.
pub const TOKEN_PREFIX: &str = "slc_";

/// Who made a request, as the handlers see it (a request extension).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Identity {
    /// The admin user name, the token name (`token:NAME`), or the JWT user name.
    pub name: String,
    pub role: Role,
    /// `basic`, `token` or `jwt`.
    pub method: &'static str,
}

/// Claims of a JWT that API Gateway's JWT authorizer has verified.
///
/// **For the AWS `api` function:** insert one into the request's extensions
/// (`request.extensions_mut().insert(JwtClaims { .. })`) before handing the request to
/// [`router`](crate::router); build it with [`JwtClaims::from_claims`] from
/// `requestContext.authorizer.jwt.claims`. The router trusts it as verified and never
/// looks at the bearer token itself. It can only come from the adapter: nothing a
/// client sends becomes a request extension.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JwtClaims {
    pub username: String,
    pub groups: Vec<String>,
}

impl JwtClaims {
    /// Reads the user name and groups from a claims object. API Gateway passes array
    /// claims flattened to a string (`"[admins ops]"`); plain arrays and comma- or
    /// space-separated strings work too.
    pub fn from_claims(claims: &Value, username_claim: &str, groups_claim: &str) -> Option<Self> {
        let username = claims.get(username_claim)?.as_str()?.to_string();
        let groups = match claims.get(groups_claim) {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
            Some(Value::String(text)) => text
                .trim_start_matches('[')
                .trim_end_matches(']')
                .split([',', ' '])
                .map(|g| g.trim().trim_matches('"'))
                .filter(|g| !g.is_empty())
                .map(str::to_string)
                .collect(),
            _ => Vec::new(),
        };
        Some(Self { username, groups })
    }
}

/// The administrator's credentials.
#[derive(Clone, Default)]
pub struct AdminCredentials {
    pub user: String,
    /// Argon2 PHC string; `None` disables Basic authentication.
    pub password_hash: Option<String>,
}

impl std::fmt::Debug for AdminCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminCredentials")
            .field("user", &self.user)
            .field(
                "password_hash",
                &self.password_hash.as_ref().map(|_| "<argon2>"),
            )
            .finish()
    }
}

/// How long a verified Basic credential is remembered (by its SHA-256) so that Argon2,
/// deliberately slow, runs once per client rather than once per request.
const VERIFIED_TTL: Duration = Duration::from_secs(300);

/// Password verifications (Argon2, deliberately slow) one caller may start: a burst of
/// [`VERIFY_BURST`], then one every [`VERIFY_EVERY`]. A correct password is verified once
/// per [`VERIFIED_TTL`], so only guessing ever meets this bound.
const VERIFY_BURST: u32 = 10;
const VERIFY_EVERY: Duration = Duration::from_secs(6);

/// Argon2 verifications running at once, on threads of their own: half the cores (1 to
/// 4), so a flood of wrong passwords queues here instead of occupying the async workers
/// and every core (and everyone else).
fn concurrent_verifications() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores / 2).clamp(1, 4)
}

/// A password verification for the [`VerifierPool`]; its permit is released when the
/// verification ends, even if the request waiting for it went away.
struct VerifyJob {
    password: String,
    phc: String,
    answer: tokio::sync::oneshot::Sender<bool>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

/// Argon2 off the async workers, at most [`concurrent_verifications`] at once, and always
/// on the same few threads: each verification allocates its memory cost (19 MiB by
/// default), which the allocator then reuses, instead of keeping a fresh arena's worth
/// per blocking-pool thread for good. The threads end with the pool.
struct VerifierPool {
    jobs: std::sync::mpsc::Sender<VerifyJob>,
    permits: Arc<tokio::sync::Semaphore>,
}

impl VerifierPool {
    fn new(threads: usize) -> Self {
        let (jobs, queue) = std::sync::mpsc::channel::<VerifyJob>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..threads {
            let queue = queue.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("sluice-argon2-{i}"))
                .spawn(move || {
                    let mut memory = Vec::new();
                    loop {
                        let job = queue.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        let Ok(job) = job else { break };
                        let matches = verify_with_memory(&job.password, &job.phc, &mut memory);
                        let _ = job.answer.send(matches);
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a password verification thread");
            }
        }
        Self {
            jobs,
            permits: Arc::new(tokio::sync::Semaphore::new(threads.max(1))),
        }
    }

    /// Whether `password` matches `phc`; `false` if no verifier thread is running.
    async fn verify(&self, password: &str, phc: &str) -> bool {
        let Ok(permit) = self.permits.clone().acquire_owned().await else {
            return false;
        };
        let (answer, answered) = tokio::sync::oneshot::channel();
        let job = VerifyJob {
            password: password.to_string(),
            phc: phc.to_string(),
            answer,
            _permit: permit,
        };
        if self.jobs.send(job).is_err() {
            return false;
        }
        answered.await.unwrap_or(false)
    }
}

/// Authenticates requests and resolves their role.
pub struct Authenticator {
    pub admin: AdminCredentials,
    verified: Mutex<HashMap<[u8; 32], Instant>>,
    /// An Argon2 hash (with the admin hash's parameters) of a random password: a wrong
    /// user name is verified against it, so it costs exactly what a wrong password
    /// costs and the answer time does not reveal the administrator's name.
    dummy_hash: Option<String>,
    verifications: CallerLimiter,
    verifiers: VerifierPool,
    verified_count: AtomicU64,
}

impl Authenticator {
    pub fn new(admin: AdminCredentials) -> Self {
        Self::with_clock(admin, ApiClock::system())
    }

    /// Like [`Authenticator::new`], with the clock of the per-caller verification bound.
    pub fn with_clock(admin: AdminCredentials, clock: ApiClock) -> Self {
        let dummy_hash = admin.password_hash.as_deref().and_then(dummy_hash_like);
        let quota = governor::Quota::with_period(VERIFY_EVERY)
            .expect("a non-zero period")
            .allow_burst(std::num::NonZeroU32::new(VERIFY_BURST).expect("non-zero"));
        Self {
            admin,
            verified: Mutex::default(),
            dummy_hash,
            verifications: CallerLimiter::new(quota, clock),
            verifiers: VerifierPool::new(concurrent_verifications()),
            verified_count: AtomicU64::new(0),
        }
    }

    /// Argon2 verifications run so far (right or wrong user name alike).
    pub fn verifications(&self) -> u64 {
        self.verified_count.load(Ordering::Relaxed)
    }

    /// Verifies a password on the verifier threads (see [`VerifierPool`]).
    async fn verify_off_the_workers(&self, password: &str, phc: &str) -> bool {
        self.verified_count.fetch_add(1, Ordering::Relaxed);
        self.verifiers.verify(password, phc).await
    }

    /// The identity of a request from its `Authorization` header and JWT claims.
    ///
    /// `caller` names who is asking (e.g. the client address with the credential's
    /// name): password verifications are bounded per caller.
    pub async fn identify(
        &self,
        authorization: Option<&str>,
        claims: Option<&JwtClaims>,
        access: &dyn AccessStore,
        caller: &str,
    ) -> Result<Identity, ApiError> {
        if let Some(claims) = claims {
            return self.identify_jwt(claims, access).await;
        }
        let header = authorization.ok_or_else(|| {
            ApiError::unauthorized(
                "authentication required: HTTP Basic (administrator) or a bearer token",
            )
        })?;
        let (scheme, credentials) = header.split_once(' ').unwrap_or((header, ""));
        let credentials = credentials.trim();
        if scheme.eq_ignore_ascii_case("basic") {
            self.identify_basic(credentials, caller).await
        } else if scheme.eq_ignore_ascii_case("bearer") {
            if !credentials.starts_with(TOKEN_PREFIX) {
                return Err(ApiError::unauthorized(
                    "unknown bearer token (JWTs are accepted only behind the AWS API Gateway authorizer)",
                ));
            }
            let token = access
                .token_by_hash(&token_hash(credentials))
                .await?
                .ok_or_else(|| ApiError::unauthorized("invalid or revoked API token"))?;
            Ok(Identity {
                name: format!("token:{}", token.name),
                role: token.role,
                method: "token",
            })
        } else {
            Err(ApiError::unauthorized(format!(
                "unsupported authorization scheme \"{scheme}\" (use Basic or Bearer)"
            )))
        }
    }

    async fn identify_basic(&self, credentials: &str, caller: &str) -> Result<Identity, ApiError> {
        let bad = || ApiError::unauthorized("invalid user name or password");
        let (Some(hash), Some(dummy)) = (
            self.admin.password_hash.as_deref(),
            self.dummy_hash.as_deref(),
        ) else {
            return Err(ApiError::unauthorized(
                "Basic authentication is disabled: no SLUICE_ADMIN_PASSWORD is set",
            ));
        };
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(credentials)
            .map_err(|_| bad())?;
        let text = String::from_utf8(decoded).map_err(|_| bad())?;
        let (user, password) = text.split_once(':').ok_or_else(bad)?;
        let right_user = user == self.admin.user;
        let fingerprint: [u8; 32] = Sha256::digest(format!("{hash}\0{password}")).into();
        let now = Instant::now();
        let known = right_user && {
            let verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
            verified
                .get(&fingerprint)
                .is_some_and(|at| now.duration_since(*at) < VERIFIED_TTL)
        };
        if !known {
            if let Err(wait) = self.verifications.check(caller) {
                return Err(ApiError::too_many_requests(
                    "too many password attempts; retry later",
                    wait,
                ));
            }
            let against = if right_user { hash } else { dummy };
            let matches = self.verify_off_the_workers(password, against).await;
            if !(matches && right_user) {
                return Err(bad());
            }
            let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
            if verified.len() > 1000 {
                verified.clear();
            }
            verified.insert(fingerprint, now);
        }
        Ok(Identity {
            name: user.to_string(),
            role: Role::Administrator,
            method: "basic",
        })
    }

    async fn identify_jwt(
        &self,
        claims: &JwtClaims,
        access: &dyn AccessStore,
    ) -> Result<Identity, ApiError> {
        let bindings = access.list_bindings().await?;
        let role = bindings
            .iter()
            .filter(|b| match b.owner_type {
                OwnerType::User => b.owner == claims.username,
                OwnerType::Group => claims.groups.contains(&b.owner),
            })
            .map(|b| b.role)
            .max()
            .ok_or_else(|| {
                ApiError::forbidden(format!(
                    "no role is bound to user \"{}\" or its groups",
                    claims.username
                ))
            })?;
        Ok(Identity {
            name: claims.username.clone(),
            role,
            method: "jwt",
        })
    }
}

/// The name of the credential in an `Authorization` header, for telling callers apart
/// (never the secret part): `token:` and a prefix of the token's hash, or `user:` and the
/// Basic user name.
pub fn credential_name(header: &str) -> Option<String> {
    let (scheme, credentials) = header.split_once(' ')?;
    let credentials = credentials.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        Some(format!("token:{}", &token_hash(credentials)[..16]))
    } else if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(credentials)
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (user, _) = text.split_once(':')?;
        Some(format!("user:{user}"))
    } else {
        None
    }
}

/// A new API token: `slc_` and 256 random bits, base64url. Shown once; store only
/// [`token_hash`] of it.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// Lowercase hex SHA-256 of a token.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Argon2id PHC string of a password (random salt).
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// An Argon2 hash of a random password with the parameters (algorithm, version, costs)
/// of `phc`, so that verifying against it takes as long as verifying against `phc`.
fn dummy_hash_like(phc: &str) -> Option<String> {
    let parsed = PasswordHash::new(phc).ok()?;
    let algorithm = argon2::Algorithm::try_from(parsed.algorithm).ok()?;
    let version = parsed
        .version
        .and_then(|v| argon2::Version::try_from(v).ok())
        .unwrap_or_default();
    let params = argon2::Params::try_from(&parsed).ok()?;
    let mut random = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut random);
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Argon2::new(algorithm, version, params)
        .hash_password(&random, &salt)
        .map(|h| h.to_string())
        .ok()
}

/// [`verify_password`] in `memory`, the Argon2 working memory, grown to the hash's memory
/// cost once and then reused: the allocator does not reliably reuse a freed buffer of
/// that size, so allocating it per verification made the process grow by the memory cost
/// with every wrong password.
fn verify_with_memory(password: &str, phc: &str, memory: &mut Vec<argon2::Block>) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return false;
    };
    let Ok(algorithm) = argon2::Algorithm::try_from(parsed.algorithm) else {
        return false;
    };
    let version = match parsed.version.map(argon2::Version::try_from) {
        None => argon2::Version::default(),
        Some(Ok(version)) => version,
        Some(Err(_)) => return false,
    };
    let Ok(params) = argon2::Params::try_from(&parsed) else {
        return false;
    };
    let mut salt_bytes = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    memory.resize(params.block_count(), argon2::Block::default());
    let mut computed = vec![0u8; expected.len()];
    let hashed = Argon2::new(algorithm, version, params).hash_password_into_with_memory(
        password.as_bytes(),
        salt,
        &mut computed,
        &mut memory[..],
    );
    // `Output` compares in constant time.
    hashed.is_ok()
        && argon2::password_hash::Output::new(&computed).is_ok_and(|computed| computed == expected)
}

/// Whether `password` matches an Argon2 PHC string (constant-time comparison inside).
pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// Whether `text` is an Argon2 PHC string (for `SLUICE_ADMIN_PASSWORD_HASH`).
pub fn is_password_hash(text: &str) -> bool {
    PasswordHash::new(text).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn passwords_and_tokens() {
        let phc = hash_password("s3cret").unwrap();
        assert!(phc.starts_with("$argon2"));
        assert!(verify_password("s3cret", &phc));
        assert!(!verify_password("S3cret", &phc));
        assert!(is_password_hash(&phc) && !is_password_hash("s3cret"));
        let a = new_token();
        assert!(a.starts_with(TOKEN_PREFIX) && a.len() > 40);
        assert_ne!(a, new_token());
        assert_eq!(token_hash(&a).len(), 64);
    }

    #[test]
    fn verification_in_reused_memory_agrees_with_argon2() {
        let mut memory = Vec::new();
        let phc = hash_password("s3cret").unwrap();
        assert!(verify_with_memory("s3cret", &phc, &mut memory));
        assert!(!verify_with_memory("S3cret", &phc, &mut memory));
        let capacity = memory.capacity();
        assert!(verify_with_memory("s3cret", &phc, &mut memory));
        assert_eq!(memory.capacity(), capacity, "the memory is reused");
        let dummy = dummy_hash_like(&phc).unwrap();
        assert!(!verify_with_memory("s3cret", &dummy, &mut memory));
        assert!(!verify_with_memory("s3cret", "not a hash", &mut memory));
    }

    #[test]
    fn claims_from_api_gateway() {
        let claims = json!({"sub": "u1", "username": "alice", "cognito:groups": "[admins ops]"});
        let c = JwtClaims::from_claims(&claims, "username", "cognito:groups").unwrap();
        assert_eq!(c.username, "alice");
        assert_eq!(c.groups, vec!["admins", "ops"]);
        let c = JwtClaims::from_claims(&json!({"sub": "bob", "groups": ["x"]}), "sub", "groups")
            .unwrap();
        assert_eq!(c.groups, vec!["x"]);
        assert!(JwtClaims::from_claims(&json!({}), "sub", "groups").is_none());
    }
}

#[cfg(test)]
mod identify_tests {
    use super::*;
    use sluice_core::model::{ApiToken, RoleBinding};
    use sluice_core::ports::StoreError;

    /// An access store holding fixed bindings and one token.
    struct Fixed {
        bindings: Vec<RoleBinding>,
        token: ApiToken,
    }

    #[async_trait::async_trait]
    impl AccessStore for Fixed {
        async fn create_token(&self, _: &ApiToken) -> Result<bool, StoreError> {
            Ok(false)
        }
        async fn token_by_hash(&self, hash: &str) -> Result<Option<ApiToken>, StoreError> {
            Ok((hash == self.token.hash).then(|| self.token.clone()))
        }
        async fn list_tokens(&self) -> Result<Vec<ApiToken>, StoreError> {
            Ok(vec![self.token.clone()])
        }
        async fn delete_token(&self, _: &str) -> Result<bool, StoreError> {
            Ok(false)
        }
        async fn put_binding(&self, _: &RoleBinding) -> Result<(), StoreError> {
            Ok(())
        }
        async fn list_bindings(&self) -> Result<Vec<RoleBinding>, StoreError> {
            Ok(self.bindings.clone())
        }
        async fn delete_binding(&self, _: OwnerType, _: &str) -> Result<bool, StoreError> {
            Ok(false)
        }
    }

    fn binding(owner: &str, owner_type: OwnerType, role: Role) -> RoleBinding {
        RoleBinding {
            owner: owner.into(),
            owner_type,
            role,
        }
    }

    #[tokio::test]
    async fn jwt_claims_map_to_the_highest_bound_role() {
        let token = new_token();
        let store = Fixed {
            bindings: vec![
                binding("alice", OwnerType::User, Role::Execute),
                binding("devs", OwnerType::Group, Role::Developer),
                binding("viewers", OwnerType::Group, Role::View),
            ],
            token: ApiToken {
                name: "ci".into(),
                role: Role::Configuration,
                hash: token_hash(&token),
                created_at: chrono::Utc::now(),
            },
        };
        let auth = Authenticator::new(AdminCredentials {
            user: "admin".into(),
            password_hash: Some(hash_password("pw").unwrap()),
        });
        let claims = |user: &str, groups: &[&str]| JwtClaims {
            username: user.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        };
        let id = auth
            .identify(
                None,
                Some(&claims("alice", &["viewers", "devs"])),
                &store,
                "test",
            )
            .await
            .unwrap();
        assert_eq!((id.role, id.method), (Role::Developer, "jwt"));
        let id = auth
            .identify(None, Some(&claims("alice", &[])), &store, "test")
            .await
            .unwrap();
        assert_eq!(id.role, Role::Execute);
        let id = auth
            .identify(None, Some(&claims("bob", &["viewers"])), &store, "test")
            .await
            .unwrap();
        assert_eq!(id.role, Role::View);
        let e = auth
            .identify(None, Some(&claims("mallory", &["nobody"])), &store, "test")
            .await
            .unwrap_err();
        assert_eq!(e.status.as_u16(), 403);

        let id = auth
            .identify(Some(&format!("Bearer {token}")), None, &store, "test")
            .await
            .unwrap();
        assert_eq!(
            (id.role, id.name.as_str()),
            (Role::Configuration, "token:ci")
        );
        assert_eq!(
            auth.identify(Some("Bearer slc_wrong"), None, &store, "test")
                .await
                .unwrap_err()
                .status
                .as_u16(),
            401
        );
        assert_eq!(
            auth.identify(Some("Bearer eyJhbGciOi.jwt.x"), None, &store, "test")
                .await
                .unwrap_err()
                .status
                .as_u16(),
            401
        );
        let basic = |u: &str, p: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        };
        assert_eq!(
            auth.identify(Some(&basic("admin", "pw")), None, &store, "test")
                .await
                .unwrap()
                .role,
            Role::Administrator
        );
        // The second time comes from the verified cache; a wrong password never does.
        assert!(auth
            .identify(Some(&basic("admin", "pw")), None, &store, "test")
            .await
            .is_ok());
        assert!(auth
            .identify(Some(&basic("admin", "pW")), None, &store, "test")
            .await
            .is_err());
        assert!(auth
            .identify(Some(&basic("root", "pw")), None, &store, "test")
            .await
            .is_err());
        assert_eq!(
            auth.identify(None, None, &store, "test")
                .await
                .unwrap_err()
                .status
                .as_u16(),
            401
        );
    }
}
