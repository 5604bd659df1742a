//! The web console in real browsers: headless Chromium and headless Firefox, each driven
//! over W3C WebDriver against a `sluice serve`. ChromeDriver is started by
//! `scripts/start-chromedriver.sh` (which exports `SLUICE_TEST_WEBDRIVER_URL`), geckodriver
//! by `scripts/start-geckodriver.sh` (`SLUICE_TEST_GECKODRIVER_URL`). Every scenario is a
//! `chromium` and a `firefox` test; a browser whose driver is not running fails its tests.
//!
//! The WebDriver client is a few plain W3C WebDriver calls over reqwest, which the suite
//! already builds: a WebDriver crate would add its own HTTP stack to compile for the
//! handful of commands used here.
//!
//! With `SLUICE_UPDATE_SCREENSHOTS=1` the Chromium tests save the main pages into
//! docs/console/.

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};

use crate::support::{repo, Auth, Behaviour, Scratch, Serve, TestServer};

/// How long the page may take to show what a test waits for.
const UI_TIMEOUT: Duration = Duration::from_secs(30);

/// The browsers the console is tested in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Engine {
    Chromium,
    Firefox,
}

/// geckodriver serves one session at a time: the Firefox tests take turns.
static FIREFOX_TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl Engine {
    /// The WebDriver server's URL, from the variable its start script exports.
    fn driver_url(self) -> String {
        let (variable, script, packages) = match self {
            Engine::Chromium => (
                "SLUICE_TEST_WEBDRIVER_URL",
                "start-chromedriver.sh",
                "Debian packages chromium, chromium-driver",
            ),
            Engine::Firefox => (
                "SLUICE_TEST_GECKODRIVER_URL",
                "start-geckodriver.sh",
                "Debian package firefox-esr, geckodriver from crates.io",
            ),
        };
        std::env::var(variable).unwrap_or_else(|_| {
            panic!(
                "{variable} is not set: start the driver with \
                 `eval \"$(scripts/{script})\"` ({packages})"
            )
        })
    }

    /// The W3C capabilities of a headless session at 1280 × 900 in English.
    fn capabilities(self) -> Value {
        match self {
            Engine::Chromium => {
                let mut options = json!({"args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1280,900", "--lang=en-US",
                ]});
                if let Ok(binary) = std::env::var("SLUICE_TEST_CHROMIUM") {
                    options["binary"] = json!(binary);
                }
                json!({"browserName": "chrome", "goog:chromeOptions": options})
            }
            Engine::Firefox => {
                let mut prefs = serde_json::Map::new();
                prefs.insert("intl.accept_languages".into(), json!("en-US"));
                for (name, value) in firefox_quiet_prefs() {
                    prefs.insert(name.into(), value);
                }
                let mut options = json!({"args": ["-headless"], "prefs": prefs});
                if let Ok(binary) = std::env::var("SLUICE_TEST_FIREFOX") {
                    options["binary"] = json!(binary);
                }
                json!({"browserName": "firefox", "moz:firefoxOptions": options})
            }
        }
    }
}

/// Prefs that keep Firefox off the network but for the pages a test opens (there is no
/// network in CI, and a test should not depend on one): no updates, telemetry, captive
/// portal or connectivity checks, safe browsing lists, studies (Normandy), remote
/// settings, add-on, plugin or region look-ups, prefetching or DNS over HTTPS.
fn firefox_quiet_prefs() -> Vec<(&'static str, Value)> {
    let off = json!(false);
    let nowhere = json!("");
    vec![
        ("app.update.auto", off.clone()),
        ("app.update.checkInstallTime", off.clone()),
        ("app.update.disabledForTesting", json!(true)),
        ("app.normandy.enabled", off.clone()),
        ("app.normandy.api_url", nowhere.clone()),
        ("app.shield.optoutstudies.enabled", off.clone()),
        ("messaging-system.rsexperimentloader.enabled", off.clone()),
        ("browser.shell.checkDefaultBrowser", off.clone()),
        ("browser.startup.homepage_override.mstone", json!("ignore")),
        ("browser.startup.page", json!(0)),
        ("browser.newtabpage.enabled", off.clone()),
        (
            "browser.newtabpage.activity-stream.feeds.telemetry",
            off.clone(),
        ),
        ("browser.newtabpage.activity-stream.telemetry", off.clone()),
        ("browser.ping-centre.telemetry", off.clone()),
        ("browser.discovery.enabled", off.clone()),
        ("browser.region.network.url", nowhere.clone()),
        ("browser.region.update.enabled", off.clone()),
        ("browser.safebrowsing.malware.enabled", off.clone()),
        ("browser.safebrowsing.phishing.enabled", off.clone()),
        ("browser.safebrowsing.downloads.enabled", off.clone()),
        ("browser.safebrowsing.downloads.remote.enabled", off.clone()),
        ("browser.safebrowsing.blockedURIs.enabled", off.clone()),
        (
            "browser.safebrowsing.provider.google4.updateURL",
            nowhere.clone(),
        ),
        (
            "browser.safebrowsing.provider.mozilla.updateURL",
            nowhere.clone(),
        ),
        ("datareporting.policy.dataSubmissionEnabled", off.clone()),
        ("datareporting.healthreport.uploadEnabled", off.clone()),
        ("toolkit.telemetry.enabled", off.clone()),
        ("toolkit.telemetry.unified", off.clone()),
        ("toolkit.telemetry.archive.enabled", off.clone()),
        ("toolkit.telemetry.server", nowhere.clone()),
        ("network.captive-portal-service.enabled", off.clone()),
        ("network.connectivity-service.enabled", off.clone()),
        ("network.dns.disablePrefetch", json!(true)),
        ("network.prefetch-next", off.clone()),
        ("network.predictor.enabled", off.clone()),
        ("network.trr.mode", json!(5)),
        (
            "services.settings.server",
            json!("data:,#remote-settings-disabled"),
        ),
        ("extensions.update.enabled", off.clone()),
        ("extensions.systemAddon.update.enabled", off.clone()),
        ("extensions.getAddons.cache.enabled", off.clone()),
        ("extensions.blocklist.enabled", off.clone()),
        ("media.gmp-manager.url", nowhere.clone()),
        ("media.gmp-gmpopenh264.enabled", off.clone()),
        ("geo.provider.network.url", nowhere.clone()),
        ("dom.push.enabled", off.clone()),
        ("identity.fxaccounts.enabled", off),
    ]
}

/// A WebDriver session of a headless browser.
struct Browser {
    engine: Engine,
    http: reqwest::Client,
    session: String,
    /// Set once the session is deleted; a session still open when dropped (a failed
    /// test) is deleted then.
    ended: bool,
    /// Held for a Firefox session's lifetime (dropped after the session is deleted).
    _turn: Option<tokio::sync::MutexGuard<'static, ()>>,
}

/// A `chromium` and a `firefox` test of the scenario `async fn $scenario(Engine)`, in a
/// module of its name: `console::$scenario::chromium`, `console::$scenario::firefox`.
macro_rules! in_each_browser {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            use super::Engine;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn chromium() {
                super::$scenario(Engine::Chromium).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn firefox() {
                super::$scenario(Engine::Firefox).await;
            }
        }
    )*};
}

in_each_browser!(
    console_runs_an_application_and_shows_its_steps_live,
    console_shows_the_steps_registry_and_hides_what_a_viewer_cannot_do,
    console_custom_run_sends_the_form_as_params_and_the_runs_list_filters,
    console_edits_a_configuration_without_showing_its_secret_and_manages_schedules,
    console_dashboard_shows_failures_running_runs_and_queues,
    console_builder_builds_test_renders_saves_and_runs_an_application,
);

impl Browser {
    /// A new session of `engine`. A test starts its browser before anything it times
    /// (a held step): a Firefox test may first wait for the one before it to end.
    async fn start(engine: Engine) -> Self {
        let driver = engine.driver_url();
        let turn = match engine {
            Engine::Firefox => Some(FIREFOX_TURN.lock().await),
            Engine::Chromium => None,
        };
        let http = reqwest::Client::new();
        let answer: Value = http
            .post(format!("{driver}/session"))
            .json(&json!({"capabilities": {"alwaysMatch": engine.capabilities()}}))
            .send()
            .await
            .unwrap_or_else(|e| panic!("the {engine:?} WebDriver does not answer at {driver}: {e}"))
            .json()
            .await
            .unwrap();
        let session = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no {engine:?} WebDriver session: {answer}"))
            .to_string();
        let browser = Self {
            engine,
            http,
            session: format!("{driver}/session/{session}"),
            ended: false,
            _turn: turn,
        };
        if engine == Engine::Firefox {
            // Sized the way a test resizes it (Chromium is sized by its arguments).
            browser.resize(1280, 900).await;
        }
        browser
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

    /// Empties an input, then types `text` into it.
    async fn replace_text(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        self.command(
            "POST",
            &format!("/element/{element}/clear"),
            Some(json!({})),
        )
        .await
        .unwrap_or_else(|e| panic!("clearing {css}: {e}"));
        self.type_into(css, text).await;
    }

    /// Focuses the element matching `css` and presses `key` (a WebDriver key code, e.g.
    /// `\u{E007}` Enter) with the Actions API: the same key events in every browser, also
    /// for elements that are focusable without being form controls.
    async fn press(&self, css: &str, key: &str) {
        self.find(css).await;
        self.script(&format!(
            "document.querySelector({}).focus(); return null;",
            serde_json::to_string(css).unwrap()
        ))
        .await;
        self.command(
            "POST",
            "/actions",
            Some(
                json!({"actions": [{"type": "key", "id": "keyboard", "actions": [
                {"type": "keyDown", "value": key}, {"type": "keyUp", "value": key}]}]}),
            ),
        )
        .await
        .unwrap_or_else(|e| panic!("pressing {key:?} on {css}: {e}"));
        let _ = self.command("DELETE", "/actions", None).await;
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

    /// Saves a PNG of the page under target/console-screenshots/ (Firefox's under its
    /// firefox/ folder), and Chromium's under docs/console/ with
    /// `SLUICE_UPDATE_SCREENSHOTS=1`: the documentation shows one browser.
    async fn screenshot(&self, name: &str) {
        let png = self.command("GET", "/screenshot", None).await.unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        assert!(bytes.starts_with(b"\x89PNG"), "a screenshot is a PNG");
        let mut dirs = vec![];
        match self.engine {
            Engine::Chromium => {
                dirs.push(repo().join("target/console-screenshots"));
                if std::env::var("SLUICE_UPDATE_SCREENSHOTS").as_deref() == Ok("1") {
                    dirs.push(repo().join("docs/console"));
                }
            }
            Engine::Firefox => dirs.push(repo().join("target/console-screenshots/firefox")),
        }
        for dir in dirs {
            std::fs::create_dir_all(&dir).unwrap();
            let path: PathBuf = dir.join(format!("{name}.png"));
            std::fs::write(&path, &bytes).unwrap();
        }
    }

    /// Signs in on the applications page (the page asked for is shown after sign-in).
    async fn sign_in_with_token(&self, serve: &Serve, token: &str) {
        self.sign_in_at(serve, "/console/apps", token).await;
        self.find("#apps").await;
    }

    /// Opens `path`, signs in there with `token`, and waits for the signed-in page.
    async fn sign_in_at(&self, serve: &Serve, path: &str, token: &str) {
        self.goto(&format!("{}{path}", serve.base)).await;
        self.type_into("#token", token).await;
        self.click("#sign-in-button").await;
        self.find("#nav:not([hidden])").await;
    }

    /// The window's size in CSS pixels (a phone: 390 × 844). Firefox keeps its window at
    /// least 500 px wide: the phone-sized screenshot is Chromium's.
    async fn resize(&self, width: u32, height: u32) {
        self.command(
            "POST",
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        )
        .await
        .unwrap();
    }

    /// The value of a form control.
    async fn value(&self, css: &str) -> String {
        self.find(css).await;
        self.script(&format!(
            "return document.querySelector({}).value;",
            serde_json::to_string(css).unwrap()
        ))
        .await
        .as_str()
        .unwrap_or("")
        .to_string()
    }

    async fn quit(mut self) {
        let _ = self.command("DELETE", "", None).await;
        self.ended = true;
    }
}

impl Drop for Browser {
    /// Deletes the session of a test that failed before `quit`: its browser would stay
    /// open, and geckodriver would refuse the next Firefox test's session.
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        let session = self.session.clone();
        // On a thread of its own: this may run inside the test's runtime, which cannot
        // block on a future.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async { reqwest::Client::new().delete(session).send().await.ok() })
        })
        .join();
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

async fn console_runs_an_application_and_shows_its_steps_live(engine: Engine) {
    let browser = Browser::start(engine).await;
    let server = TestServer::start().await;
    let (scratch, serve) = started(&server).await;
    let token = scratch.token("operator", "execute").await;
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
    // On the node's box, where a pointer lands: geckodriver cannot scroll an SVG `<g>`
    // itself into view to click it (its click bubbles to the node's handler all the same).
    browser.click("g.node[data-step=Regions] rect.box").await;
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
    // The keyboard selects a step too: Enter on a focused node.
    browser
        .press("g.node[data-step=PerRegion]", "\u{E007}")
        .await;
    browser
        .wait_until(
            "PerRegion selected by the keyboard",
            "document.querySelector('g.node.selected[data-step=PerRegion]') && [...document.querySelectorAll('h2')].some((h) => h.textContent.startsWith('PerRegion'))",
        )
        .await;

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

async fn console_shows_the_steps_registry_and_hides_what_a_viewer_cannot_do(engine: Engine) {
    let browser = Browser::start(engine).await;
    let server = TestServer::start().await;
    let (scratch, serve) = started(&server).await;
    let token = scratch.token("watcher", "view").await;
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
        ("/console/assets/dom.js", "text/javascript; charset=utf-8"),
        (
            "/console/assets/customrun.js",
            "text/javascript; charset=utf-8",
        ),
        (
            "/console/assets/configs.js",
            "text/javascript; charset=utf-8",
        ),
        (
            "/console/assets/schedules.js",
            "text/javascript; charset=utf-8",
        ),
        ("/console/assets/runs.js", "text/javascript; charset=utf-8"),
        (
            "/console/assets/dashboard.js",
            "text/javascript; charset=utf-8",
        ),
        (
            "/console/assets/builder.js",
            "text/javascript; charset=utf-8",
        ),
        (
            "/console/assets/schemaform.js",
            "text/javascript; charset=utf-8",
        ),
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

/// Custom Run builds its form from the app variables and starts the run with exactly the
/// changed values, the configuration and the queue; the runs list filters by state and
/// application and draws the runs as dots.
async fn console_custom_run_sends_the_form_as_params_and_the_runs_list_filters(engine: Engine) {
    let browser = Browser::start(engine).await;
    let server = TestServer::start().await;
    server.on("/broken", Behaviour::FailFirst(1000, json!({})));
    let scratch = Scratch::new();
    let serve = scratch.serve().await;
    for (path, doc) in [
        (
            "/api/v1/configurations",
            json!({"name": "acme", "data": [{"name": "region_default", "value": "ams"}]}),
        ),
        (
            "/api/v1/applications",
            json!({"name": "custom_demo", "author": "e2e",
                "app_variables": [
                    {"name": "region", "type": "enum", "choices": ["ams", "fra", "nyc"], "value": "ams",
                     "description": "Where to sync"},
                    {"name": "limit", "type": "number", "value": 10},
                    {"name": "verbose", "type": "boolean", "value": false},
                    {"name": "note", "type": "string", "required": true, "description": "Free text"},
                    {"name": "base", "type": "string", "value": "${config.region_default}"}
                ],
                "steps": [{"id": "Show", "type": "echo", "parameters": {"value": {
                    "region": "${vars.region}", "limit": "${vars.limit}", "base": "${vars.base}"}}}]}),
        ),
        (
            "/api/v1/applications",
            json!({"name": "broken", "author": "e2e", "steps": [{"id": "Call", "type": "http_request",
                "parameters": {"url": format!("{}/broken", server.base)}}]}),
        ),
    ] {
        let (status, body) = serve.post(path, &Auth::Admin, &doc).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, failed) = serve
        .post(
            "/api/v1/applications/broken/run?wait=25",
            &Auth::Admin,
            &json!({}),
        )
        .await;
    assert_eq!((status, failed["state"].clone()), (200, json!("failure")));
    let token = scratch.token("operator", "execute").await;
    browser.sign_in_with_token(&serve, &token).await;

    browser
        .goto(&format!("{}/console/apps/custom_demo", serve.base))
        .await;
    browser.click("#custom-run-open").await;
    browser.find("form#custom-run").await;
    let form = browser.text("#custom-run").await;
    assert!(form.contains("Where to sync"), "{form}");
    assert!(form.contains("note * (string)"), "{form}");
    // The required variable without a value is named before anything is sent.
    browser.click("#custom-run-start").await;
    browser
        .wait_until(
            "the missing variable",
            "document.querySelector('#custom-run-error').textContent.includes('note')",
        )
        .await;
    browser.click("[data-var=region] option[value='1']").await;
    browser.replace_text("[data-var=limit]", "25").await;
    browser.click("[data-var=verbose]").await;
    browser.type_into("[data-var=note]", "from the form").await;
    browser.click("#run-configuration option[value=acme]").await;
    browser.type_into("#run-queue", "night").await;
    browser.screenshot("custom-run").await;
    browser.click("#custom-run-start").await;
    browser.find("#run-id").await;
    browser
        .wait_until(
            "the run's success",
            "document.querySelector('#run-state .badge').textContent === 'success'",
        )
        .await;
    let run = browser.text("#run-id").await;
    let (_, task) = serve
        .get(&format!("/api/v1/tasks/{run}?outputs=true"), &Auth::Admin)
        .await;
    // Unchanged variables are not sent: `base` keeps resolving its reference.
    assert_eq!(
        task["params"],
        json!({"region": "fra", "limit": 25, "verbose": true, "note": "from the form",
               "configuration": "acme", "queue": "night"}),
        "{task}"
    );
    assert_eq!(task["configuration"], "acme");
    assert_eq!(task["queue"], "night");
    assert_eq!(
        task["steps"]["Show"]["output"],
        json!({"region": "fra", "limit": 25, "base": "ams"})
    );

    // The runs list: filtered by state, then by application; dots by state.
    browser.click("a[data-nav=runs]").await;
    browser.find("table#runs").await;
    assert_eq!(
        browser
            .script("return document.querySelectorAll('#timeline a[data-task]').length;")
            .await,
        json!(2)
    );
    browser.screenshot("runs").await;
    browser.click("#filter-state option[value=failure]").await;
    browser.click("#apply-filters").await;
    browser
        .wait_until(
            "only failed runs",
            "location.search.includes('state=failure') && document.querySelectorAll('#runs tbody tr[data-task]').length === 1",
        )
        .await;
    let failed_id = failed["task_id"].as_str().unwrap();
    assert!(
        browser
            .present(&format!(
                "#runs tr[data-task='{failed_id}'][data-state=failure]"
            ))
            .await
    );
    assert!(
        browser
            .present(&format!(
                "#timeline a[data-task='{failed_id}'][data-state=failure]"
            ))
            .await
    );
    browser.click("#filter-state option[value='']").await;
    browser
        .click("#filter-application option[value=custom_demo]")
        .await;
    browser.click("#apply-filters").await;
    // The page is replaced after the address changes: wait for this run's row, then count.
    browser
        .wait_until(
            "the application's runs",
            &format!("location.search === '?application=custom_demo' && document.querySelector(\"#runs tr[data-task='{run}']\")"),
        )
        .await;
    assert_eq!(
        browser
            .script("return document.querySelectorAll('#runs tbody tr[data-task]').length;")
            .await,
        json!(1)
    );

    browser.quit().await;
    assert_eq!(serve.stop().await, 0);
}

/// The configuration editor never has an encrypted value in the page or in what the API
/// answered it: a kept secret is sent back as `null` (and still works), a replaced one
/// works from then on. Schedules: create one, see it in plain English, disable, delete.
async fn console_edits_a_configuration_without_showing_its_secret_and_manages_schedules(
    engine: Engine,
) {
    let browser = Browser::start(engine).await;
    const SECRET: &str = "S3cr3t-plaintext-4711";
    const NEW_SECRET: &str = "N3w-s3cret-0815";
    let server = TestServer::start().await;
    server.on(
        "/secured",
        Behaviour::Bearer(SECRET.into(), json!({"ok": true})),
    );
    let scratch = Scratch::new();
    let serve = scratch.serve().await;
    for (path, doc) in [
        (
            "/api/v1/configurations",
            json!({"name": "acme", "description": "Acme production", "data": [
                {"name": "base_url", "value": "https://old.example"},
                {"name": "api_key", "value": SECRET, "encrypted": true, "description": "Bearer token"},
                {"name": "retries", "value": 3}]}),
        ),
        (
            "/api/v1/applications",
            json!({"name": "secured", "author": "e2e", "configuration": "acme",
                "steps": [{"id": "Call", "type": "http_request", "parameters": {
                    "url": format!("{}/secured", server.base), "auth": {"bearer": "${config.api_key}"}}}]}),
        ),
    ] {
        let (status, body) = serve.post(path, &Auth::Admin, &doc).await;
        assert_eq!(status, 200, "{body}");
    }
    let run_secured = || async {
        let (_, task) = serve
            .post(
                "/api/v1/applications/secured/run?wait=25",
                &Auth::Admin,
                &json!({}),
            )
            .await;
        task["state"].as_str().unwrap_or("").to_string()
    };
    let token = scratch.token("owner", "administrator").await;
    browser.sign_in_with_token(&serve, &token).await;
    // Records every API call the page makes from here on (the page is never reloaded).
    browser
        .script(
            "window.__seen = []; const original = window.fetch;
             window.fetch = async (...args) => {
               const response = await original(...args);
               response.clone().text().then((body) => window.__seen.push({
                 url: String(args[0]), sent: (args[1] && args[1].body) || '', body }));
               return response;
             }; return null;",
        )
        .await;

    browser.click("a[data-nav=configs]").await;
    let aligned = browser.text("tr[data-config=acme] td:nth-child(6)").await;
    assert_eq!(aligned, "secured");
    browser.screenshot("configurations").await;
    browser.click("tr[data-config=acme] a").await;
    browser.find("tr[data-var=api_key] [data-secret=set]").await;
    browser
        .replace_text(
            "tr[data-var=base_url] [data-field=value]",
            "https://new.example",
        )
        .await;
    browser.screenshot("configuration-editor").await;
    browser.click("#config-save").await;
    browser
        .wait_until(
            "the saved configuration",
            "document.querySelector('#config-status').textContent.startsWith('Saved acme')",
        )
        .await;
    let (_, stored) = serve.get("/api/v1/configurations/acme", &Auth::Admin).await;
    assert_eq!(stored["data"][0]["value"], "https://new.example");
    assert_eq!(
        stored["data"][1],
        json!({"name": "api_key", "value": null, "encrypted": true, "description": "Bearer token"})
    );
    assert_eq!(stored["data"][2]["value"], 3, "a number stays a number");
    // Kept: the stored secret still authenticates.
    assert_eq!(run_secured().await, "success");

    // Replace it: the new secret is used from then on.
    browser
        .click("tr[data-var=api_key] [data-action=replace]")
        .await;
    browser
        .type_into("tr[data-var=api_key] input[type=password]", NEW_SECRET)
        .await;
    browser.click("#config-save").await;
    browser
        .wait_until(
            "the second save",
            "document.querySelector('#config-status').textContent.startsWith('Saved acme') && !document.querySelector('tr[data-var=api_key] input[type=password]')",
        )
        .await;
    assert_eq!(
        run_secured().await,
        "failure",
        "the old secret no longer works"
    );
    server.on(
        "/secured",
        Behaviour::Bearer(NEW_SECRET.into(), json!({"ok": true})),
    );
    assert_eq!(run_secured().await, "success");

    // Neither secret is in the page, nor in any answer the page received; the first save
    // sent the kept secret as null.
    let seen = browser.script("return window.__seen;").await;
    let seen = seen.as_array().unwrap();
    assert!(seen
        .iter()
        .any(|c| c["url"] == "/api/v1/configurations/acme"));
    let saves: Vec<Value> = seen
        .iter()
        .filter(|c| c["url"] == "/api/v1/configurations" && c["sent"] != "")
        .map(|c| serde_json::from_str(c["sent"].as_str().unwrap()).unwrap())
        .collect();
    assert_eq!(saves.len(), 2);
    assert_eq!(saves[0]["data"][1]["value"], Value::Null);
    assert_eq!(saves[1]["data"][1]["value"], NEW_SECRET);
    let page = browser
        .script("return document.documentElement.outerHTML + document.body.innerText;")
        .await;
    for secret in [SECRET, NEW_SECRET] {
        assert!(
            !page.as_str().unwrap().contains(secret),
            "the page shows a secret"
        );
        for call in seen {
            assert!(
                !call["body"].as_str().unwrap().contains(secret),
                "{}",
                call["url"]
            );
        }
    }
    // The same, for every API resource the page loaded, read again with its token.
    let urls = browser
        .script("return performance.getEntriesByType('resource').map((e) => e.name).filter((u) => u.includes('/api/v1/'));")
        .await;
    let urls = urls.as_array().unwrap();
    assert!(urls.len() >= 4, "{urls:?}");
    for url in urls {
        let path = url
            .as_str()
            .unwrap()
            .trim_start_matches(&serve.base)
            .to_string();
        let (_, body) = serve.get(&path, &Auth::Token(token.clone())).await;
        for secret in [SECRET, NEW_SECRET] {
            assert!(!body.to_string().contains(secret), "{path}");
        }
    }

    // Schedules: create with the form, shown in plain English; disable; delete.
    browser.click("a[data-nav=schedules]").await;
    browser.type_into("#sched-entry", "weekday-sync").await;
    browser.click("#sched-app option[value=secured]").await;
    browser.replace_text("#sched-minute", "30").await;
    browser.replace_text("#sched-hour", "2").await;
    browser.replace_text("#sched-day_of_week", "1-5").await;
    browser
        .wait_until(
            "the preview",
            "document.querySelector('#sched-preview').textContent === 'At 02:30 on Monday through Friday (UTC)'",
        )
        .await;
    browser.click("#sched-create").await;
    browser.find("tr[data-schedule=weekday-sync]").await;
    assert_eq!(
        browser
            .text("tr[data-schedule=weekday-sync] td.timing")
            .await,
        "At 02:30 on Monday through Friday (UTC)"
    );
    assert_eq!(
        browser
            .text("tr[data-schedule=weekday-sync] td.total")
            .await,
        "0"
    );
    let (status, entry) = serve
        .get("/api/v1/schedule/weekday-sync", &Auth::Admin)
        .await;
    assert_eq!(status, 200, "{entry}");
    assert_eq!(
        entry["schedule"]["schedule_info"],
        json!({"minute": "30", "hour": "2", "day_of_month": "*", "month_of_year": "*", "day_of_week": "1-5"})
    );
    assert!(entry["next_run"].is_string(), "{entry}");
    browser.screenshot("schedules").await;
    // A frequency: its own field replaces the crontab's.
    browser
        .replace_text("#sched-entry", "every-90-minutes")
        .await;
    browser.click("#sched-kind option[value=frequency]").await;
    assert_eq!(
        browser
            .script("return document.querySelector('#sched-minute').offsetParent === null;")
            .await,
        json!(true),
        "the crontab fields are hidden"
    );
    browser.replace_text("#sched-every", "5400").await;
    browser
        .wait_until(
            "the frequency preview",
            "document.querySelector('#sched-preview').textContent === 'Every 90 minutes'",
        )
        .await;
    browser.click("#sched-create").await;
    browser.find("tr[data-schedule=every-90-minutes]").await;
    assert_eq!(
        browser
            .text("tr[data-schedule=every-90-minutes] td.timing")
            .await,
        "Every 90 minutes"
    );
    let (_, entry) = serve
        .get("/api/v1/schedule/every-90-minutes", &Auth::Admin)
        .await;
    assert_eq!(
        entry["schedule"],
        json!({"schedule_type": "frequency", "schedule_info": {"run_every": 5400}})
    );
    browser
        .click("tr[data-schedule=weekday-sync] [data-action=toggle]")
        .await;
    browser
        .wait_until(
            "the disabled schedule",
            "document.querySelector('tr[data-schedule=weekday-sync] td.enabled').textContent === 'disabled'",
        )
        .await;
    let (_, entry) = serve
        .get("/api/v1/schedule/weekday-sync", &Auth::Admin)
        .await;
    assert_eq!(entry["enabled"], false);
    browser
        .click("tr[data-schedule=weekday-sync] [data-action=delete]")
        .await;
    browser
        .click("tr[data-schedule=weekday-sync] [data-action=confirm-delete]")
        .await;
    browser
        .wait_until(
            "the deleted schedule",
            "!document.querySelector('tr[data-schedule=weekday-sync]')",
        )
        .await;
    let (status, _) = serve
        .get("/api/v1/schedule/weekday-sync", &Auth::Admin)
        .await;
    assert_eq!(status, 404);

    browser.quit().await;
    assert_eq!(serve.stop().await, 0);
}

/// Polls the API until `predicate` holds for the run's task document.
async fn until_task(serve: &Serve, id: &str, what: &str, predicate: impl Fn(&Value) -> bool) {
    let deadline = tokio::time::Instant::now() + UI_TIMEOUT;
    loop {
        let (_, task) = serve
            .get(&format!("/api/v1/tasks/{id}"), &Auth::Admin)
            .await;
        if predicate(&task) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the run never showed {what}: {task}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The Dashboard is the landing page: a failed run with its failed step's error and a
/// link to that step, the running run and its busy step among the worker slots, the
/// queue, and the runs of the last hours by state.
async fn console_dashboard_shows_failures_running_runs_and_queues(engine: Engine) {
    let browser = Browser::start(engine).await;
    let server = TestServer::start().await;
    server.on(
        "/held",
        Behaviour::Slow(Duration::from_secs(20), json!({"ok": true})),
    );
    let scratch = Scratch::new();
    let serve = scratch.serve().await;
    for doc in [
        json!({"name": "broken", "author": "e2e", "steps": [{"id": "Call", "type": "http_request",
            "parameters": {"url": format!("{}/broken", server.base)}}]}),
        json!({"name": "held", "author": "e2e", "steps": [
            {"id": "First", "type": "echo", "parameters": {"value": 1}},
            {"id": "Wait", "type": "http_request", "depends_on": ["First"],
             "parameters": {"url": format!("{}/held", server.base)}}]}),
    ] {
        let (status, body) = serve.post("/api/v1/applications", &Auth::Admin, &doc).await;
        assert_eq!(status, 200, "{body}");
    }
    let (_, failed) = serve
        .post(
            "/api/v1/applications/broken/run?wait=25",
            &Auth::Admin,
            &json!({}),
        )
        .await;
    assert_eq!(failed["state"], "failure", "{failed}");
    let failed_id = failed["task_id"].as_str().unwrap().to_string();
    let error = failed["steps"]["Call"]["error"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, held) = serve
        .post("/api/v1/applications/held/run", &Auth::Admin, &json!({}))
        .await;
    let held_id = held["task_id"].as_str().unwrap().to_string();
    until_task(&serve, &held_id, "Wait running", |t| {
        t["steps"]["Wait"]["state"] == "running"
    })
    .await;

    let token = scratch.token("watcher", "view").await;
    browser.sign_in_at(&serve, "/", &token).await;
    browser.find("#dashboard .tiles").await;
    assert_eq!(
        browser.script("return location.pathname;").await,
        json!("/")
    );
    let count = |tile: &str| format!("#{tile} .tile-n");
    assert_eq!(browser.text(&count("tile-running")).await, "1");
    assert_eq!(browser.text(&count("tile-steps")).await, "1");
    assert_eq!(browser.text(&count("tile-failed")).await, "1");
    assert!(browser
        .text("#tile-steps")
        .await
        .contains("of 16 worker slots"));
    // Running now: the held run, with its running step.
    let running = browser
        .text(&format!("#dash-running li[data-task='{held_id}']"))
        .await;
    assert!(
        running.contains("held") && running.contains("Wait"),
        "{running}"
    );
    // Queues: the embedded server's one step queue, its message in flight.
    assert_eq!(
        browser
            .text("#dash-queues tr[data-queue=steps] td.depth")
            .await,
        "1"
    );
    // Runs by state per hour: this hour has one failure (and success, running… none lost).
    assert_eq!(
        browser
            .script("return [...document.querySelectorAll('#runs-chart rect.bar.state-failure')].map((r) => r.dataset.count);")
            .await,
        json!(["1"])
    );
    assert_eq!(
        browser
            .script("return [...document.querySelectorAll('#runs-chart rect.bar.state-running')].map((r) => r.dataset.count);")
            .await,
        json!(["1"])
    );
    // Recent failures: the failed step's error, as the API has it.
    let row = format!("#dash-failures tr[data-task='{failed_id}']");
    assert_eq!(browser.text(&format!("{row} td.error-text")).await, error);
    browser.screenshot("dashboard").await;
    // Its link opens the run with the failed step selected.
    browser.click(&format!("{row} a[data-step=Call]")).await;
    browser
        .wait_until(
            "the failed step's error",
            "document.querySelector('#step-error') !== null",
        )
        .await;
    assert_eq!(browser.text("#step-error").await, error);
    assert_eq!(browser.text("#run-id").await, failed_id);

    // The summary endpoint itself, for a viewer.
    let (status, summary) = serve
        .get("/api/v1/dashboard", &Auth::Token(token.clone()))
        .await;
    assert_eq!(status, 200, "{summary}");
    assert_eq!(summary["workers"], json!({"slots": 16, "busy": 1}));
    assert_eq!(summary["runs"], json!({"pending": 0, "running": 1}));
    assert_eq!(
        summary["queues"],
        json!([{"name": "steps", "depth": 1, "dead_letter": 0}])
    );

    let (status, _) = serve
        .post(
            &format!("/api/v1/tasks/{held_id}/revoke"),
            &Auth::Admin,
            &json!({}),
        )
        .await;
    assert_eq!(status, 200);
    browser.quit().await;
    assert_eq!(serve.stop().await, 0);
}

/// The Builder: a two-step application with a condition, built from the registry's
/// forms. Live validation marks the field at fault; the transform is test-rendered
/// against a step output of another application's run; saved and run, it succeeds; opened
/// again, the Builder shows what was saved.
async fn console_builder_builds_test_renders_saves_and_runs_an_application(engine: Engine) {
    let browser = Browser::start(engine).await;
    let scratch = Scratch::new();
    let serve = scratch.serve().await;
    let (status, body) = serve
        .post(
            "/api/v1/applications",
            &Auth::Admin,
            &json!({"name": "source_demo", "author": "e2e", "steps": [
                {"id": "Fetch", "type": "echo", "parameters": {"value": {"count": 4, "ok": true}}}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, source) = serve
        .post(
            "/api/v1/applications/source_demo/run?wait=25",
            &Auth::Admin,
            &json!({}),
        )
        .await;
    assert_eq!(source["state"], "success", "{source}");
    let source_run = source["task_id"].as_str().unwrap().to_string();

    let token = scratch.token("builder", "developer").await;
    browser.sign_in_with_token(&serve, &token).await;
    browser.click("#new-app").await;
    browser.find("#builder").await;

    // Live validation: a bad name is marked on the name field.
    browser.type_into("#b-name", "not a name!").await;
    browser
        .wait_until(
            "the name marked",
            "document.querySelector('#b-name').getAttribute('aria-invalid') === 'true' && document.querySelector('#builder .field-error[data-issue-path=name]')",
        )
        .await;
    assert!(browser
        .text(".field-error[data-issue-path=name]")
        .await
        .contains("must match"));
    browser.replace_text("#b-name", "built_demo").await;
    browser
        .type_into("#b-friendly", "Built in the browser")
        .await;

    // Step 1: an echo from the registry; its required `value` is marked until given.
    browser.click("#b-add-type option[value=echo]").await;
    browser.click("#b-add-step").await;
    browser.find("[data-step-card=Echo1]").await;
    browser
        .wait_until(
            "the missing value marked",
            "document.querySelector('[data-path=\"steps[0].parameters.value\"]').getAttribute('aria-invalid') === 'true'",
        )
        .await;
    browser
        .replace_text("[data-path='steps[0].id']", "Fetch")
        .await;
    // Leaving the id field renames the card.
    browser.click("#b-friendly").await;
    browser.find("[data-step-card=Fetch]").await;
    browser
        .type_into(
            "[data-path='steps[0].parameters.value']",
            r#"{"count": 4, "ok": true}"#,
        )
        .await;

    // Step 2: a transform after it (the new step runs after the last one), with a
    // condition on Fetch's output.
    browser.click("#b-add-type option[value=transform]").await;
    browser.click("#b-add-step").await;
    browser.find("[data-step-card=Transform1]").await;
    browser
        .replace_text("[data-path='steps[1].id']", "Shape")
        .await;
    browser.click("#b-friendly").await;
    browser.find("[data-step-card=Shape]").await;
    browser
        .type_into(
            "[data-path='steps[1].parameters.template']",
            "{{ input.count | no_such_filter }}",
        )
        .await;
    assert!(
        browser
            .present("[data-step-card=Shape] input[data-dep=Fetch]:checked")
            .await,
        "Shape runs after Fetch"
    );
    // References are offered from the predecessor.
    assert_eq!(
        browser
            .script("return [...document.querySelectorAll('[data-step-card=Shape] datalist option')].map((o) => o.value).includes('${Fetch}');")
            .await,
        json!(true)
    );
    browser
        .click("[data-cond-kind='steps[1].when'] option[value=equal]")
        .await;
    browser
        .type_into("[data-path='steps[1].when.equal.value']", "${Fetch.ok}")
        .await;
    browser
        .type_into("[data-path='steps[1].when.equal.to']", "true")
        .await;
    // The drawing: two nodes, one arrow, the condition shown.
    browser
        .wait_until(
            "the drawn application",
            "document.querySelectorAll('#b-dag g.node').length === 2 && document.querySelectorAll('#b-dag path.edge[data-from=Fetch][data-to=Shape]').length === 1",
        )
        .await;
    browser
        .wait_until(
            "a valid document",
            "document.querySelector('#b-issue-count') && document.querySelector('#b-issue-count').textContent === 'Valid'",
        )
        .await;

    // Test render against the source application's run: Fetch's output as input.
    browser.click("[data-test-render=Shape] summary").await;
    browser
        .click(&format!(
            "[data-test-render=Shape] [data-render=run] option[value='{source_run}']"
        ))
        .await;
    browser
        .click("[data-test-render=Shape] [data-render=step] option[value=Fetch]")
        .await;
    browser
        .wait_until(
            "the chosen output as input",
            "document.querySelector('[data-test-render=Shape] [data-render=input]').value.includes('count')",
        )
        .await;
    browser
        .click("[data-test-render=Shape] [data-action=test-render]")
        .await;
    // A template that cannot render shows its error.
    browser
        .wait_until(
            "the rendering's error",
            "document.querySelector('[data-test-render=Shape] [data-render=error]')",
        )
        .await;
    browser
        .replace_text(
            "[data-path='steps[1].parameters.template']",
            "{{ {'orders': input.count * 10, 'source': input.ok} | tojson }}",
        )
        .await;
    browser
        .click("[data-test-render=Shape] [data-action=test-render]")
        .await;
    let rendered = browser
        .text("[data-test-render=Shape] [data-render=output]")
        .await;
    assert_eq!(
        serde_json::from_str::<Value>(&rendered).unwrap(),
        json!({"orders": 40, "source": true})
    );
    browser
        .script("document.querySelector('[data-test-render=Shape] [data-render=output]').scrollIntoView({block: 'end'}); return null;")
        .await;
    browser.screenshot("builder").await;

    // Save and run: the run succeeds, the condition held.
    browser.click("#b-run").await;
    browser.find("#run-id").await;
    browser
        .wait_until(
            "the run's success",
            "document.querySelector('#run-state .badge').textContent === 'success'",
        )
        .await;
    assert_eq!(browser.node_state("Shape").await, "success");
    let run = browser.text("#run-id").await;
    let (_, task) = serve
        .get(&format!("/api/v1/tasks/{run}?outputs=true"), &Auth::Admin)
        .await;
    assert_eq!(
        task["steps"]["Shape"]["output"],
        json!({"orders": 40, "source": true})
    );
    let (_, stored) = serve
        .get("/api/v1/applications/built_demo", &Auth::Admin)
        .await;
    assert_eq!(stored["friendly_name"], "Built in the browser");
    assert_eq!(stored["author"], "token:builder");
    assert_eq!(stored["steps"][1]["depends_on"], json!(["Fetch"]));
    assert_eq!(
        stored["steps"][1]["when"],
        json!({"equal": {"value": "${Fetch.ok}", "to": true}})
    );
    assert_eq!(
        stored["steps"][0]["parameters"],
        json!({"value": {"count": 4, "ok": true}})
    );

    // Edit: the Builder loads the stored application; deleting Fetch leaves Shape a root
    // and the validation names what no longer resolves.
    browser.click("#edit-in-builder").await;
    browser.find("[data-step-card=Shape]").await;
    assert_eq!(
        browser
            .value("[data-path='steps[1].parameters.template']")
            .await,
        "{{ {'orders': input.count * 10, 'source': input.ok} | tojson }}"
    );
    // Every control is labelled (a label, or aria-label where the context names it).
    assert_eq!(
        browser
            .script(
                "return [...document.querySelectorAll('#builder input, #builder select, #builder textarea, #builder button')]
                   .filter((c) => !(c.labels && c.labels.length) && !c.getAttribute('aria-label') && !(c.tagName === 'BUTTON' && c.textContent.trim()))
                   .map((c) => c.id);",
            )
            .await,
        json!([])
    );
    browser.resize(390, 844).await;
    browser.screenshot("builder-phone").await;
    browser.resize(1280, 900).await;
    browser
        .click("[data-step-card=Fetch] [data-action=delete-step]")
        .await;
    browser
        .wait_until(
            "Fetch deleted",
            "!document.querySelector('[data-step-card=Fetch]') && document.querySelectorAll('#b-dag g.node').length === 1",
        )
        .await;
    browser
        .wait_until(
            "the condition's reference marked",
            "document.querySelector('[data-step-card=Shape] [aria-invalid=true]')",
        )
        .await;

    browser.quit().await;

    // The check the Builder calls: every issue with its path, nothing stored.
    let (status, report) = serve
        .post(
            "/api/v1/validate/application",
            &Auth::Token(token.clone()),
            &json!({"name": "checked_only", "author": "e2e", "steps": [
                {"id": "A", "type": "echo"},
                {"id": "B", "type": "http_request", "depends_on": ["Z"], "parameters": {"url": 5}}]}),
        )
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["valid"], false);
    let paths: Vec<&str> = report["issues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "steps[0].parameters",
            "steps[1].parameters.url",
            "steps[1].depends_on[0]"
        ]
    );
    let (status, _) = serve
        .get("/api/v1/applications/checked_only", &Auth::Admin)
        .await;
    assert_eq!(status, 404, "validating stores nothing");
    assert_eq!(serve.stop().await, 0);
}
