//! Command-line interface.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// gridwatch: a stream-processing engine for city operations alerting.
#[derive(Debug, Parser)]
#[command(name = "gridwatch", version, about)]
pub struct Cli {
    /// More logging on stderr (-v info, -vv debug); GRIDWATCH_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the engine on the config's source (generator, file, pipe, Kafka, MQTT or HTTP ingest) until the input ends or a signal (SIGINT/SIGTERM) stops it.
    Run(Box<RunArgs>),
    /// Check config and rule files; report every error with file:line:column.
    Validate(ValidateArgs),
    /// Write the example city's generated events (NDJSON) and/or its zone files (GeoJSON).
    Generate(GenerateArgs),
    /// Load the example city's events (or an NDJSON file) into the config's Kafka topics.
    Produce(ProduceArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Read the case store: list cases (with the overdue / key / difficult lists) or show one.
    Cases(CasesArgs),
    /// Snapshots of the running state (`checkpoint:` in the config).
    #[command(subcommand)]
    State(StateCommand),
}

#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// What the snapshots in a state directory hold: rules, keys per rule, streams, the source position, size.
    Inspect(StateInspectArgs),
}

#[derive(Debug, Args)]
pub struct StateInspectArgs {
    /// The state directory (`checkpoint.state_dir`).
    pub dir: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CasesArgs {
    /// Config whose `cases: {store: …}` names the store.
    #[arg(short, long, default_value = "examples/city/gridwatch.yaml", global = true)]
    pub config: PathBuf,
    /// Store to read instead: a SQLite file, or a PostgreSQL URL / "host=… user=…" string.
    #[arg(long, value_name = "PATH|URL", global = true)]
    pub store: Option<String>,
    #[command(subcommand)]
    pub command: CasesCommand,
}

#[derive(Debug, Subcommand)]
pub enum CasesCommand {
    /// Cases, newest first.
    List(CasesListArgs),
    /// One case with its history.
    Show(CasesShowArgs),
}

#[derive(Debug, Args)]
pub struct CasesListArgs {
    /// Only cases past their deadline (the overdue list).
    #[arg(long)]
    pub overdue: bool,
    /// Only priority cases (the key list).
    #[arg(long)]
    pub key: bool,
    /// Only reopened-twice or reassigned cases (the difficult list).
    #[arg(long)]
    pub difficult: bool,
    /// Only cases not yet closed, merged or rejected.
    #[arg(long)]
    pub open: bool,
    /// Only cases in this status (reported, dispatched, in_progress, resolved, verified, closed, merged, rejected).
    #[arg(long)]
    pub status: Option<String>,
    /// Only cases with this unit.
    #[arg(long)]
    pub unit: Option<String>,
    /// Only cases in this category or below it (e.g. `emergency`).
    #[arg(long)]
    pub category: Option<String>,
    /// At most this many.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// One JSON object per case.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CasesShowArgs {
    /// Case id.
    pub id: String,
    /// The case as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Through a real broker: a bare consumer's rate vs gridwatch's, and event → alert latency
    /// at a steady input rate.
    Kafka(BenchKafkaArgs),
    /// The full engine on an in-memory dataset vs a parse-only baseline; latency, memory,
    /// per-stage time.
    Pipeline(BenchPipelineArgs),
    /// The case stage (alerts → cases) and the case store's write rate (SQLite, PostgreSQL).
    Cases(BenchCasesArgs),
}

#[derive(Debug, Args)]
pub struct BenchCasesArgs {
    /// Synthetic alert records (firings and resolutions).
    #[arg(long, default_value_t = 200_000)]
    pub alerts: usize,
    /// Distinct devices the alerts come from.
    #[arg(long, default_value_t = 10_000)]
    pub keys: u64,
    /// Seed of the synthetic alerts.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Case events per store transaction.
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
    /// Also measure this PostgreSQL store (URL or "host=… user=…"); its tables are written to.
    #[arg(long, value_name = "URL")]
    pub postgres: Option<String>,
    /// Append the results as one JSON line to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub struct BenchPipelineArgs {
    /// Config naming streams and rules.
    #[arg(short, long, default_value = "examples/city/gridwatch.yaml")]
    pub config: PathBuf,
    /// Rule files or directories to use instead of the config's rules (a rule pack).
    #[arg(long, value_name = "PATH")]
    pub rules: Vec<PathBuf>,
    /// A synthetic pack of N threshold rules on the sensor stream instead of the config's
    /// rules (rule-count scaling; thresholds are set so that few fire).
    #[arg(long, value_name = "N", conflicts_with = "rules")]
    pub synthetic_rules: Option<usize>,
    /// Events in the dataset.
    #[arg(long, default_value_t = 2_000_000)]
    pub events: u64,
    #[command(flatten)]
    pub generator: GeneratorOverrides,
    /// Partition workers (default: number of cores); the baseline uses as many threads.
    #[arg(long)]
    pub workers: Option<usize>,
    /// Decoder threads; 0 decodes on the ingest thread (default: config, else number of cores).
    #[arg(long)]
    pub decoders: Option<usize>,
    /// Rows per batch.
    #[arg(long, default_value_t = 4096)]
    pub batch_size: usize,
    /// Also run at this fixed input rate (events/s) to measure latency.
    #[arg(long)]
    pub rate: Option<u64>,
    /// Longest wait of a partly filled batch, ms (default: config's `engine.linger`, else 5).
    #[arg(long = "linger-ms")]
    pub linger_ms: Option<i64>,
    /// Append the results as one JSON line to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BenchKafkaArgs {
    /// Config naming streams, rules and the Kafka connection (topics get fresh names).
    #[arg(short, long, default_value = "examples/city/gridwatch.yaml")]
    pub config: PathBuf,
    #[command(flatten)]
    pub generator: GeneratorOverrides,
    #[command(flatten)]
    pub kafka: KafkaConnArgs,
    /// Partitions per topic.
    #[arg(long, default_value_t = 1)]
    pub partitions: i32,
    /// Partition workers (default: number of cores).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Input rate of the latency run, events/s.
    #[arg(long, default_value_t = 100_000)]
    pub rate: u64,
    /// Length of the latency run, seconds.
    #[arg(long, default_value_t = 20.0)]
    pub latency_seconds: f64,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// Config naming the topics (per stream) and brokers.
    #[arg(short, long, default_value = "examples/city/gridwatch.yaml")]
    pub config: PathBuf,
    /// Produce this NDJSON events file (lines name their stream) instead of the generator's events.
    #[arg(long, value_name = "FILE.ndjson")]
    pub events: Option<PathBuf>,
    /// Partitions of topics that do not exist yet.
    #[arg(long, default_value_t = 1)]
    pub partitions: i32,
    /// Events per second (default: as fast as the broker takes them).
    #[arg(long)]
    pub rate: Option<u64>,
    #[command(flatten)]
    pub generator: GeneratorOverrides,
    #[command(flatten)]
    pub kafka: KafkaConnArgs,
}

/// How alerts are printed on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// One readable line per alert.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Service config (streams, rules, source, sinks).
    #[arg(short, long, default_value = "examples/city/gridwatch.yaml")]
    pub config: PathBuf,
    /// Replay this NDJSON events file instead of the config's source.
    #[arg(long, value_name = "FILE.ndjson")]
    pub events: Option<PathBuf>,
    /// Partition workers (default: config, else number of cores).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Decoder threads; 0 decodes on the ingest thread (default: config, else number of cores).
    #[arg(long)]
    pub decoders: Option<usize>,
    /// Rows per batch (default: config, else 4096).
    #[arg(long)]
    pub batch_size: Option<usize>,
    #[command(flatten)]
    pub generator: GeneratorOverrides,
    /// Write alerts to this NDJSON file (instead of the config's file sinks that receive alerts).
    #[arg(long, value_name = "FILE")]
    pub alerts_out: Option<PathBuf>,
    /// Write dead letters to this NDJSON file (instead of the config's file sinks that receive them).
    #[arg(long, value_name = "FILE")]
    pub dead_letter_out: Option<PathBuf>,
    /// Case store to use instead of the config's `case_store` sink (SQLite path or PostgreSQL URL).
    #[arg(long, value_name = "PATH|URL")]
    pub cases_store: Option<String>,
    /// Write case events to this NDJSON file (instead of the config's file sinks that receive cases).
    #[arg(long, value_name = "FILE")]
    pub case_events_out: Option<PathBuf>,
    /// Feed the case stage this NDJSON file of case-feedback events (overrides `cases.feedback`).
    #[arg(long, value_name = "FILE.ndjson")]
    pub feedback: Option<PathBuf>,
    /// Read case-feedback events from this Kafka topic (overrides `cases.feedback`; brokers
    /// from the config's `kafka:` block or --brokers).
    #[arg(long, value_name = "TOPIC")]
    pub feedback_topic: Option<String>,
    /// Skip the case stage even if the config has a `cases:` block (alerts only).
    #[arg(long)]
    pub no_cases: bool,
    /// Live inputs (MQTT, HTTP ingest, a pipe): once input has come, finish when none came
    /// for this long (e.g. `2s`), closing windows as at the end of a file (backfills, tests).
    #[arg(long, value_name = "DURATION")]
    pub until_idle: Option<String>,
    /// Bounded inputs (file, generator): events between barriers, each of which lets the
    /// case stage process what lies before the watermark and commit it to the store. Lower
    /// means less work redone after a crash; the result does not depend on it.
    #[arg(long, value_name = "N", default_value_t = 1 << 16, value_parser = clap::value_parser!(u64).range(1..))]
    pub barrier_every: u64,
    /// Snapshot the running state into this directory (overrides `checkpoint.state_dir`;
    /// turns snapshots on with the default interval if the config has no `checkpoint:`).
    /// A run starts from the newest snapshot there.
    #[arg(long, value_name = "DIR")]
    pub checkpoint_dir: Option<PathBuf>,
    /// Time between snapshots (overrides `checkpoint.interval`), e.g. `10s`, `500ms`.
    #[arg(long, value_name = "DURATION")]
    pub checkpoint_interval: Option<String>,
    /// Do not print alerts on stdout.
    #[arg(long)]
    pub quiet: bool,
    /// Stdout format of alerts (overrides the console sinks' `format`; default text).
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Also write the run summary as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub summary_json: Option<PathBuf>,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Serve /healthz, /readyz and /metrics on this address (e.g. 127.0.0.1:9898).
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<std::net::SocketAddr>,
    /// File holding the bearer token that mutating admin endpoints (`POST /-/reload`)
    /// require; or set GRIDWATCH_ADMIN_TOKEN. Without one they answer 403.
    #[arg(long, value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
}

/// Overrides of the config's Kafka connection (`run`, `produce`, `bench kafka`).
#[derive(Debug, Args, Clone, Default)]
pub struct KafkaConnArgs {
    /// Override the config's Kafka brokers.
    #[arg(long, value_name = "HOST:PORT,...")]
    pub brokers: Option<String>,
    /// Override the config's consumer group.
    #[arg(long)]
    pub group_id: Option<String>,
}

/// Kafka options of `run`.
#[derive(Debug, Args, Clone, Default)]
pub struct KafkaArgs {
    /// Consume the config's Kafka topics (and write to its Kafka sink topics).
    #[arg(long)]
    pub kafka: bool,
    #[command(flatten)]
    pub conn: KafkaConnArgs,
    /// Stop once every assigned partition has been read to its end, closing windows as at
    /// the end of a file (backfills, benchmarks, tests).
    #[arg(long)]
    pub until_caught_up: bool,
    /// Directory recording committed offsets with their watermarks, for brokers that drop
    /// commit metadata (default: the config's `kafka.state_dir`, else $TMPDIR/gridwatch-state).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Rule files or directories, and/or a config file.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Config whose stream schemas the rules are checked against (default: a config among
    /// PATHS, else `gridwatch.yaml` next to or above the first path).
    #[arg(short, long)]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Config whose generator settings to use.
    #[arg(short, long, default_value = "examples/city/gridwatch.yaml")]
    pub config: PathBuf,
    /// Output NDJSON file of events.
    #[arg(short, long, required_unless_present = "zones")]
    pub out: Option<PathBuf>,
    /// Write the example city's zone files (GeoJSON) into this directory.
    #[arg(long, value_name = "DIR")]
    pub zones: Option<PathBuf>,
    /// Replace `--out` if it exists (by default an existing recording is never overwritten).
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub generator: GeneratorOverrides,
}

/// Overrides of the config's generator settings.
#[derive(Debug, Args)]
pub struct GeneratorOverrides {
    /// Override the generator's simulated duration (e.g. 1h).
    #[arg(long)]
    pub duration: Option<String>,
    /// Override the generator's seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Override the generator's scale (multiplies devices, vehicles, cameras).
    #[arg(long)]
    pub scale: Option<u32>,
}
