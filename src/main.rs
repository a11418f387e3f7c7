use std::process::ExitCode;

use ragstream::config::Settings;
use ragstream::startup::Application;

#[actix_web::main]
async fn main() -> ExitCode {
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("ragstream: bad setting {e}");
            return ExitCode::from(2);
        }
    };
    ragstream::logging::init(settings.log_format);
    let addr = settings.addr;
    let app = match Application::build(settings).await {
        Ok(app) => app,
        Err(e) => {
            eprintln!("ragstream: cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    if let Some(key) = app.generated_admin_key() {
        // Printed, not logged: it appears once, on the terminal of the person who started
        // the hub, and only its hash is stored.
        println!();
        println!("  Operator API key, administers every tenant (shown once, store it now):");
        println!();
        println!("      {key}");
        println!();
        println!("  Set RAGSTREAM_ADMIN_KEY to choose your own instead.");
        println!();
    }
    log::info!("ragstream listening on http://{}:{}", addr.ip(), app.port());
    match app.run_until_stopped().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ragstream: server error: {e}");
            ExitCode::from(1)
        }
    }
}
