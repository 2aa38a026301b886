//! `gridwatch generate`: record the example city's events as NDJSON.

use std::process::ExitCode;

use anyhow::{Context, Result, anyhow};
use gridwatch_connectors::file::NdjsonWriter;
use gridwatch_connectors::generator::CityGenerator;
use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::GenerateArgs;
use crate::run::generator_settings;

pub fn generate(args: GenerateArgs) -> Result<ExitCode> {
    if let Some(dir) = &args.zones {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for (name, text) in gridwatch_connectors::city_map::geojson_files() {
            let path = dir.join(name);
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        }
        eprintln!("wrote the example city's zone files to {}", dir.display());
    }
    let Some(out_path) = &args.out else { return Ok(ExitCode::SUCCESS) };
    let (config, _plan) = gridwatch_rules::load_config(&args.config).into_result().map_err(|e| anyhow!("{e}"))?;
    let settings = generator_settings(&config, &args.generator)?;
    let mut generator = CityGenerator::new(settings);
    if out_path.exists() && !args.force {
        return Err(anyhow!("`{}` exists: pass --force to replace it, or choose another --out", out_path.display()));
    }
    // Written beside the file and renamed over it at the end: an interrupted run leaves
    // no half recording, and the old file stays until the new one is whole.
    let mut out = NdjsonWriter::replace(out_path)?;
    let bar = ProgressBar::new(generator.estimated_total());
    bar.set_style(ProgressStyle::with_template(
        "{spinner} {wide_bar} {human_pos}/{human_len} events ({per_sec}, {eta})",
    )?);
    let mut n = 0u64;
    while let Some((_, payload)) = generator.next_event() {
        out.write_raw(payload)?;
        n += 1;
        if n.is_multiple_of(65_536) {
            bar.set_position(n);
        }
    }
    out.commit().context("writing the events file")?;
    bar.finish_and_clear();
    eprintln!("wrote {n} events to {}", out_path.display());
    Ok(ExitCode::SUCCESS)
}
