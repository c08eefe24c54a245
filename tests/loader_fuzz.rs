//! Property: loading any experiment file, however broken, returns a value or
//! an error; it never panics.

use proptest::prelude::*;

use crate::util::*;

/// Values of every TOML type, including awkward ones.
fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|v| v.to_string()),
        any::<f64>().prop_map(|v| format!("{v:?}")),
        Just("nan".to_string()),
        Just("inf".to_string()),
        Just("-0".to_string()),
        Just("18446744073709551616".to_string()),
        "[a-z_]{0,8}".prop_map(|s| format!("\"{s}\"")),
        Just("[]".to_string()),
        Just("[1, \"two\", 3.0]".to_string()),
        Just("{ a = 1 }".to_string()),
        Just("true".to_string()),
        Just("1979-05-27T07:32:00Z".to_string()),
        "[ -~]{0,12}",
    ]
}

#[derive(Debug, Clone)]
enum Mutation {
    /// Replace the value on a `key = value` line.
    Value(usize, String),
    /// Drop a line.
    Drop(usize),
    /// Insert a line.
    Insert(usize, String),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), toml_value()).prop_map(|(i, v)| Mutation::Value(i, v)),
        any::<usize>().prop_map(Mutation::Drop),
        (
            any::<usize>(),
            prop_oneof![
                "[a-z_]{1,10} = [0-9]{1,3}",
                "\\[[a-z_.]{1,12}\\]",
                Just("type = \"nope\"".to_string()),
                "[ -~]{0,20}",
            ]
        )
            .prop_map(|(i, l)| Mutation::Insert(i, l)),
    ]
}

fn mutate(text: &str, mutations: &[Mutation]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    for m in mutations {
        let n = lines.len().max(1);
        match m {
            Mutation::Value(i, v) => {
                if let Some((k, _)) = lines[i % n].split_once(" = ").map(|(k, v)| (k.to_string(), v.to_string())) {
                    lines[i % n] = format!("{k} = {v}");
                }
            }
            Mutation::Drop(i) if !lines.is_empty() => {
                lines.remove(i % n);
            }
            Mutation::Drop(_) => {}
            Mutation::Insert(i, l) => lines.insert(i % (lines.len() + 1), l.clone()),
        }
    }
    lines.join("\n")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn the_loader_never_panics(mutations in proptest::collection::vec(mutation(), 1..6)) {
        let dir = tempfile::tempdir().unwrap();
        let base = experiment_toml(std::path::Path::new("/data"), 2);
        let path = dir.path().join("fuzz.toml");
        std::fs::write(&path, mutate(&base, &mutations)).unwrap();
        let registry = funnel::plugins::builtin();
        // Either outcome is fine; reaching this line without a panic is the property.
        let _ = funnel::experiment::load(&path, &[], &registry);
    }
}
