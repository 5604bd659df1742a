use serde_json::json;
use sluice_core::model::LogLevel;
use sluice_steps::Echo;

use super::{messages, ok, run};

#[tokio::test]
async fn returns_the_value_as_is() {
    let value = json!({"a": [1, 2.5, "x", null, true], "b": {}});
    assert_eq!(ok(&Echo, json!({"value": value})).await, value);
    assert_eq!(ok(&Echo, json!({"value": null})).await, json!(null));
}

#[tokio::test]
async fn logs_at_info_and_warns() {
    let (result, logs) = run(
        &Echo,
        json!({"value": 3, "log": "hello there", "warning": "only 3 devices"}),
    )
    .await;
    let output = result.unwrap();
    assert_eq!(output.value, json!(3));
    assert_eq!(output.warnings, ["only 3 devices"]);
    assert_eq!(messages(&logs, LogLevel::Info), ["hello there"]);
}
