//! What a project depends on can be published: every library crate of the workspace has
//! the metadata a registry requires, and each of its dependencies on another Sluice crate
//! names a version (a path alone would not survive publishing). The functions are
//! binaries of this repository (`publish = false`).

use std::process::Command;

use serde_json::Value;

#[test]
fn library_crates_are_publishable() {
    let output = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--offline",
            "--no-deps",
            "--format-version",
            "1",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: Value = serde_json::from_slice(&output.stdout).unwrap();
    let mut checked = Vec::new();
    for package in metadata["packages"].as_array().unwrap() {
        let name = package["name"].as_str().unwrap();
        let unpublished = package["publish"].as_array().is_some_and(|p| p.is_empty());
        if unpublished {
            assert!(
                name.starts_with("sluice-fn-"),
                "{name} is publish = false, but projects may depend on it"
            );
            continue;
        }
        for field in ["description", "license", "repository", "rust_version"] {
            assert!(
                package[field].as_str().is_some_and(|v| !v.is_empty()),
                "{name}: `{field}` is missing"
            );
        }
        for dependency in package["dependencies"].as_array().unwrap() {
            let dep = dependency["name"].as_str().unwrap();
            if dep.starts_with("sluice-") && dependency["kind"].is_null() {
                assert_ne!(
                    dependency["req"], "*",
                    "{name} depends on {dep} by path only: give it a version"
                );
            }
        }
        checked.push(name.to_string());
    }
    for required in [
        "sluice-sdk",
        "sluice-core",
        "sluice-cli",
        "sluice-steps",
        "sluice-lambda",
    ] {
        assert!(
            checked.iter().any(|c| c == required),
            "{required} was not checked: {checked:?}"
        );
    }
}
