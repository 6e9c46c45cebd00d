//! Test support: reads `infra/tap-stack.tf` so tests can check that the stack and the Rust
//! code agree (the metric contract, the agent configuration that user_data writes).

use std::sync::OnceLock;

pub const STACK_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../infra/tap-stack.tf");

fn body() -> &'static hcl::Body {
    static BODY: OnceLock<hcl::Body> = OnceLock::new();
    BODY.get_or_init(|| {
        let src = std::fs::read_to_string(STACK_PATH).unwrap_or_else(|e| panic!("reading {STACK_PATH}: {e}"));
        hcl::parse(&src).unwrap_or_else(|e| panic!("parsing {STACK_PATH}: {e}"))
    })
}

/// The expression of `local.<name>` (searching every `locals` block).
pub fn local_expr(name: &str) -> &'static hcl::Expression {
    let mut found = body()
        .blocks()
        .filter(|b| b.identifier() == "locals")
        .flat_map(|b| b.body().attributes())
        .filter(|a| a.key() == name);
    let attr = found.next().unwrap_or_else(|| panic!("local.{name} not found in {STACK_PATH}"));
    assert!(found.next().is_none(), "local.{name} defined twice");
    attr.expr()
}

/// `local.<name>` as a value (interpolations stay as `${...}` strings).
pub fn local(name: &str) -> hcl::Value {
    hcl::Value::from(local_expr(name).clone())
}

/// The text of a heredoc `local.<name>`, indentation stripped as Terraform does for `<<-`.
pub fn local_heredoc(name: &str) -> String {
    let hcl::Expression::TemplateExpr(t) = local_expr(name) else {
        panic!("local.{name} is not a heredoc");
    };
    let hcl::TemplateExpr::Heredoc(h) = t.as_ref() else {
        panic!("local.{name} is not a heredoc");
    };
    let lines: Vec<&str> = h.template.lines().collect();
    let indent =
        lines.iter().filter(|l| !l.trim().is_empty()).map(|l| l.len() - l.trim_start().len()).min().unwrap_or(0);
    lines.iter().map(|l| l.get(indent..).unwrap_or("")).collect::<Vec<_>>().join("\n")
}

/// The `value` expression of `output "<name>"`, as a value.
pub fn output_value(name: &str) -> hcl::Value {
    let block = body()
        .blocks()
        .find(|b| b.identifier() == "output" && b.labels().first().is_some_and(|l| l.as_str() == name))
        .unwrap_or_else(|| panic!("output {name} not found in {STACK_PATH}"));
    let attr =
        block.body().attributes().find(|a| a.key() == "value").unwrap_or_else(|| panic!("output {name} has no value"));
    hcl::Value::from(attr.expr().clone())
}

/// Labels of every top-level block of one kind (`variable`, `output`, ...).
pub fn labels(kind: &str) -> Vec<String> {
    body()
        .blocks()
        .filter(|b| b.identifier() == kind)
        .filter_map(|b| b.labels().first().map(|l| l.as_str().to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const README_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md");

    /// The README's variable table and output list stay complete as the stack grows.
    #[test]
    fn readme_documents_every_variable_and_output() {
        let readme = std::fs::read_to_string(README_PATH).expect("README.md");
        let variables = labels("variable");
        assert!(variables.len() > 30, "parsed only {} variables", variables.len());
        for v in variables {
            assert!(readme.contains(&format!("| `{v}` |")), "README's variable table lacks `{v}`");
        }
        for o in labels("output") {
            assert!(readme.contains(&format!("`{o}`")), "README's outputs lack `{o}`");
        }
    }
}
