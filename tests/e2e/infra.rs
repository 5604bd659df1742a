//! `sluice infra`: the deployment files follow the binary's step types, and `sluice
//! schema step` publishes exactly that registry.

use std::path::PathBuf;

use serde_json::Value;

use crate::support::{repo, Scratch};

/// This repository's own files are current (what scripts/test.sh checks); its step
/// catalogue lives with the built-in step types.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_repository_deployment_files_are_current() {
    let s = Scratch::new();
    let root = repo().display().to_string();
    let done = s
        .sluice(&[
            "infra",
            "--check",
            "--root",
            &root,
            "--catalogue-out",
            "shared/steps/catalogue.json",
        ])
        .await
        .expect(0);
    let registry = sluice_steps::builtin_registry();
    let registered: Vec<&str> = registry.names().collect();
    assert!(
        done.stdout().contains(&registered.join(", ")),
        "{}",
        done.stdout()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_step_lists_the_registry_and_the_operators() {
    let s = Scratch::new();
    let listed = s.sluice(&["schema", "step"]).await.expect(0).json();
    let of_kind = |kind: &str| -> Vec<String> {
        listed
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["kind"] == kind)
            .map(|t| t["name"].as_str().unwrap().to_string())
            .collect()
    };
    let registered: Vec<String> = sluice_steps::builtin_registry()
        .names()
        .map(str::to_string)
        .collect();
    assert_eq!(of_kind("step"), registered);
    assert!(of_kind("operator").contains(&"transform".to_string()));
}

/// A project directory holding this repository's function list and nothing generated.
fn project(s: &Scratch) -> PathBuf {
    let infra = s.path().join("infra");
    std::fs::create_dir_all(&infra).unwrap();
    std::fs::copy(
        repo().join("infra/functions.toml"),
        infra.join("functions.toml"),
    )
    .unwrap();
    infra.join("functions.toml")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_files_fail_the_check_until_written() {
    let s = Scratch::new();
    project(&s);
    let stale = s.sluice(&["infra", "--check"]).await.expect(1);
    for file in ["template.yaml", "infra/catalogue.json"] {
        assert!(stale.stderr().contains(file), "{}", stale.stderr());
    }
    assert!(!s.path().join("template.yaml").exists());

    let wrote = s.sluice(&["infra"]).await.expect(0);
    assert!(
        wrote.stdout().contains("wrote template.yaml"),
        "{}",
        wrote.stdout()
    );
    let catalogue: Value = serde_json::from_str(
        &std::fs::read_to_string(s.path().join("infra/catalogue.json")).unwrap(),
    )
    .unwrap();
    let expected: Value = serde_json::from_str(sluice_steps::catalogue::CATALOGUE_JSON).unwrap();
    assert_eq!(catalogue, expected);
    assert_eq!(
        std::fs::read_to_string(s.path().join("template.yaml")).unwrap(),
        std::fs::read_to_string(repo().join("template.yaml")).unwrap()
    );
    s.sluice(&["infra", "--check"]).await.expect(0);

    std::fs::write(s.path().join("template.yaml"), "edited by hand\n").unwrap();
    let edited = s.sluice(&["infra", "--check"]).await.expect(1);
    assert!(
        edited.stderr().contains("template.yaml"),
        "{}",
        edited.stderr()
    );
    assert!(
        !edited.stderr().contains("catalogue.json"),
        "{}",
        edited.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_list_that_disagrees_with_the_registry_is_refused() {
    let s = Scratch::new();
    let functions = project(&s);
    let original = std::fs::read_to_string(&functions).unwrap();

    // `sql` is registered but has no function; `greet` is a function of no step type.
    let without_sql = original.replace("name = \"sql\"", "name = \"greet\"");
    assert_ne!(without_sql, original);
    std::fs::write(&functions, without_sql).unwrap();
    for args in [&["infra", "--check"][..], &["infra"][..]] {
        let refused = s.sluice(args).await.expect(2);
        let stderr = refused.stderr();
        assert!(stderr.contains("infra/functions.toml"), "{stderr}");
        assert!(
            stderr.contains("without a `kind = \"step\"` function: sql"),
            "{stderr}"
        );
        assert!(
            stderr.contains("no registered step type: greet"),
            "{stderr}"
        );
    }
    assert!(!s.path().join("template.yaml").exists());
}
