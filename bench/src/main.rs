//! `ragstream-bench [--quick | --full]`: runs the benchmark and prints its report.
//! `ragstream-bench mock` and `ragstream-bench relay --upstream ADDR` are the processes a
//! run starts (one binary, so a run needs nothing else built). `ragstream-bench render
//! --from REPORT.json` draws the throughput SVG of a saved report, without running anything.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use ragstream_bench::mock::{self, MockConfig};
use ragstream_bench::run::{self, Options, Settings};
use ragstream_bench::{actix_relay, procs, relay};

const USAGE: &str = "\
usage: ragstream-bench [--quick | --full] [options]
       ragstream-bench mock [--addr A] [--threads N]
       ragstream-bench relay --upstream ADDR [--addr A] [--threads N]
       ragstream-bench actix-relay --upstream ADDR [--addr A] [--threads N]
       ragstream-bench render --from REPORT.json [--out FILE.svg]

  --quick           the short run (default; about 5 minutes)
  --full            longer windows and answers (under 10 minutes)
  --hub PATH        the hub binary (default: target/release/ragstream next to this one)
  --no-build        do not run `cargo build --release -p ragstream` first
  --out DIR         where the report goes (default: target/bench)
  --only LIST       comma-separated groups: throughput, cancel, resume, lag, retrieval,
                    crowd, memory, cluster (cluster: nginx, redis-server, psql and
                    PostgreSQL at 127.0.0.1:5432 as user postgres; skipped without them)
  --levels LIST     concurrency levels (default: 100,1000)
  --wait-quiet S    first wait up to S seconds for the machine to be idle
  --targets LIST    paths of the throughput group: direct, relay, actix-relay, hub-sse,
                    hub-ws, hub-signalr
  --resume-streams N   clients of the resume group (default 200)
  --lag-streams N      clients of the lagging-clients group (default 40)

render: the throughput chart (tokens/s and CPU per token of every path beside the relay)
of a saved report; --out defaults to the report's name with -throughput.svg.
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let threads: usize = value("--threads").and_then(|t| t.parse().ok()).unwrap_or(2);
    let addr: SocketAddr = value("--addr")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| ([127, 0, 0, 1], 0).into());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ragstream-bench: no runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match args.first().map(String::as_str) {
        Some("render") => {
            let Some(from) = value("--from").map(PathBuf::from) else {
                eprint!("{USAGE}");
                return ExitCode::from(2);
            };
            let out = value("--out").map(PathBuf::from).unwrap_or_else(|| {
                let stem = from
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or("report");
                from.with_file_name(format!("{stem}-throughput.svg"))
            });
            ragstream_bench::chart::render(&from, &out)
                .map(|()| eprintln!("wrote {}", out.display()))
        }
        Some("mock") => runtime.block_on(async {
            let listener = bind(addr).await?;
            mock::serve(listener, MockConfig::default())
                .await
                .map_err(|e| e.to_string())
        }),
        Some("relay") => {
            let Some(upstream) = value("--upstream").and_then(|u| u.parse().ok()) else {
                eprint!("{USAGE}");
                return ExitCode::from(2);
            };
            runtime.block_on(async {
                let listener = bind(addr).await?;
                relay::serve(listener, upstream)
                    .await
                    .map_err(|e| e.to_string())
            })
        }
        Some("actix-relay") => {
            let Some(upstream) = value("--upstream").and_then(|u| u.parse().ok()) else {
                eprint!("{USAGE}");
                return ExitCode::from(2);
            };
            std::net::TcpListener::bind(addr)
                .and_then(|listener| {
                    println!("listening {}", listener.local_addr()?);
                    std::io::Write::flush(&mut std::io::stdout())?;
                    actix_relay::serve(listener, upstream, threads)
                })
                .map_err(|e| e.to_string())
        }
        Some("-h" | "--help" | "help") => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => {
            let mut settings = if args.iter().any(|a| a == "--full") {
                Settings::full()
            } else {
                Settings::quick()
            };
            if let Some(only) = value("--only") {
                settings.only = only.split(',').map(str::to_owned).collect();
            }
            if let Some(targets) = value("--targets") {
                settings.targets = targets.split(',').map(str::to_owned).collect();
            }
            if let Some(n) = value("--resume-streams").and_then(|n| n.parse().ok()) {
                settings.resume_streams = n;
            }
            if let Some(n) = value("--lag-streams").and_then(|n| n.parse().ok()) {
                settings.lag_streams = n;
            }
            if let Some(levels) = value("--levels") {
                settings.levels = levels.split(',').filter_map(|l| l.parse().ok()).collect();
            }
            let opts = Options {
                settings,
                wait_quiet: value("--wait-quiet")
                    .and_then(|s| s.parse().ok())
                    .map(std::time::Duration::from_secs),
                hub_bin: value("--hub")
                    .map(PathBuf::from)
                    .unwrap_or_else(procs::default_hub_bin),
                build: !args.iter().any(|a| a == "--no-build"),
                out_dir: value("--out")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from("target/bench")),
            };
            runtime.block_on(run::run(opts)).map(|_| ())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ragstream-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Binds and announces the address on the first line of stdout, for the parent run.
async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, String> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot bind {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    println!("listening {local}");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    Ok(listener)
}
