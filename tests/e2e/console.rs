//! The web console in a real browser: headless Chromium driven over WebDriver
//! (ChromeDriver, started by `scripts/start-chromedriver.sh`, which exports
//! `SLUICE_TEST_WEBDRIVER_URL`), against a `sluice serve`.
//!
//! The WebDriver client is a few plain W3C WebDriver calls over reqwest, which the suite
//! already builds: a WebDriver crate would add its own HTTP stack to compile for the
//! handful of commands used here.
//!
//! With `SLUICE_UPDATE_SCREENSHOTS=1` the tests save the main pages into docs/console/.

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};

use crate::support::{repo, Auth, Behaviour, Scratch, Serve, TestServer};

/// How long the page may take to show what a test waits for.
const UI_TIMEOUT: Duration = Duration::from_secs(30);

/// A WebDriver session of headless Chromium.
struct Browser {
    http: reqwest::Client,
    session: String,
}

impl Browser {
    async fn start() -> Self {
        let driver = std::env::var("SLUICE_TEST_WEBDRIVER_URL").expect(
            "SLUICE_TEST_WEBDRIVER_URL is not set: start ChromeDriver with \
             `eval \"$(scripts/start-chromedriver.sh)\"` (Debian packages chromium, chromium-driver)",
        );
        let mut options = json!({"args": [
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--window-size=1280,900", "--lang=en-US",
        ]});
        if let Ok(binary) = std::env::var("SLUICE_TEST_CHROMIUM") {
            options["binary"] = json!(binary);
        }
        let http = reqwest::Client::new();
        let answer: Value = http
            .post(format!("{driver}/session"))
            .json(&json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome", "goog:chromeOptions": options,
            }}}))
            .send()
            .await
            .expect("ChromeDriver does not answer at SLUICE_TEST_WEBDRIVER_URL")
            .json()
            .await
            .unwrap();
        let session = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {answer}"))
            .to_string();
        Self {
            http,
            session: format!("{driver}/session/{session}"),
        }
    }

    /// One WebDriver command; its `value`, or `Err` with the WebDriver error.
    async fn command(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, Value> {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.http.request(method, format!("{}{path}", self.session));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request.send().await.unwrap().json().await.unwrap();
        match answer["value"].get("error") {
            Some(_) => Err(answer["value"].clone()),
            None => Ok(answer["value"].clone()),
        }
    }

    async fn goto(&self, url: &str) {
        self.command("POST", "/url", Some(json!({"url": url})))
            .await
            .unwrap();
    }

    async fn script(&self, script: &str) -> Value {
        self.command(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
        .unwrap()
    }

    /// The element matching `css`, waiting for it to appear.
    async fn find(&self, css: &str) -> String {
        let mut last = Value::Null;
        let deadline = tokio::time::Instant::now() + UI_TIMEOUT;
        while tokio::time::Instant::now() < deadline {
            match self
                .command(
                    "POST",
                    "/element",
                    Some(json!({"using": "css selector", "value": css})),
                )
                .await
            {
                Ok(found) => {
                    return found
                        .as_object()
                        .and_then(|o| o.values().next())
                        .and_then(Value::as_str)
                        .unwrap()
                        .to_string()
                }
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "no element {css} in the page: {last}\n{}",
            self.body_text().await
        );
    }

    async fn click(&self, css: &str) {
        let element = self.find(css).await;
        self.command(
            "POST",
            &format!("/element/{element}/click"),
            Some(json!({})),
        )
        .await
        .unwrap_or_else(|e| panic!("clicking {css}: {e}"));
    }

    async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        self.command(
            "POST",
            &format!("/element/{element}/value"),
            Some(json!({"text": text})),
        )
        .await
        .unwrap();
    }

    async fn text(&self, css: &str) -> String {
        let element = self.find(css).await;
        let text = self
            .command("GET", &format!("/element/{element}/text"), None)
            .await
            .unwrap_or_default();
        text.as_str().unwrap_or("").to_string()
    }

    async fn body_text(&self) -> String {
        self.script("return document.body.innerText;")
            .await
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    async fn present(&self, css: &str) -> bool {
        self.command(
            "POST",
            "/elements",
            Some(json!({"using": "css selector", "value": css})),
        )
        .await
        .map(|v| v.as_array().is_some_and(|a| !a.is_empty()))
        .unwrap_or(false)
    }

    /// Waits until `script` (a JavaScript expression) is true in the page.
    async fn wait_until(&self, what: &str, expression: &str) {
        let script = format!("return !!({expression});");
        let deadline = tokio::time::Instant::now() + UI_TIMEOUT;
        while tokio::time::Instant::now() < deadline {
            if self.script(&script).await == json!(true) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the page never showed {what}:\n{}", self.body_text().await);
    }

    /// The state a DAG node shows.
    async fn node_state(&self, step: &str) -> String {
        self.script(&format!(
            "const g = document.querySelector('g.node[data-step=\"{step}\"]'); return g ? g.dataset.state : null;"
        ))
        .await
        .as_str()
        .unwrap_or("")
        .to_string()
    }

    /// Saves a PNG of the page under target/console-screenshots/, and under docs/console/
    /// with `SLUICE_UPDATE_SCREENSHOTS=1`.
    async fn screenshot(&self, name: &str) {
        let png = self.command("GET", "/screenshot", None).await.unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        assert!(bytes.starts_with(b"\x89PNG"), "a screenshot is a PNG");
        let mut dirs = vec![repo().join("target/console-screenshots")];
        if std::env::var("SLUICE_UPDATE_SCREENSHOTS").as_deref() == Ok("1") {
            dirs.push(repo().join("docs/console"));
        }
        for dir in dirs {
            std::fs::create_dir_all(&dir).unwrap();
            let path: PathBuf = dir.join(format!("{name}.png"));
            std::fs::write(&path, &bytes).unwrap();
        }
    }

    async fn sign_in_with_token(&self, serve: &Serve, token: &str) {
        self.goto(&format!("{}/", serve.base)).await;
        self.type_into("#token", token).await;
        self.click("#sign-in-button").await;
        self.find("#apps").await;
    }

    async fn quit(self) {
        let _ = self.command("DELETE", "", None).await;
    }
}

/// An application whose `Wait` step is held by the test server for a few seconds, so a
/// browser sees it running, with an operator, a for_each and a condition to draw.
fn slow_application(server: &TestServer) -> Value {
    json!({
        "name": "console_demo",
        "friendly_name": "Console demo",
        "author": "e2e",
        "description": "A step held by a slow server, a fan-out and a transform",
        "steps": [
            {"id": "Regions", "type": "echo", "parameters": {"value": ["ams", "fra", "nyc"], "log": "three regions"}},
            {"id": "Wait", "type": "http_request", "depends_on": ["Regions"],
             "parameters": {"url": format!("{}/slow", server.base)}},
            {"id": "PerRegion", "type": "echo", "depends_on": ["Regions"],
             "for_each": {"items": "${Regions}"}, "parameters": {"value": {"region": "${item}"}}},
            {"id": "Report", "type": "transform", "depends_on": ["Wait", "PerRegion"],
             "parameters": {"template": "{{ {'regions': 3} | tojson }}"}}
        ]
    })
}

async fn started(server: &TestServer) -> (Scratch, Serve) {
    server.on(
        "/slow",
        Behaviour::Slow(Duration::from_secs(6), json!({"ok": true})),
    );
    let scratch = Scratch::new();
    let serve = scratch.serve().await;
    let (status, body) = serve
        .post(
            "/api/v1/applications",
            &Auth::Admin,
            &slow_application(server),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = serve
        .post(
            "/api/v1/applications",
            &Auth::Admin,
            &json!({"name": "hidden_helper", "author": "e2e", "meta": {"hidden": true},
                    "steps": [{"id": "Only", "type": "echo", "parameters": {"value": 1}}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    (scratch, serve)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_runs_an_application_and_shows_its_steps_live() {
    let server = TestServer::start().await;
    let (scratch, serve) = started(&server).await;
    let token = scratch.token("operator", "execute").await;
    let browser = Browser::start().await;
    browser.sign_in_with_token(&serve, &token).await;

    // Applications: the hidden one only behind the filter; search narrows.
    assert!(browser.present("tr[data-app=console_demo]").await);
    assert!(!browser.present("tr[data-app=hidden_helper]").await);
    browser.click("#show-hidden").await;
    browser.find("tr[data-app=hidden_helper]").await;
    browser.type_into("#app-search", "demo").await;
    browser
        .wait_until(
            "the search result",
            "!document.querySelector('tr[data-app=hidden_helper]')",
        )
        .await;
    assert_eq!(
        browser
            .text("tr[data-app=console_demo] td:nth-child(2)")
            .await,
        "Console demo"
    );
    browser.screenshot("applications").await;

    // The application page: one node per step, arrows for depends_on, kinds distinct.
    browser.click("tr[data-app=console_demo] a").await;
    browser.find("svg.dag").await;
    let drawn = browser
        .script(
            "return {nodes: document.querySelectorAll('g.node').length,
                     edges: document.querySelectorAll('path.edge').length,
                     operator: !!document.querySelector('g.node.kind-operator[data-step=Report]'),
                     fanout: !!document.querySelector('g.node.for-each[data-step=PerRegion] rect.stack')};",
        )
        .await;
    assert_eq!(
        drawn,
        json!({"nodes": 4, "edges": 4, "operator": true, "fanout": true})
    );

    // Run: the held step turns running and then success, pushed over the event stream
    // (the page is never reloaded: a marker set on the window survives).
    browser.click("#run").await;
    browser.find("#run-id").await;
    browser
        .script("window.__notReloaded = true; return null;")
        .await;
    browser
        .wait_until(
            "Wait running",
            "document.querySelector('g.node[data-step=Wait]').dataset.state === 'running'",
        )
        .await;
    assert_eq!(browser.node_state("Regions").await, "success");
    assert_eq!(browser.text("#live-mode").await, "live");
    browser.screenshot("run-live").await;
    browser
        .wait_until(
            "the run's success",
            "document.querySelector('#run-state .badge').textContent === 'success'",
        )
        .await;
    for step in ["Regions", "Wait", "PerRegion", "Report"] {
        assert_eq!(browser.node_state(step).await, "success", "{step}");
    }
    assert_eq!(
        browser
            .script("return window.__notReloaded === true;")
            .await,
        json!(true)
    );
    let first_run = browser.text("#run-id").await;

    // Step Log (FLOW entries and the step's own) and Step Data.
    browser.click("g.node[data-step=Regions]").await;
    browser.find("table#step-log").await;
    let log = browser.text("#step-log").await;
    assert!(log.contains("FLOW"), "{log}");
    assert!(log.contains("three regions"), "{log}");
    browser.screenshot("step-log").await;
    browser.click("#tab-data").await;
    browser.find("pre#step-data").await;
    let data: Value = serde_json::from_str(&browser.text("#step-data").await).unwrap();
    assert_eq!(data, json!(["ams", "fra", "nyc"]));
    browser.screenshot("step-data").await;

    // Replay: a new run of the same application, opened at once.
    browser.click("#replay").await;
    browser
        .wait_until("the replayed run", &format!("document.querySelector('#run-id') && document.querySelector('#run-id').textContent !== '{first_run}'"))
        .await;
    let replay = browser.text("#run-id").await;
    let (_, doc) = serve
        .get(&format!("/api/v1/tasks/{replay}"), &Auth::Admin)
        .await;
    assert_eq!(doc["replay_of"], json!(first_run));

    // Revoke it while its held step runs.
    browser
        .wait_until(
            "Wait running in the replay",
            "document.querySelector('g.node[data-step=Wait]').dataset.state === 'running'",
        )
        .await;
    browser.click("#revoke").await;
    browser
        .wait_until(
            "the revoked run",
            "document.querySelector('#run-state .badge').textContent === 'revoked'",
        )
        .await;
    assert!(
        !browser.present("#revoke").await,
        "no Revoke on an ended run"
    );

    // PowerFlow's deep link opens that run.
    browser
        .goto(&format!(
            "{}/integrations/console_demo?runid={first_run}",
            serve.base
        ))
        .await;
    browser
        .wait_until("the linked run", &format!("document.querySelector('#run-id') && document.querySelector('#run-id').textContent === '{first_run}'"))
        .await;

    browser.quit().await;
    assert_eq!(serve.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_shows_the_steps_registry_and_hides_what_a_viewer_cannot_do() {
    let server = TestServer::start().await;
    let (scratch, serve) = started(&server).await;
    let token = scratch.token("watcher", "view").await;
    let browser = Browser::start().await;
    browser.sign_in_with_token(&serve, &token).await;
    assert_eq!(browser.text("#who").await, "token:watcher · view");

    // A viewer sees the application but no Run button.
    browser
        .goto(&format!("{}/console/apps/console_demo", serve.base))
        .await;
    browser.find("svg.dag").await;
    assert!(!browser.present("#run").await);
    assert!(!browser.present("#debug-run").await);

    // The registry: echo with its version and its parameters.
    let (_, steps) = serve.get("/api/v1/steps", &Auth::Admin).await;
    let echo = steps
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "echo")
        .unwrap();
    browser.click("a[data-nav=steps]").await;
    let version = browser.text("[data-step-type=echo] .version").await;
    assert_eq!(version, echo["version"].as_str().unwrap());
    let params = browser.text("[data-step-type=echo] table.params").await;
    assert!(params.contains("value"), "{params}");
    browser.screenshot("steps-registry").await;

    // A wrong token is refused on the sign-in form.
    browser.click("#sign-out").await;
    browser.type_into("#token", "slc_not-a-token").await;
    browser.click("#sign-in-button").await;
    browser
        .wait_until(
            "the refusal",
            "document.querySelector('#sign-in-error').textContent.includes('not accepted')",
        )
        .await;

    browser.quit().await;
    assert_eq!(serve.stop().await, 0);
}

/// The console's files are served with their content types and the security headers,
/// without authentication; the event stream needs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_assets_are_served_with_content_types_and_csp() {
    let scratch = Scratch::new();
    let serve = scratch.serve().await;
    for (path, content_type) in [
        ("/", "text/html; charset=utf-8"),
        ("/console/apps/anything", "text/html; charset=utf-8"),
        ("/integrations/someapp?runid=x", "text/html; charset=utf-8"),
        ("/console/assets/app.js", "text/javascript; charset=utf-8"),
        ("/console/assets/api.js", "text/javascript; charset=utf-8"),
        ("/console/assets/dag.js", "text/javascript; charset=utf-8"),
        ("/console/assets/style.css", "text/css; charset=utf-8"),
        ("/console/assets/favicon.svg", "image/svg+xml"),
    ] {
        let response = serve
            .http
            .get(format!("{}{path}", serve.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default()
        };
        assert_eq!(header("content-type"), content_type, "{path}");
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        let csp = header("content-security-policy");
        assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
    }
    // The page has no inline script: every <script> has a src.
    let page = serve
        .http
        .get(format!("{}/", serve.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        page.matches("<script").count(),
        page.matches("<script type=\"module\" src=").count()
    );

    let (status, body) = serve.get("/console/assets/nothing.js", &Auth::None).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (404, json!("not_found"))
    );
    let (status, _) = serve.get("/api/v1/nowhere", &Auth::None).await;
    assert_eq!(status, 404);
    let (status, _) = serve.get("/api/v1/tasks/x/events", &Auth::None).await;
    assert_eq!(status, 401);
    let (status, who) = serve.get("/api/v1/whoami", &Auth::Admin).await;
    assert_eq!(status, 200);
    assert_eq!(
        who,
        json!({"name": "admin", "role": "administrator", "method": "basic"})
    );

    // The event stream of an ended run: its document, then the end of the stream.
    let (status, body) = serve
        .post(
            "/api/v1/applications",
            &Auth::Admin,
            &json!({"name": "quick", "author": "e2e",
                    "steps": [{"id": "Only", "type": "echo", "parameters": {"value": 1}}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, task) = serve
        .post(
            "/api/v1/applications/quick/run?wait=25",
            &Auth::Admin,
            &json!({}),
        )
        .await;
    assert_eq!((status, task["state"].clone()), (200, json!("success")));
    let response = serve
        .http
        .get(format!(
            "{}/api/v1/tasks/{}/events",
            serve.base,
            task["task_id"].as_str().unwrap()
        ))
        .basic_auth("admin", Some(crate::support::ADMIN_PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let stream = response.text().await.unwrap();
    let data: Vec<Value> = stream
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(stream.starts_with("event: task\n"), "{stream}");
    assert_eq!(data.len(), 1, "{stream}");
    assert_eq!(data[0]["task_id"], task["task_id"]);
    assert_eq!(data[0]["steps"]["Only"]["state"], "success");
    assert_eq!(serve.stop().await, 0);
}
