//! `salvor tag`: change snapshots' tags.

use clap::Args;
use salvor_engine::ops::tag::{self, TagOptions};

use super::output::outln;
use super::{GlobalOptions, output};

/// Arguments of `salvor tag`.
#[derive(Args, Debug)]
pub struct TagArgs {
    /// Snapshots to change, by id or unique prefix.
    #[arg(required = true)]
    ids: Vec<String>,
    /// Replace every tag with these (repeat for several; `--set ''` for none).
    #[arg(long, value_name = "TAG", num_args = 1)]
    set: Vec<String>,
    /// Add this tag (repeat for several).
    #[arg(long, value_name = "TAG")]
    add: Vec<String>,
    /// Remove this tag (repeat for several).
    #[arg(long, value_name = "TAG")]
    remove: Vec<String>,
}

/// Runs `salvor tag`.
pub fn run(g: &GlobalOptions, a: &TagArgs) -> anyhow::Result<i32> {
    let set = (!a.set.is_empty()).then(|| {
        a.set
            .iter()
            .filter(|t| !t.is_empty())
            .cloned()
            .collect::<Vec<_>>()
    });
    let opts = TagOptions {
        ids: a.ids.clone(),
        set,
        add: a.add.clone(),
        remove: a.remove.clone(),
    };
    let changed = tag::tag(&g.open()?, &opts)?;
    if g.json {
        output::json(&changed)?;
    } else if !g.quiet {
        for c in &changed {
            outln!(
                "snapshot {} is now {} (tags: {})",
                c.old.short(),
                c.new.short(),
                c.tags.join(",")
            )?;
        }
        outln!(
            "{} snapshot{} changed",
            changed.len(),
            if changed.len() == 1 { "" } else { "s" }
        )?;
    }
    Ok(0)
}
