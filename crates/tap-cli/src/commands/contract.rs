//! `tap contract`: the metric contract as a table or JSON.

use std::io::Write;

use tap_core::contract::{self, DimensionSet, Metric};

use crate::cli::Output;

pub fn run(output: Output, out: &mut dyn Write) -> anyhow::Result<()> {
    match output {
        Output::Json => crate::commands::json(out, &contract::contract())?,
        Output::Text => out.write_all(render_text().as_bytes())?,
    }
    Ok(())
}

fn render_text() -> String {
    let mut s = format!("namespace: {}\n\ndimension sets:\n", contract::NAMESPACE);
    for set in DimensionSet::ALL {
        let dims: Vec<_> = set.dimensions().iter().map(|d| d.name()).collect();
        s.push_str(&format!("  {:<9} {{{}}}\n", set.key(), dims.join(", ")));
    }
    s.push_str(&format!("\n{:<25} {:<10} {:<20} {}\n", "METRIC", "UNIT", "DIMENSION SETS", "MEANING"));
    for m in Metric::ALL {
        let spec = m.spec();
        let sets: Vec<_> = spec.sets.iter().map(|d| d.key()).collect();
        s.push_str(&format!(
            "{:<25} {:<10} {:<20} {}\n",
            spec.name,
            spec.unit.as_str(),
            sets.join(","),
            spec.description
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_lists_every_metric_once() {
        let text = render_text();
        for m in Metric::ALL {
            assert_eq!(text.matches(&format!("\n{} ", m.spec().name)).count(), 1, "{}", m.spec().name);
        }
    }

    #[test]
    fn json_is_the_contract() {
        let mut buf = Vec::new();
        run(Output::Json, &mut buf).expect("writes");
        let v: serde_json::Value = serde_json::from_slice(&buf).expect("valid JSON");
        assert_eq!(v["namespace"], contract::NAMESPACE);
        assert_eq!(v["metrics"].as_array().map(Vec::len), Some(Metric::ALL.len()));
        assert_eq!(v["dimension_sets"][2], serde_json::json!(["fleet", ["Environment"]]));
    }
}
