//! `template.yaml` as CloudFormation sees it: translated by aws-sam-translator (the SAM
//! transform, offline, through `infra/sam-translate.py`), every IAM role of the result
//! grants exactly what the table of `docs/aws.md` says, and nothing grants `*`.
//!
//! Needs Python with aws-sam-translator: `SLUICE_PYTHON`, else the repository's `.venv`
//! (what `scripts/test.sh` installs), else `python3`. Without it the test fails.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use sluice_infra::iam::{self, Row};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("SLUICE_PYTHON") {
        return p.into();
    }
    let venv = repo().join(".venv/bin/python");
    if venv.exists() {
        venv
    } else {
        "python3".into()
    }
}

fn translated() -> Value {
    let out = Command::new(python())
        .arg(repo().join("infra/sam-translate.py"))
        .arg(repo().join("template.yaml"))
        .output()
        .expect("python runs (set SLUICE_PYTHON or run scripts/test.sh to make .venv)");
    assert!(
        out.status.success(),
        "the SAM transform failed (is aws-sam-translator installed? scripts/requirements-test.txt):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A resource in the table's notation: `X.Arn` for `Fn::GetAtt`, the text of `Fn::Sub`.
fn shown(resource: &Value) -> String {
    if let Some(att) = resource.get("Fn::GetAtt") {
        return match att {
            Value::Array(parts) => format!(
                "{}.{}",
                parts[0].as_str().unwrap(),
                parts[1].as_str().unwrap()
            ),
            Value::String(s) => s.clone(),
            other => panic!("unexpected GetAtt {other}"),
        };
    }
    if let Some(sub) = resource.get("Fn::Sub") {
        return sub.as_str().expect("Sub without variables").to_string();
    }
    match resource {
        Value::String(s) => s.clone(),
        other => panic!("unexpected resource {other}"),
    }
}

fn strings(value: Option<&Value>) -> Vec<String> {
    match value {
        None => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str().unwrap().to_string())
            .collect(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(other) => panic!("unexpected {other}"),
    }
}

/// Every statement of every role, as rows of the table.
fn role_rows(template: &Value) -> BTreeSet<Row> {
    let mut rows = BTreeSet::new();
    for (id, resource) in template["Resources"].as_object().unwrap() {
        let kind = resource["Type"].as_str().unwrap();
        assert!(
            kind != "AWS::IAM::Policy" && kind != "AWS::IAM::ManagedPolicy",
            "{id}: policies outside the roles are not in the table"
        );
        if kind != "AWS::IAM::Role" {
            continue;
        }
        let properties = &resource["Properties"];
        assert!(
            properties.get("ManagedPolicyArns").is_none(),
            "{id} attaches managed policies (their resources are `*`): {}",
            properties["ManagedPolicyArns"]
        );
        for policy in properties["Policies"].as_array().unwrap() {
            for statement in policy["PolicyDocument"]["Statement"].as_array().unwrap() {
                assert_eq!(statement["Effect"], "Allow", "{id}: {statement}");
                let resources: Vec<String> = match &statement["Resource"] {
                    Value::Array(items) => items.iter().map(shown).collect(),
                    single => vec![shown(single)],
                };
                assert!(
                    resources.iter().all(|r| r != "*"),
                    "{id} grants Resource \"*\": {statement}"
                );
                let partitions = statement
                    .get("Condition")
                    .map(|c| {
                        let keys = &c["ForAllValues:StringEquals"]["dynamodb:LeadingKeys"];
                        assert!(!keys.is_null(), "{id}: unexpected condition {c}");
                        strings(Some(keys))
                    })
                    .unwrap_or_default();
                rows.insert(Row {
                    role: id.clone(),
                    actions: strings(statement.get("Action")),
                    resources,
                    partitions,
                });
            }
        }
    }
    rows
}

#[test]
fn every_role_grants_exactly_what_docs_aws_md_publishes() {
    let template = translated();
    let doc = std::fs::read_to_string(repo().join("docs/aws.md")).unwrap();
    let published: BTreeSet<Row> = iam::parse_markdown_table(&doc)
        .unwrap()
        .into_iter()
        .collect();
    let granted = role_rows(&template);
    let missing: Vec<_> = published.difference(&granted).collect();
    let extra: Vec<_> = granted.difference(&published).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "the template's roles and docs/aws.md disagree\n  published, not granted: {missing:#?}\n  granted, not published: {extra:#?}"
    );

    // Every function runs under one of those roles (none under a role SAM generated).
    let resources = template["Resources"].as_object().unwrap();
    let roles: BTreeSet<&str> = published.iter().map(|r| r.role.as_str()).collect();
    for (id, resource) in resources {
        if resource["Type"] == "AWS::Lambda::Function" {
            let role = shown(&resource["Properties"]["Role"]);
            let role = role.strip_suffix(".Arn").unwrap();
            assert!(roles.contains(role), "{id} runs under {role}");
        }
    }
}

/// The properties the issue asks of the roles, read from the published table.
#[test]
fn no_step_function_reaches_access_data_or_writes_definitions_secrets_or_schedules() {
    let template = translated();
    let rows = role_rows(&template);
    let mut by_role: BTreeMap<&str, Vec<&Row>> = BTreeMap::new();
    for row in &rows {
        by_role.entry(row.role.as_str()).or_default().push(row);
    }
    let writes = |action: &str| {
        [
            "dynamodb:PutItem",
            "dynamodb:UpdateItem",
            "dynamodb:DeleteItem",
            "dynamodb:BatchWriteItem",
        ]
        .contains(&action)
    };
    for (role, rows) in &by_role {
        let is_api = *role == "ApiFunctionRole";
        for row in rows {
            let on = |r: &str| row.resources.iter().any(|x| x.starts_with(r));
            if !is_api {
                assert!(
                    !on("AccessTable"),
                    "{role} reaches the access table: {row:?}"
                );
                assert!(
                    row.actions.iter().all(|a| !a.starts_with("scheduler:")
                        && !a.starts_with("iam:")
                        && !matches!(
                            a.as_str(),
                            "secretsmanager:CreateSecret"
                                | "secretsmanager:PutSecretValue"
                                | "secretsmanager:DeleteSecret"
                        )),
                    "{role} may change secrets or schedules: {row:?}"
                );
                if on("DefinitionsTable") {
                    assert!(
                        !row.partitions.is_empty(),
                        "{role} reaches every kind of definition: {row:?}"
                    );
                    if row.actions.iter().any(|a| writes(a)) {
                        assert_eq!(
                            (*role, row.partitions.as_slice()),
                            ("StartFunctionRole", &["schedule_stats".to_string()][..]),
                            "only start writes definitions, and only schedule stats"
                        );
                    }
                }
            }
            assert!(
                row.actions.iter().all(|a| !a.ends_with(":*") && a != "*"),
                "{role} grants a wildcard action: {row:?}"
            );
        }
    }
    // Each step function polls its own queue only.
    for (role, rows) in &by_role {
        let Some(step) = role.strip_suffix("FunctionRole") else {
            continue;
        };
        let polled: Vec<&String> = rows
            .iter()
            .filter(|r| r.actions.iter().any(|a| a == "sqs:ReceiveMessage"))
            .flat_map(|r| r.resources.iter())
            .collect();
        if matches!(step, "Api" | "Start") {
            assert!(polled.is_empty(), "{role} polls {polled:?}");
        } else if step != "DeadLetter" {
            assert_eq!(polled, [&format!("{step}Queue.Arn")], "{role}");
        }
    }
}
