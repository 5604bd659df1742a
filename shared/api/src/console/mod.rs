//! The web console: a few static files (plain JavaScript modules and CSS, no build step)
//! embedded in the binary, served at `/`, `/console/…` and PowerFlow's deep link
//! `/integrations/<app>?runid=<id>`, and the endpoints made for it: `whoami` (which
//! actions to show), `GET /api/v1/dashboard` (queue depths and workers) and
//! `POST /api/v1/validate/application` (the Builder's check of an application as it is
//! typed).
//!
//! The pages are public (they hold no data); everything they show comes from the API with
//! the credential the user signed in with, which the browser keeps in `sessionStorage`
//! and sends as the `Authorization` header. There is no server-side session: the API
//! stays the only enforcer.

use axum::extract::Path;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde_json::{json, Value};

use crate::auth::Identity;
use crate::error::ApiError;

pub(crate) mod dashboard;
pub(crate) mod validate;

/// The console's Content-Security-Policy: its own scripts, styles and API only; no
/// inline script, no framing.
pub const CONTENT_SECURITY_POLICY_VALUE: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const INDEX: &str = include_str!("../../console/index.html");

/// Every file under `/console/assets/`.
const ASSETS: &[Asset] = &[
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../console/app.js"),
    },
    Asset {
        name: "api.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../console/api.js"),
    },
    Asset {
        name: "dag.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../console/dag.js"),
    },
    // Graph layout, vendored unmodified from npm (@dagrejs/dagre 3.1.3, MIT; its licence
    // is console/vendor/dagre.LICENSE.txt): no JavaScript build step.
    Asset {
        name: "dagre.esm.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../console/vendor/dagre.esm.js"),
    },
    Asset {
        name: "dom.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../console/dom.js"),
    },
    Asset {
        name: "customrun.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../console/customrun.js"),
    },
    Asset {
        name: "configs.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../console/configs.js"),
    },
    Asset {
        name: "schedules.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../console/schedules.js"),
    },
    Asset {
        name: "runs.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../console/runs.js"),
    },
    Asset {
        name: "dashboard.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../console/dashboard.js"),
    },
    Asset {
        name: "builder.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../console/builder.js"),
    },
    Asset {
        name: "schemaform.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../console/schemaform.js"),
    },
    Asset {
        name: "style.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../../console/style.css"),
    },
    Asset {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        body: include_str!("../../console/favicon.svg"),
    },
];

/// The console's routes. They are public and not in [`crate::ROUTES`] (the API's route
/// table, whose every entry is an API operation): the router adds them outside the
/// authorization layer.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(page))
        .route("/console", get(page))
        .route("/console/assets/{file}", get(asset))
        .route("/console/{*path}", get(page))
        .route("/integrations/{app}", get(page))
}

/// The single page; the script reads the path and shows the page it names.
async fn page() -> Response {
    with_headers(StatusCode::OK, "text/html; charset=utf-8", INDEX)
}

async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|a| a.name == file) {
        Some(asset) => with_headers(StatusCode::OK, asset.content_type, asset.body),
        None => ApiError::not_found(format!("no console asset \"{file}\"")).into_response(),
    }
}

fn with_headers(status: StatusCode, content_type: &'static str, body: &'static str) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY_VALUE),
    );
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    // Unversioned file names: revalidate, so an upgraded server is seen at once.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// `GET /api/v1/whoami`: the caller's name, role and how it signed in, so that the console
/// shows only what that role may do.
pub(crate) async fn whoami(Extension(identity): Extension<Identity>) -> Json<Value> {
    Json(json!({
        "name": identity.name,
        "role": identity.role.as_str(),
        "method": identity.method,
    }))
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    /// The vendored layout library is the file npm publishes, byte for byte
    /// (`npm pack @dagrejs/dagre@3.1.3`, `package/dist/dagre.esm.js`): updating it is
    /// replacing the file and this hash, never editing it.
    #[test]
    fn the_vendored_dagre_is_the_published_file() {
        let digest = Sha256::digest(include_bytes!("../../console/vendor/dagre.esm.js"));
        assert_eq!(
            hex::encode(digest),
            "b0ddaf4af1417bec9bd89373a3a3987f081727d6cc6d95fc40dbf85a19bdf3b0"
        );
    }
}
