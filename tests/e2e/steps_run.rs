//! `sluice steps run`: one step alone, on the data directory and through a server, with
//! the same document and exit codes either way.

use serde_json::json;

use crate::support::Scratch;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_or_a_template_runs_alone_locally_and_through_the_api() {
    let s = Scratch::new();
    let serve = s.serve().await;
    let token = s.token("dev", "developer").await;
    for remote in [false, true] {
        let run = |args: Vec<&'static str>| {
            let s = &s;
            let serve = &serve;
            let token = &token;
            async move {
                if remote {
                    s.client(serve, token, &args).await
                } else {
                    s.sluice(&args).await
                }
            }
        };
        let echoed = run(vec![
            "steps",
            "run",
            "echo",
            "-p",
            r#"value={"a":1}"#,
            "-p",
            "warning=careful",
            "--output",
            "json",
        ])
        .await
        .expect(0)
        .json();
        assert_eq!(
            (&echoed["state"], &echoed["output"], &echoed["warnings"]),
            (&json!("warning"), &json!({"a": 1}), &json!(["careful"])),
            "remote {remote}: {echoed}"
        );
        let rendered = run(vec![
            "steps",
            "run",
            "transform",
            "-p",
            "template={{ input.n * 2 }}",
            "--input",
            r#"{"n": 21}"#,
        ])
        .await
        .expect(0);
        assert_eq!(rendered.stdout().trim(), "42", "remote {remote}");
        let invalid = run(vec!["steps", "run", "echo", "-p", "nope=1"])
            .await
            .expect(2);
        assert!(
            invalid.stderr().contains("nope"),
            "remote {remote}: {}",
            invalid.stderr()
        );
        let failed = run(vec![
            "steps",
            "run",
            "transform",
            "-p",
            "template={{ 1 }",
            "--output",
            "json",
        ])
        .await
        .expect(1)
        .json();
        assert_eq!(failed["state"], "failed", "remote {remote}: {failed}");
        assert!(
            failed["error"].as_str().unwrap().contains("template"),
            "{failed}"
        );
        run(vec![
            "steps",
            "run",
            "trigger_application",
            "-p",
            "application=x",
        ])
        .await
        .expect(2);
        run(vec!["steps", "run", "nosuchstep"]).await.expect(2);
    }
    serve.stop().await;
}
