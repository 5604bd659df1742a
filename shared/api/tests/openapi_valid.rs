//! The OpenAPI document passes a validator of the specification itself
//! (`openapi-spec-validator`, pinned in scripts/requirements-test.txt and installed into
//! `.venv/` by scripts/test.sh): unique operation ids, resolvable references, schemas
//! that are OpenAPI 3.0 schemas. Missing tool: the test fails, it never skips.

use std::path::PathBuf;
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn openapi_document_passes_the_specification_validator() {
    let tool = repo().join(".venv/bin/openapi-spec-validator");
    assert!(
        tool.is_file(),
        "openapi-spec-validator is not installed in .venv (scripts/test.sh installs scripts/requirements-test.txt)"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, sluice_api::openapi::document_text()).unwrap();
    let out = Command::new(&tool).arg(&file).output().unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
