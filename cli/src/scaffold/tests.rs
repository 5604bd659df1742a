use super::*;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A project made from this checkout in a temporary directory.
fn project() -> (tempfile::TempDir, PathBuf) {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("acme");
    new_project(&dir, &Source::Path(repo())).unwrap();
    (parent, dir)
}

fn invalid_input(error: anyhow::Error) -> String {
    error
        .downcast_ref::<InvalidInput>()
        .unwrap_or_else(|| panic!("not an input error (exit 2): {error:#}"))
        .0
        .clone()
}

fn text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The project's registry as its binary would build it: the built-in step types and the
/// example (compiled here from its template).
fn example_registry() -> StepRegistry {
    let mut registry = sluice_steps::builtin_registry();
    registry.register(example_step::Greet::default());
    registry
}

#[test]
fn the_builtin_functions_have_the_settings_of_sluices_own_stack() {
    let stack = sluice_infra::Stack::load(&repo().join("infra/functions.toml")).unwrap();
    let mut ours: Vec<&str> = BUILTIN_FUNCTIONS.iter().map(|f| f.name).collect();
    let mut theirs: Vec<&str> = stack.functions.iter().map(|f| f.name.as_str()).collect();
    ours.sort();
    theirs.sort();
    assert_eq!(ours, theirs, "the functions of every project are Sluice's");
    for builtin in BUILTIN_FUNCTIONS {
        let function = stack
            .functions
            .iter()
            .find(|f| f.name == builtin.name)
            .unwrap();
        assert_eq!(
            (builtin.memory, builtin.timeout, builtin.cache),
            (function.memory, function.timeout, function.cache),
            "{}",
            builtin.name
        );
        let kind: sluice_infra::Kind = serde_json::from_value(builtin.kind.into()).unwrap();
        assert_eq!(kind, function.kind, "{}", builtin.name);
    }
}

#[test]
fn a_project_has_sluices_profiles() {
    let manifest = text(&repo().join("Cargo.toml"));
    assert!(
        manifest.contains(include_str!("templates/profiles.toml")),
        "cli/src/scaffold/templates/profiles.toml must be the [profile.*] tables at the end of Cargo.toml"
    );
}

#[test]
fn a_new_project_has_its_files_generated_and_current() {
    let (_parent, dir) = project();
    for path in [
        "Cargo.toml",
        "Cargo.lock",
        "README.md",
        ".gitignore",
        "cli/src/main.rs",
        "cli/tests/generated.rs",
        "steps/greet/src/lib.rs",
        "functions/greet/src/main.rs",
        "functions/api/src/main.rs",
        "functions/transform/Cargo.toml",
        "infra/samconfig.toml",
        "infra/catalogue.json",
        "template.yaml",
        "examples/hello.json",
    ] {
        assert!(dir.join(path).is_file(), "{path}");
    }
    let workspace = text(&dir.join("Cargo.toml"));
    let sdk = format!(
        "sluice-sdk = {{ path = {} }}",
        toml_string(
            &repo()
                .canonicalize()
                .unwrap()
                .join("shared/sdk")
                .display()
                .to_string()
        )
    );
    assert!(workspace.contains(&sdk), "{workspace}");
    assert!(workspace.contains("#   sluice-sdk = \"0.1"), "{workspace}");
    assert_eq!(read_project_name(&dir).unwrap(), "acme");
    assert_eq!(
        text(&dir.join("steps/greet/src/lib.rs")),
        STEP_TEMPLATE,
        "the example is the template"
    );
    let lib = text(&dir.join("cli/src/lib.rs"));
    assert!(lib.contains("registry.register(greet_step::Greet::default());\n    // The project's"));
    let manifest = text(&dir.join("cli/Cargo.toml"));
    assert!(manifest.contains("greet-step = { path = \"../steps/greet\" }\n# The project's"));
    assert!(manifest.contains("name = \"acme\"\npath = \"src/main.rs\""));
    let api = text(&dir.join("functions/api/Cargo.toml"));
    assert!(api.contains("name = \"acme-fn-api\""), "{api}");
    assert!(api.contains("features = [\"api\"]"), "{api}");

    // What the project's own test checks: the template and the catalogue are current.
    let done = generate(&example_registry(), &dir, CATALOGUE.as_ref(), Mode::Check).unwrap();
    assert!(done.stale.is_empty(), "{:?}", done.stale);
    let greet = done
        .stack
        .functions
        .iter()
        .find(|f| f.name == "greet")
        .unwrap();
    assert_eq!(greet.binary(), "acme-greet");
    assert_eq!(greet.code_uri(), "functions/greet");
    assert!(text(&dir.join("template.yaml")).contains("Binary: acme-greet"));

    // Every function's deploy settings are its functions.toml entry's.
    for function in &done.stack.functions {
        let manifest: toml::Table =
            toml::from_str(&text(&dir.join(function.code_uri()).join("Cargo.toml"))).unwrap();
        let deploy = &manifest["package"]["metadata"]["lambda"]["deploy"];
        assert_eq!(
            deploy["memory"].as_integer(),
            Some(i64::from(function.memory))
        );
        assert_eq!(
            deploy["timeout"].as_integer(),
            Some(i64::from(function.timeout))
        );
        assert_eq!(
            manifest["bin"][0]["name"].as_str(),
            Some(function.binary().as_str())
        );
    }
}

#[test]
fn new_step_adds_a_wired_step_type_whose_catalogue_entry_is_the_renamed_example() {
    let (_parent, dir) = project();
    new_step(&dir, "order_lookup").unwrap();
    let source = text(&dir.join("steps/order_lookup/src/lib.rs"));
    assert!(source.contains("pub struct OrderLookup {"), "{source}");
    assert!(source.contains("const NAME: &'static str = \"order_lookup\";"));
    assert!(!source.contains("greet") && !source.contains("Greet"));
    assert!(
        text(&dir.join("steps/order_lookup/Cargo.toml")).contains("name = \"order-lookup-step\"")
    );
    let lib = text(&dir.join("cli/src/lib.rs"));
    assert!(lib.contains(
        "greet_step::Greet::default());\n    registry.register(order_lookup_step::OrderLookup::default());\n"
    ));
    assert!(text(&dir.join("functions/order_lookup/src/main.rs"))
        .contains("registry.register(order_lookup_step::OrderLookup::default());"));

    let catalogue: Vec<CatalogueEntry> = serde_json::from_str(&text(&dir.join(CATALOGUE))).unwrap();
    let entry = catalogue.iter().find(|e| e.name == "order_lookup").unwrap();
    let example = catalogue.iter().find(|e| e.name == "greet").unwrap();
    assert_eq!(entry.parameters["title"], "OrderLookupParams");
    assert_eq!(entry.version, example.version);
    assert_eq!(
        entry.parameters["properties"],
        example.parameters["properties"]
    );
    let stack = sluice_infra::Stack::load(&dir.join("infra/functions.toml")).unwrap();
    let function = stack
        .functions
        .iter()
        .find(|f| f.name == "order_lookup")
        .unwrap();
    assert_eq!(function.binary(), "acme-order-lookup");
    assert!(text(&dir.join("template.yaml")).contains("OrderLookupFunction:"));

    // Taken and invalid names are refused before anything is written.
    let before = text(&dir.join("infra/functions.toml"));
    for (name, expected) in [
        ("order_lookup", "already exists"),
        ("echo", "taken by a built-in"),
        ("transform", "taken by a built-in"),
        ("api", "taken by a built-in"),
        ("Fetch", "lowercase letters"),
        ("9lives", "starting with a letter"),
        ("web-hook", "lowercase letters"),
    ] {
        let message = invalid_input(new_step(&dir, name).unwrap_err());
        assert!(message.contains(expected), "{name}: {message}");
    }
    assert_eq!(text(&dir.join("infra/functions.toml")), before);
}

#[test]
fn new_refuses_a_non_empty_directory_and_a_bad_name() {
    let parent = tempfile::tempdir().unwrap();
    let busy = parent.path().join("busy");
    std::fs::create_dir(&busy).unwrap();
    std::fs::write(busy.join("notes.txt"), "mine").unwrap();
    let message = invalid_input(new_project(&busy, &Source::Path(repo())).unwrap_err());
    assert!(message.contains("not empty"), "{message}");
    assert_eq!(std::fs::read_dir(&busy).unwrap().count(), 1);

    let message = invalid_input(
        new_project(&parent.path().join("My_Proj"), &Source::Path(repo())).unwrap_err(),
    );
    assert!(message.contains("\"My_Proj\""), "{message}");

    let message = invalid_input(sluice_checkout(parent.path()).unwrap_err().into());
    assert!(message.contains("not a Sluice checkout"), "{message}");

    // An empty directory is fine.
    let empty = parent.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    new_project(
        &empty,
        &Source::Git("https://git.example.test/sluice".into()),
    )
    .unwrap();
    let workspace = text(&empty.join("Cargo.toml"));
    assert!(workspace.contains("sluice-cli = { git = \"https://git.example.test/sluice\" }"));
    assert!(!empty.join("Cargo.lock").exists());
}

#[test]
fn new_step_outside_a_project_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let message = invalid_input(find_project(dir.path()).unwrap_err().into());
    assert!(message.contains("not inside a project"), "{message}");
    let (_parent, project) = project();
    std::fs::create_dir_all(project.join("steps/greet/src/deeper")).unwrap();
    assert_eq!(
        find_project(&project.join("steps/greet/src/deeper")).unwrap(),
        project
    );
}
