//! The README's configuration example must stay valid: it is compiled here.

#[test]
fn readme_config_example_compiles() {
    let readme = include_str!("../../../README.md");
    let start = readme.find("## Configuration reference").unwrap_or_else(|| panic!("README lost its config section"));
    let section = &readme[start..];
    let open = section.find("```json\n").unwrap_or_else(|| panic!("no json block in the config section")) + 8;
    let close = section[open..].find("```").unwrap_or_else(|| panic!("unterminated json block")) + open;
    let config = meshgate_core::compile(&section.as_bytes()[open..close]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.routes.len(), 10);
    assert_eq!(config.keyring.keys.len(), 2);
    assert_eq!(config.realm, "example");
}

#[test]
fn readme_rate_limit_example_compiles() {
    let readme = include_str!("../../../README.md");
    let start =
        readme.find("```json\n{\"rate_limits\"").unwrap_or_else(|| panic!("README lost its rate-limit example")) + 8;
    let end = readme[start..].find("```").unwrap_or_else(|| panic!("unterminated json block")) + start;
    let config = meshgate_core::compile(&readme.as_bytes()[start..end]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.rate_limits.rules.len(), 3);
    assert!(config.rate_limits.abuse.is_some());
}

#[test]
fn readme_sync_example_compiles() {
    let readme = include_str!("../../../README.md");
    let start = readme.find("```json\n{\"sync\"").unwrap_or_else(|| panic!("README lost its sync example")) + 8;
    let end = readme[start..].find("```").unwrap_or_else(|| panic!("unterminated json block")) + start;
    let config = meshgate_core::compile(&readme.as_bytes()[start..end]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.sync.map(|s| s.cluster).as_deref(), Some("control_plane"));
}

#[test]
fn readme_credits_example_compiles() {
    let readme = include_str!("../../../README.md");
    let marker = "```json\n{\"routes\": [{\"name\": \"llm\"";
    let start = readme.find(marker).unwrap_or_else(|| panic!("README lost its credits example")) + 8;
    let end = readme[start..].find("```").unwrap_or_else(|| panic!("unterminated json block")) + start;
    let config = meshgate_core::compile(&readme.as_bytes()[start..end]).unwrap_or_else(|e| panic!("{e}"));
    let credits = config.credits.unwrap_or_else(|| panic!("no credits section"));
    assert_eq!((credits.routes.get("llm"), credits.exhausted_status), (Some(&10), 402));
}
