//! A fresh database for one test: a SQLite file in a temporary folder (the default), or,
//! with `RAGSTREAM_TEST_STORE=postgres`, a PostgreSQL database with a unique name on
//! `RAGSTREAM_TEST_PG` (default `postgres://postgres@127.0.0.1:5432`), dropped when the
//! value is dropped, on a panic too.

use sqlx::Connection;
use tempfile::TempDir;

/// The PostgreSQL server the tests use, without a database name.
pub fn pg_server() -> String {
    std::env::var("RAGSTREAM_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

/// Whether this run tests the PostgreSQL store.
pub fn on_postgres() -> bool {
    std::env::var("RAGSTREAM_TEST_STORE").is_ok_and(|v| v == "postgres")
}

pub struct TestDb {
    pub url: String,
    /// The SQLite file's folder (the hub's working folder in process tests, either way).
    pub dir: TempDir,
    /// The PostgreSQL database to drop.
    pg_name: Option<String>,
}

impl TestDb {
    /// The store this run tests.
    pub async fn create() -> TestDb {
        if on_postgres() {
            TestDb::postgres().await
        } else {
            TestDb::sqlite()
        }
    }

    pub fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("temp dir");
        TestDb {
            url: format!("sqlite://{}/ragstream.db", dir.path().display()),
            dir,
            pg_name: None,
        }
    }

    pub async fn postgres() -> TestDb {
        let name = format!("ragstream_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = sqlx::PgConnection::connect(&format!("{}/postgres", pg_server()))
            .await
            .expect("PostgreSQL at RAGSTREAM_TEST_PG answers");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("test database created");
        let _ = admin.close().await;
        TestDb {
            url: format!("{}/{name}", pg_server()),
            dir: tempfile::tempdir().expect("temp dir"),
            pg_name: Some(name),
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else {
            return;
        };
        // Drop runs inside the test's runtime, which cannot be blocked on: the DROP runs on
        // a thread with a runtime of its own. FORCE ends the connections the test's hub
        // still holds.
        let server = pg_server();
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            rt.block_on(async {
                let mut admin = sqlx::PgConnection::connect(&format!("{server}/postgres")).await?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut admin)
                    .await?;
                admin.close().await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("the test database could not be dropped: {dropped:?}");
        }
    }
}
