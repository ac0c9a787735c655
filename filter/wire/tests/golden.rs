//! Golden fixture: the wire types read and write the same JSON. The control
//! plane round-trips the same file, so the two sides cannot drift.

use meshgate_wire::PluginConfig;

const GOLDEN: &str = include_str!("golden/plugin-config.json");

#[test]
fn plugin_config_round_trips() {
    let parsed: PluginConfig = serde_json::from_str(GOLDEN).unwrap_or_else(|e| panic!("{e}"));
    let written = serde_json::to_value(&parsed).unwrap_or_else(|e| panic!("{e}"));
    let reparsed: PluginConfig = serde_json::from_value(written.clone()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(parsed, reparsed);
    // Every value in the fixture survives (nothing silently dropped);
    // serialization may add defaults.
    let original: serde_json::Value = serde_json::from_str(GOLDEN).unwrap_or_default();
    assert_subset(&original, &written, "$");
}

fn assert_subset(want: &serde_json::Value, got: &serde_json::Value, at: &str) {
    use serde_json::Value;
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            for (k, v) in w {
                assert_subset(v, g.get(k).unwrap_or(&Value::Null), &format!("{at}.{k}"));
            }
        }
        (Value::Array(w), Value::Array(g)) => {
            assert_eq!(w.len(), g.len(), "{at}");
            for (i, (a, b)) in w.iter().zip(g).enumerate() {
                assert_subset(a, b, &format!("{at}[{i}]"));
            }
        }
        _ => assert_eq!(want, got, "{at}"),
    }
}

#[test]
fn unknown_fields_are_rejected() {
    let err = serde_json::from_str::<PluginConfig>(r#"{"routes": [], "rate_limitz": 1}"#);
    assert!(err.is_err());
}
