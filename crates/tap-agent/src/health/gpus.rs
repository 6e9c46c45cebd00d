//! How many GPUs an instance type has, for the instance families the stack allows
//! (`var.instance_types`: p3, p3dn, p4d, p4de, p5, p5e, p5en, p6-b200, g4dn, g5, g6, g6e, gr6).

/// GPUs of `instance_type`, `None` for types this table does not know (the check is skipped).
pub fn expected_gpus(instance_type: &str) -> Option<u32> {
    let (family, size) = instance_type.split_once('.')?;
    let n = match (family, size) {
        ("p3", "2xlarge") => 1,
        ("p3", "8xlarge") => 4,
        ("p3", "16xlarge") | ("p3dn", "24xlarge") => 8,
        ("p4d" | "p4de", "24xlarge") => 8,
        ("p5", "4xlarge") => 1,
        ("p5" | "p5e" | "p5en" | "p6-b200", "48xlarge") => 8,
        ("g4dn", "xlarge" | "2xlarge" | "4xlarge" | "8xlarge" | "16xlarge") => 1,
        ("g4dn", "12xlarge") => 4,
        ("g4dn", "metal") => 8,
        ("g5" | "g6" | "g6e", "xlarge" | "2xlarge" | "4xlarge" | "8xlarge" | "16xlarge") => 1,
        ("g5" | "g6" | "g6e", "12xlarge" | "24xlarge") => 4,
        ("g5" | "g6" | "g6e", "48xlarge") => 8,
        ("gr6", "4xlarge" | "8xlarge") => 1,
        _ => return None,
    };
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_and_unknown_types() {
        assert_eq!(expected_gpus("p3.2xlarge"), Some(1));
        assert_eq!(expected_gpus("p3.16xlarge"), Some(8));
        assert_eq!(expected_gpus("p4d.24xlarge"), Some(8));
        assert_eq!(expected_gpus("g5.12xlarge"), Some(4));
        assert_eq!(expected_gpus("g4dn.metal"), Some(8));
        assert_eq!(expected_gpus("m5.large"), None);
        assert_eq!(expected_gpus("p3"), None);
        assert_eq!(expected_gpus(""), None);
    }

    /// Every family the stack's `instance_types` validation accepts has an entry here.
    #[test]
    fn covers_the_stack_families() {
        for family in ["p3", "p3dn", "p4d", "p4de", "p5", "p5e", "p5en", "p6-b200", "g4dn", "g5", "g6", "g6e", "gr6"] {
            let any = ["xlarge", "2xlarge", "4xlarge", "12xlarge", "16xlarge", "24xlarge", "48xlarge", "metal"]
                .iter()
                .any(|s| expected_gpus(&format!("{family}.{s}")).is_some());
            assert!(any, "{family}");
        }
    }
}
