//! Every page of `docs/` (and the root README) is included by `src/lib.rs`,
//! so a new page's Rust blocks are compiled by `cargo test` like the others'.

use std::path::Path;

#[test]
fn every_docs_page_is_a_doctest() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let harness = std::fs::read_to_string(root.join("src/lib.rs")).expect("src/lib.rs");
    let mut pages = vec!["../../README.md".to_owned()];
    for entry in std::fs::read_dir(root.join("../docs")).expect("docs/") {
        let name = entry.expect("a docs entry").file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".md") {
            pages.push(format!("../../docs/{name}"));
        }
    }
    assert!(pages.len() > 5, "docs/ has its pages: {pages:?}");
    for page in pages {
        assert!(
            harness.contains(&format!("include_str!(\"{page}\")")),
            "{page} is not included by tests/src/lib.rs"
        );
    }
}
