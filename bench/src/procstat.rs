//! CPU time and resident memory of a process, from `/proc`, and the file-descriptor limit.

use std::fs;
use std::path::Path;

/// User + system CPU seconds of every thread of `pid` so far.
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // The command name (field 2) may hold spaces; fields are counted after its `)`.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after `)`.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<u64>().ok()))
        .sum();
    ticks as f64 / clock_ticks()
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf only reads a constant of the running system.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Resident set size of `pid`, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) else {
        return 0;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Raises this process's open-file limit to its hard limit (children inherit it).
/// Returns the soft limit now in force.
pub fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write to and read from a valid rlimit struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                lim = want;
            }
        }
    }
    lim.rlim_cur
}

/// Busy CPU seconds of the whole machine so far (every state but idle and iowait), from
/// `/proc/stat`. Minus the processes of the run, it tells how much else ran meanwhile.
pub fn machine_busy_seconds() -> f64 {
    let Ok(stat) = fs::read_to_string("/proc/stat") else {
        return 0.0;
    };
    let Some(line) = stat.lines().next() else {
        return 0.0;
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let busy: u64 = v
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4 && *i < 8)
        .map(|(_, x)| x)
        .sum();
    busy as f64 / clock_ticks()
}

/// The 1-minute load average.
pub fn load_average() -> f64 {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

/// The parent pid and the command name (`comm`) of a `/proc/<pid>/stat` line.
fn ppid_and_comm(stat: &str) -> Option<(u32, &str)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?;
    // After `) `: state, then ppid.
    let ppid = stat
        .get(close + 1..)?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some((ppid, comm))
}

/// Every process under `proc_root` (`/proc`, or a fake tree in a test): (pid, ppid, comm).
fn processes(proc_root: &Path) -> Vec<(u32, u32, String)> {
    let Ok(entries) = fs::read_dir(proc_root) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = fs::read_to_string(e.path().join("stat")).ok()?;
            let (ppid, comm) = ppid_and_comm(&stat)?;
            Some((pid, ppid, comm.to_owned()))
        })
        .collect()
}

/// The direct children of `parent` (nginx's workers, say).
pub fn children_in(proc_root: &Path, parent: u32) -> Vec<u32> {
    let mut v: Vec<u32> = processes(proc_root)
        .into_iter()
        .filter(|(_, ppid, _)| *ppid == parent)
        .map(|(pid, _, _)| pid)
        .collect();
    v.sort_unstable();
    v
}

/// Every process whose command name is `comm` (all of PostgreSQL's are `postgres`).
pub fn pids_by_comm_in(proc_root: &Path, comm: &str) -> Vec<u32> {
    let mut v: Vec<u32> = processes(proc_root)
        .into_iter()
        .filter(|(_, _, c)| c == comm)
        .map(|(pid, _, _)| pid)
        .collect();
    v.sort_unstable();
    v
}

/// The database a PostgreSQL process serves, from its title (`/proc/<pid>/cmdline`, which
/// PostgreSQL rewrites): `postgres: [CLUSTER: ]USER DATABASE HOST(PORT) STATE` for a
/// backend, `postgres: [CLUSTER: ]autovacuum worker DATABASE`. None for the server's own
/// processes (the postmaster, WAL writer, checkpointer, ...), which serve every database.
pub fn postgres_database(cmdline: &str) -> Option<&str> {
    let title = cmdline
        .trim_end_matches(['\0', ' '])
        .strip_prefix("postgres: ")?;
    let mut words: Vec<&str> = title.split_whitespace().collect();
    // Debian's `cluster_name` (`15/main:`) comes first.
    if words.first().is_some_and(|w| w.ends_with(':')) {
        words.remove(0);
    }
    match words.as_slice() {
        ["autovacuum", "worker", db, ..] => Some(db),
        [_user, db, host, ..] if host.contains('(') || host.starts_with("[local]") => Some(db),
        _ => None,
    }
}

/// The PostgreSQL processes that work for `database`: the server's own and `database`'s
/// backends, not the backends of other databases (other people's tests).
pub fn postgres_pids_for(database: &str) -> Vec<u32> {
    pids_by_comm("postgres")
        .into_iter()
        .filter(|pid| {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            postgres_database(&cmdline).is_none_or(|db| db == database)
        })
        .collect()
}

pub fn children(parent: u32) -> Vec<u32> {
    children_in(Path::new("/proc"), parent)
}

pub fn pids_by_comm(comm: &str) -> Vec<u32> {
    pids_by_comm_in(Path::new("/proc"), comm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_line_parts() {
        assert_eq!(
            ppid_and_comm("42 (nginx) S 7 42 42 0 -1"),
            Some((7, "nginx"))
        );
        // A name with spaces and parentheses: counted from the last `)`.
        assert_eq!(
            ppid_and_comm("43 (a (b) c) R 42 1 1"),
            Some((42, "a (b) c"))
        );
        assert_eq!(ppid_and_comm("garbage"), None);
    }

    #[test]
    fn postgres_titles() {
        let pad = "\0\0\0";
        assert_eq!(
            postgres_database(&format!(
                "postgres: 15/main: postgres ragstream_bench_1_0 127.0.0.1(39200) idle{pad}"
            )),
            Some("ragstream_bench_1_0")
        );
        assert_eq!(
            postgres_database("postgres: postgres other [local] SELECT"),
            Some("other")
        );
        assert_eq!(
            postgres_database("postgres: 15/main: autovacuum worker ragstream_test_x"),
            Some("ragstream_test_x")
        );
        for shared in [
            "postgres: 15/main: checkpointer ",
            "postgres: 15/main: walwriter ",
            "postgres: 15/main: logical replication launcher ",
            "postgres: background writer",
            "/usr/lib/postgresql/15/bin/postgres\0-D\0/var/lib/postgresql/15/main\0",
        ] {
            assert_eq!(postgres_database(shared), None, "{shared}");
        }
    }

    #[test]
    fn scans_a_fake_proc_tree() {
        let root = std::env::temp_dir().join(format!("procstat-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        for (pid, line) in [
            (100, "100 (nginx) S 1 100 100 0 -1 0"),
            (101, "101 (nginx) S 100 100 100 0 -1 0"),
            (102, "102 (nginx) S 100 100 100 0 -1 0"),
            (200, "200 (postgres) S 1 200 200 0 -1 0"),
            (201, "201 (postgres) S 200 200 200 0 -1 0"),
            (300, "300 (bash) S 100 300 300 0 -1 0"),
        ] {
            let d = root.join(pid.to_string());
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("stat"), line).unwrap();
        }
        // Not a process: ignored.
        fs::create_dir_all(root.join("self-not-a-pid")).unwrap();
        fs::create_dir_all(root.join("400")).unwrap();
        assert_eq!(children_in(&root, 100), vec![101, 102, 300]);
        assert_eq!(children_in(&root, 999), Vec::<u32>::new());
        assert_eq!(pids_by_comm_in(&root, "postgres"), vec![200, 201]);
        assert_eq!(pids_by_comm_in(&root, "nginx"), vec![100, 101, 102]);
        let _ = fs::remove_dir_all(&root);
    }
}
