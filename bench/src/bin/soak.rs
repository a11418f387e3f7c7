//! `soak [--quick | --answers N] [options]`: the soak with faults (see `soak` in the
//! library). Prints a Markdown report and exits non-zero when a check fails.

use std::path::PathBuf;
use std::process::ExitCode;

use ragstream_bench::procs;
use ragstream_bench::soak::answer::Fault;
use ragstream_bench::soak::{self, Options};

const USAGE: &str = "\
usage: soak [--quick] [options]

  --quick           500 shorter answers (seconds); default: 10,000 answers (minutes)
  --answers N       how many answers
  --clients N       clients at once, spread over SSE, plain WS, SignalR and JSON
  --faults PCT      share of answers with a fault, in per cent (default 10)
  --fault-kinds L   comma-separated: reset, 500, stall, vanish, cancel, slow-reader (all)
  --seed N          picks which answers get which fault
  --hub PATH        the hub binary (default: target/release/ragstream next to this one)
  --no-build        do not run `cargo build --release -p ragstream` first
  --keep            keep the hub's database and log
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        print!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let hub_bin = value("--hub")
        .map(PathBuf::from)
        .unwrap_or_else(procs::default_hub_bin);
    let mut opts = if args.iter().any(|a| a == "--quick") {
        Options::quick(hub_bin)
    } else {
        Options::full(hub_bin)
    };
    let parsed = (|| -> Result<(), String> {
        let number = |name: &str, v: String| {
            v.parse::<f64>()
                .map_err(|_| format!("{name}: `{v}` is not a number"))
        };
        if let Some(v) = value("--answers") {
            opts.answers = number("--answers", v)? as usize;
        }
        if let Some(v) = value("--clients") {
            opts.concurrency = (number("--clients", v)? as usize).max(1);
        }
        if let Some(v) = value("--faults") {
            opts.fault_permille = (number("--faults", v)? * 10.0).clamp(0.0, 1000.0) as u64;
        }
        if let Some(v) = value("--fault-kinds") {
            opts.fault_kinds = v
                .split(',')
                .map(|k| {
                    Fault::INJECTED
                        .into_iter()
                        .find(|f| f.key() == k.trim())
                        .ok_or_else(|| format!("--fault-kinds: unknown fault `{k}`"))
                })
                .collect::<Result<_, _>>()?;
        }
        if let Some(v) = value("--seed") {
            opts.seed = number("--seed", v)? as u64;
        }
        Ok(())
    })();
    if let Err(e) = parsed {
        eprintln!("soak: {e}\n{USAGE}");
        return ExitCode::from(2);
    }
    opts.keep = args.iter().any(|a| a == "--keep");
    if !args.iter().any(|a| a == "--no-build") && value("--hub").is_none() {
        if let Err(e) = procs::build_hub() {
            eprintln!("soak: {e}");
            return ExitCode::FAILURE;
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("soak: no runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(soak::run(&opts)) {
        Ok(report) => {
            println!("{}", report.markdown());
            if report.passed() {
                ExitCode::SUCCESS
            } else {
                eprintln!("soak: a check failed");
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("soak: {e}");
            ExitCode::FAILURE
        }
    }
}
