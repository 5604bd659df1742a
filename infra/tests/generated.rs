//! The generated files agree with the catalogue, and the catalogue with `functions/`.

use std::path::{Path, PathBuf};

use sluice_infra::{iam, template, Kind, Stack};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn stack() -> Stack {
    Stack::load(&repo().join("infra/functions.toml")).unwrap()
}

#[test]
fn template_yaml_is_generated_from_the_catalogue() {
    let current = std::fs::read_to_string(repo().join("template.yaml")).unwrap();
    assert!(
        current == template::render(&stack()),
        "template.yaml is stale: run `cargo run -p sluice-infra`"
    );
}

#[test]
fn the_iam_table_of_docs_aws_md_is_generated_from_the_catalogue() {
    let doc = std::fs::read_to_string(repo().join("docs/aws.md")).unwrap();
    assert_eq!(
        iam::parse_markdown_table(&doc).unwrap(),
        iam::rows(&stack()),
        "docs/aws.md's IAM table is stale: run `cargo run -p sluice-infra`"
    );
}

/// Every directory of `functions/` is in the catalogue and the other way round, and the
/// `[package.metadata.lambda.deploy]` settings `cargo lambda deploy` applies to a
/// deployed function equal the template's (so a code update does not change them).
#[test]
fn the_catalogue_names_every_function_with_its_deploy_settings() {
    let stack = stack();
    let mut dirs: Vec<String> = std::fs::read_dir(repo().join("functions"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("Cargo.toml").is_file())
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    let mut names: Vec<String> = stack.functions.iter().map(|f| f.name.clone()).collect();
    names.sort();
    assert_eq!(dirs, names, "functions/ and infra/functions.toml disagree");
    for f in &stack.functions {
        let manifest: toml::Value = toml::from_str(
            &std::fs::read_to_string(repo().join(f.code_uri()).join("Cargo.toml")).unwrap(),
        )
        .unwrap();
        let bins: Vec<&str> = manifest["bin"]
            .as_array()
            .map(|b| b.iter().filter_map(|b| b["name"].as_str()).collect())
            .unwrap_or_default();
        assert!(
            bins.contains(&f.binary().as_str()),
            "{}: no bin {}",
            f.name,
            f.binary()
        );
        let deploy = &manifest["package"]["metadata"]["lambda"]["deploy"];
        assert_eq!(
            deploy["memory"].as_integer(),
            Some(i64::from(f.memory)),
            "{} memory",
            f.name
        );
        assert_eq!(
            deploy["timeout"].as_integer(),
            Some(i64::from(f.timeout)),
            "{} timeout",
            f.name
        );
        // The template sets no X-Ray tracing (its API has no resource-level permission,
        // so it would need `Resource: "*"`); a lone deploy must not switch it on.
        assert_ne!(
            deploy.get("tracing").and_then(|t| t.as_str()),
            Some("active")
        );
    }
    assert_eq!(
        stack.function(Kind::DeadLetter).timeout,
        sluice_aws::provision::DEAD_LETTER_FUNCTION_TIMEOUT_SECONDS,
        "`sluice aws provision` sizes the dead-letter queues' visibility from this timeout"
    );
}

#[test]
fn a_catalogue_missing_a_role_or_repeating_a_name_is_refused_naming_the_field() {
    let step = |name: &str| {
        format!(
            "[[function]]\nname = \"{name}\"\nkind = \"step\"\nmemory = 128\ntimeout = 900\ndescription = \"x\"\n"
        )
    };
    let roles = "[[function]]\nname = \"api\"\nkind = \"api\"\nmemory = 256\ntimeout = 30\ndescription = \"x\"\n\
                 [[function]]\nname = \"start\"\nkind = \"start\"\nmemory = 128\ntimeout = 60\ndescription = \"x\"\n\
                 [[function]]\nname = \"dead_letter\"\nkind = \"dead_letter\"\nmemory = 128\ntimeout = 60\ndescription = \"x\"\n";
    let ok = format!("{roles}{}{}", step("echo"), step("my_step"));
    let stack = Stack::parse(&ok).unwrap();
    let yaml = template::render(&stack);
    assert!(yaml.contains("MyStepQueue:"));
    assert!(yaml.contains("CodeUri: functions/my_step"));
    assert!(yaml.contains("Binary: sluice-my-step"));

    let e = Stack::parse(&format!("{roles}{}{}", step("echo"), step("echo"))).unwrap_err();
    assert!(
        e.to_string().contains("function.name: echo appears twice"),
        "{e}"
    );
    let e = Stack::parse(&step("echo")).unwrap_err();
    assert!(e.to_string().contains("exactly one of kind Api"), "{e}");
    let e = Stack::parse(&format!("{roles}{}", step("Echo"))).unwrap_err();
    assert!(e.to_string().contains("function.name"), "{e}");
    let e = Stack::parse(&format!("{roles}{}", step("echo").replace("900", "901"))).unwrap_err();
    assert!(e.to_string().contains("function.timeout"), "{e}");
    let e = Stack::parse(&format!("{roles}{}colour = \"red\"\n", step("echo"))).unwrap_err();
    assert!(e.to_string().contains("colour"), "{e}");
}

/// The sample events for `sam local invoke` carry what the functions read: a
/// `TaskMessage` in the SQS body, the Scheduler target's input fields, payload 2.0 for
/// the API.
#[test]
fn the_sample_events_have_the_shapes_the_functions_receive() {
    let event = |name: &str| -> serde_json::Value {
        serde_json::from_str(
            &std::fs::read_to_string(repo().join("infra/events").join(name)).unwrap(),
        )
        .unwrap()
    };
    let sqs = event("sqs-echo.json");
    let record = &sqs["Records"][0];
    assert_eq!(record["eventSource"], "aws:sqs");
    let _: sluice_core::ports::TaskMessage =
        serde_json::from_str(record["body"].as_str().unwrap()).unwrap();

    let input: serde_json::Value =
        serde_json::from_str(&sluice_aws::scheduler::target_input("nightly-report")).unwrap();
    let tick = event("schedule-tick.json");
    let keys = |v: &serde_json::Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&tick), keys(&input));
    assert_eq!(tick["entry_id"], input["entry_id"]);

    for name in ["api-about.json", "api-list-applications.json"] {
        let api = event(name);
        assert_eq!(api["version"], "2.0", "{name}");
        assert!(
            api["rawPath"].as_str().unwrap().starts_with("/api/v1/"),
            "{name}"
        );
    }
}
