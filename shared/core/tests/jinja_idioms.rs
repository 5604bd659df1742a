//! Jinja2's mutating idioms, as PowerFlow's Transform examples write them: lists and
//! dicts a template builds change in place through Python's methods, under `{% set _ = … %}`
//! and `{% do … %}`; everything else about templates is unchanged.

use serde_json::{json, Map, Value};
use sluice_core::template::{check_template, render};

fn context(value: Value) -> Map<String, Value> {
    value.as_object().unwrap().clone()
}

fn rendered(template: &str, ctx: Value) -> Value {
    let text = render(template, &context(ctx)).unwrap_or_else(|e| panic!("{template}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{template} rendered {text:?}: {e}"))
}

fn devices() -> Value {
    json!({"input": {"devices": [
        {"name": "web-1", "ip": "10.0.0.1", "os": "linux"},
        {"name": "db-1", "ip": "10.0.0.2", "os": "linux"},
        {"name": "dc-1", "ip": "10.0.0.3", "os": "windows"}
    ]}})
}

#[test]
fn a_list_is_built_with_append_under_set_and_do() {
    let with_set = "{% set names = [] %}{% for d in input.devices %}{% set _ = names.append(d.name) %}{% endfor %}{{ names | tojson }}";
    let with_do = "{% set names = [] %}{% for d in input.devices %}{% do names.append(d.name) %}{% endfor %}{{ names | tojson }}";
    for template in [with_set, with_do] {
        assert_eq!(
            rendered(template, devices()),
            json!(["web-1", "db-1", "dc-1"])
        );
    }
}

#[test]
fn a_dict_is_built_with_update_and_grouped_with_setdefault() {
    let by_name = "{% set ips = {} %}{% for d in input.devices %}{% set _ = ips.update({d.name: d.ip}) %}{% endfor %}{{ ips | tojson }}";
    assert_eq!(
        rendered(by_name, devices()),
        json!({"web-1": "10.0.0.1", "db-1": "10.0.0.2", "dc-1": "10.0.0.3"})
    );
    // setdefault returns the stored list, which append then changes (Python's aliasing).
    let grouped = "{% set by_os = {} %}{% for d in input.devices %}{% do by_os.setdefault(d.os, []).append(d.name) %}{% endfor %}{{ by_os | tojson }}";
    assert_eq!(
        rendered(grouped, devices()),
        json!({"linux": ["web-1", "db-1"], "windows": ["dc-1"]})
    );
}

#[test]
fn the_usual_list_and_dict_methods_work() {
    let template = r#"{% set l = [3, 1, 2] %}{% do l.extend([5, 4]) %}{% do l.insert(0, 9) %}{% set popped = l.pop() %}{% do l.remove(1) %}{% do l.sort() %}{% set d = {"a": 1, "b": 2} %}{% set gone = d.pop("a") %}{% do d.update({"c": 3}) %}{{ {"l": l, "popped": popped, "gone": gone, "d": d, "keys": d.keys() | list, "len": l | length, "first": l[0], "last": l[-1], "has_b": "b" in d, "get": d.get("z", "none")} | tojson }}"#;
    assert_eq!(
        rendered(template, json!({})),
        json!({"l": [2, 3, 5, 9], "popped": 4, "gone": 1, "d": {"b": 2, "c": 3},
               "keys": ["b", "c"], "len": 4, "first": 2, "last": 9, "has_b": true, "get": "none"})
    );
}

#[test]
fn items_of_a_built_dict_iterate_in_insertion_order() {
    let template = r#"{% set d = {} %}{% do d.update({"z": 1}) %}{% do d.update({"a": 2}) %}{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}"#;
    assert_eq!(render(template, &Map::new()).unwrap(), "z=1;a=2;");
}

#[test]
fn a_container_never_holds_itself() {
    for template in [
        "{% set l = [1] %}{% do l.append(l) %}",
        "{% set d = {} %}{% do d.update({'self': d}) %}",
        "{% set a = [] %}{% set b = {'a': a} %}{% do a.append(b) %}",
        "{% set a = [] %}{% set b = [] %}{% do b.append(a) %}{% do a.insert(0, b) %}",
        "{% set d = {} %}{% do d.setdefault('k', d) %}",
    ] {
        let error = render(template, &Map::new()).unwrap_err();
        assert!(
            error.0.contains("cannot contain itself"),
            "{template}: {error}"
        );
    }
    // Nesting is bounded, so that rendering what was built cannot recurse without end.
    let deep = "{% set top = [] %}{% set ns = namespace(cur=top) %}{% for i in range(2000) %}{% set next = [] %}{% do ns.cur.append(next) %}{% set ns.cur = next %}{% endfor %}{% do [].append(top) %}";
    let error = render(deep, &Map::new()).unwrap_err();
    assert!(error.0.contains("nest at most"), "{error}");
    // A list extended by itself doubles, as in Python.
    let template = "{% set l = [1, [2]] %}{% do l.extend(l) %}{{ l | tojson }}";
    assert_eq!(rendered(template, json!({})), json!([1, [2], 1, [2]]));
}

#[test]
fn subscripts_strings_and_raw_text_are_left_alone() {
    let template = r#"{{ input.devices[0]["name"] }} {{ "[not a list]" }} {% raw %}{{ [1] }}{% endraw %} {{ [1, 2][1] }} {{ (input.devices | map(attribute="ip") | list)[2] }}"#;
    assert_eq!(
        render(template, &context(devices())).unwrap(),
        "web-1 [not a list] {{ [1] }} 2 10.0.0.3"
    );
    assert!(check_template("{% set x = [] %}{% do x.append(1) %}").is_ok());
}

#[test]
fn values_from_the_context_are_copied_before_they_change() {
    let template = "{% set rows = [] %}{% do rows.extend(input.devices | map(attribute='name')) %}{% do rows.reverse() %}{{ {'rows': rows, 'input': input.devices | map(attribute='name') | list} | tojson }}";
    assert_eq!(
        rendered(template, devices()),
        json!({"rows": ["dc-1", "db-1", "web-1"], "input": ["web-1", "db-1", "dc-1"]})
    );
}

#[test]
fn a_mutating_method_on_context_data_fails_clearly() {
    let error = render("{% do input.devices.append(1) %}", &context(devices())).unwrap_err();
    assert!(error.0.contains("append"), "{error}");
}
