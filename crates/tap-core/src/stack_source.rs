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

/// The `depends_on` list of `resource "<kind>" "<name>"`, as `type.name` strings.
pub fn depends_on(kind: &str, name: &str) -> Vec<String> {
    let block = resources(kind)
        .find(|b| b.labels().get(1).is_some_and(|l| l.as_str() == name))
        .unwrap_or_else(|| panic!("resource {kind}.{name} not found in {STACK_PATH}"));
    let Some(attr) = block.body().attributes().find(|a| a.key() == "depends_on") else {
        return Vec::new();
    };
    let hcl::Expression::Array(items) = attr.expr() else { panic!("{kind}.{name}: depends_on is not a list") };
    items.iter().map(|e| e.to_string()).collect()
}

/// Names of every `resource "<kind>" "<name>"`.
pub fn resource_names(kind: &str) -> Vec<String> {
    resources(kind).filter_map(|b| b.labels().get(1).map(|l| l.as_str().to_owned())).collect()
}

/// Every `resource "<kind>" ...` block.
fn resources(kind: &str) -> impl Iterator<Item = &'static hcl::Block> {
    body()
        .blocks()
        .filter(move |b| b.identifier() == "resource" && b.labels().first().is_some_and(|l| l.as_str() == kind))
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

    /// Regression (first boot raced the network): user_data runs once, so the fleet must not
    /// launch a node before everything its boot reaches for exists — the NAT route, the
    /// endpoints, every security-group rule, the node policy, the bucket policy and the binaries.
    /// The stand-in provider cannot see ordering, so this holds the file to it.
    #[test]
    fn fleet_waits_for_everything_the_boot_needs() {
        let deps = depends_on("aws_ec2_fleet", "this");
        for need in [
            "aws_iam_role_policy.node",
            "aws_iam_role_policy_attachment.ssm_core",
            "aws_iam_service_linked_role.ec2_fleet",
            "aws_route_table_association.private",
            "aws_route.private_nat",
            "aws_nat_gateway.this",
            "aws_vpc_endpoint.gateway",
            "aws_vpc_endpoint.interface",
            "aws_vpc_security_group_egress_rule.nodes_internet",
            "aws_vpc_security_group_egress_rule.nodes_gateway_endpoints",
            "aws_vpc_security_group_egress_rule.nodes_interface_endpoints",
            "aws_vpc_security_group_ingress_rule.endpoints_https",
            "aws_s3_bucket_policy.this",
            "aws_s3_object.node_boot",
            "aws_s3_object.agent",
            "aws_s3_object.cli",
        ] {
            assert!(deps.iter().any(|d| d == need), "aws_ec2_fleet.this must depend on {need}; it has {deps:?}");
        }
        // Every security-group rule of the nodes, whatever its name, is among them.
        for kind in ["aws_vpc_security_group_egress_rule", "aws_vpc_security_group_ingress_rule"] {
            for rule in resource_names(kind) {
                let r = format!("{kind}.{rule}");
                assert!(deps.contains(&r), "aws_ec2_fleet.this must depend on {r}");
            }
        }
    }

    const STACK_DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/stack.md");

    /// The stack page's variable table and output list (docs/stack.md, linked from the README)
    /// stay complete as the stack grows.
    #[test]
    fn readme_documents_every_variable_and_output() {
        let readme = std::fs::read_to_string(STACK_DOC).expect("docs/stack.md");
        let variables = labels("variable");
        assert!(variables.len() > 30, "parsed only {} variables", variables.len());
        for v in variables {
            assert!(readme.contains(&format!("| `{v}` |")), "docs/stack.md's variable table lacks `{v}`");
        }
        for o in labels("output") {
            assert!(readme.contains(&format!("`{o}`")), "docs/stack.md's outputs lack `{o}`");
        }
    }
}
