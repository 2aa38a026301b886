//! The `gridwatch` binary: glue between the config, the engine and the connectors.

mod admin;
mod bench;
mod cases;
mod cli;
mod generate;
mod produce;
mod reload;
mod run;
mod state;
mod summary;
mod validate;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    init_tracing(cli.verbose);
    let result = match cli.command {
        cli::Command::Run(args) => run::run(*args),
        cli::Command::Validate(args) => validate::validate(args),
        cli::Command::Generate(args) => generate::generate(args),
        cli::Command::Produce(args) => produce::produce(args),
        cli::Command::Bench(cli::BenchCommand::Kafka(args)) => bench::kafka::run(args),
        cli::Command::Bench(cli::BenchCommand::Pipeline(args)) => bench::pipeline::run(args),
        cli::Command::Bench(cli::BenchCommand::Cases(args)) => bench::cases::run(args),
        cli::Command::Cases(args) => cases::command(args),
        cli::Command::State(cli::StateCommand::Inspect(args)) => state::inspect(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // A closed stdout (`gridwatch run | head`) is not an error.
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("GRIDWATCH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // No colour codes in a log file or a pipe.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).init();
}
