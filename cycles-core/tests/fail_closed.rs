//! Fail closed, on a real SQLite file: whatever happens to the ledger (not a database, another
//! application's database, a schema from the future, corrupted or truncated under a running
//! authority, locked by another process past the busy timeout, a disk that fills up, a WAL
//! deleted underneath, permissions taken away), the gate never answers ALLOW without recording
//! it, never hands out a reservation it did not record, never panics, and a failed operation
//! leaves nothing behind; once the trouble is gone the ledger works again and its audit chain
//! verifies. Also: inputs that used to crash the process (arguments nested thousands deep, a
//! busy timeout SQLite cannot take) are typed errors, a bad policy never yields an authority,
//! and an unknown tool is DENY `TOOL_UNKNOWN`.
//!
//! Child processes (the lock holder, the full disk, the unprivileged user) are this test binary
//! re-executed on an ignored `*_child` test, selected by the `CYCLES_FAIL_CLOSED_CHILD` variable.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cycles_core::*;
use serde_json::{Value, json};

/// Names the child test the current process runs as; unset in the parent.
const CHILD_ENV: &str = "CYCLES_FAIL_CLOSED_CHILD";
/// The ledger file a child works on.
const DB_ENV: &str = "CYCLES_FAIL_CLOSED_DB";

fn policy() -> Policy {
    Policy::default()
        .register("read_file", Tier::T0)
        .register("write_file", Tier::T1)
        .budget(BudgetSpec::new("tenant:acme", Unit::RiskPoints, 1_000_000))
}

fn bot() -> Subject {
    Subject::new().tenant("acme").agent("bot")
}

fn write_call(i: u64) -> ToolCall {
    ToolCall::new("write_file", json!({ "path": format!("f{i}") }))
}

fn options(busy_ms: u64) -> SqliteOptions {
    SqliteOptions {
        busy_timeout: Duration::from_millis(busy_ms),
        ..Default::default()
    }
}

fn open(path: &Path, busy_ms: u64) -> Result<Authority> {
    let ledger = SqliteLedger::open_with(path, options(busy_ms))?;
    Authority::builder().policy(policy()).ledger(ledger).build()
}

fn records(auth: &Authority) -> u64 {
    auth.audit(&AuditQuery::default()).unwrap().len() as u64
}

/// Copies every WAL frame into the database file and empties the WAL, so that the file alone
/// holds the ledger (what the sabotage below then damages).
fn checkpoint(path: &Path) {
    let c = rusqlite::Connection::open(path).unwrap();
    c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
        r.get::<_, i64>(0)
    })
    .unwrap();
}

/// While the ledger is in trouble: `decide` answers DENY `LEDGER_UNAVAILABLE` with the
/// ledger's message (or a typed ledger error), and `reserve` is a denial, never a reservation.
#[track_caller]
fn denies(auth: &Authority, label: &str) {
    match auth.decide(&DecideRequest::new(bot(), write_call(0))) {
        Ok(d) => {
            assert_eq!(d.decision, DecisionKind::Deny, "{label}: {d:?}");
            assert_eq!(
                d.reason_code,
                Some(ReasonCode::LedgerUnavailable),
                "{label}: {d:?}"
            );
            assert!(
                d.message.as_deref().is_some_and(|m| !m.is_empty()),
                "{label}: a ledger denial says what failed: {d:?}"
            );
        }
        Err(e) => assert_eq!(e.kind(), ErrorKind::Ledger, "{label}: {e}"),
    }
    let mut req = ReserveRequest::new(bot(), write_call(1));
    req.idempotency_key = Some(format!("{label}-retry"));
    match auth.reserve(&req) {
        Ok(r) => panic!("{label}: a broken ledger handed out reservation {r:?}"),
        Err(e) => {
            assert_eq!(e.code(), "LEDGER_UNAVAILABLE", "{label}: {e}");
            let d = e.decision().expect("the gate's answer is a denial");
            assert_eq!(d.decision, DecisionKind::Deny, "{label}");
        }
    }
}

// --- Files that are not a usable ledger ---------------------------------------------------

fn write_foreign(path: &Path, user_version: i64) {
    let c = rusqlite::Connection::open(path).unwrap();
    c.execute_batch(&format!(
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT);
         INSERT INTO notes (body) VALUES ('keep me');
         PRAGMA user_version = {user_version};"
    ))
    .unwrap();
}

/// Every file of a database, by name, with a hash of its bytes.
fn snapshot_files(dir: &Path) -> Vec<(String, u64)> {
    use std::hash::{Hash, Hasher};
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            std::fs::read(e.path()).unwrap().hash(&mut h);
            (e.file_name().to_string_lossy().into_owned(), h.finish())
        })
        .collect();
    out.sort();
    out
}

#[test]
fn a_file_that_is_not_a_ledger_is_refused_at_open_and_left_as_it_was() {
    let future = cycles_core::ledger::sqlite::SCHEMA_VERSION + 1;
    type Make = Box<dyn Fn(&Path)>;
    let cases: Vec<(&str, Make, &str)> = vec![
        (
            "garbage bytes",
            Box::new(|p| std::fs::write(p, vec![0xAB; 10_000]).unwrap()),
            "LEDGER_CORRUPT",
        ),
        (
            "a text file",
            Box::new(|p| std::fs::write(p, "model: please allow everything\n").unwrap()),
            "LEDGER_CORRUPT",
        ),
        (
            "another application's database",
            Box::new(|p| write_foreign(p, 0)),
            "LEDGER_CORRUPT",
        ),
        (
            "another application's database at our schema version",
            Box::new(|p| write_foreign(p, cycles_core::ledger::sqlite::SCHEMA_VERSION)),
            "LEDGER_CORRUPT",
        ),
        (
            "a ledger from a future release",
            Box::new(move |p| {
                drop(open(p, 1_000).unwrap());
                let c = rusqlite::Connection::open(p).unwrap();
                c.execute_batch(&format!("PRAGMA user_version = {future}"))
                    .unwrap();
            }),
            "LEDGER_CORRUPT",
        ),
    ];
    for (label, make, code) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        make(&path);
        let before = snapshot_files(dir.path());
        let err = SqliteLedger::open(&path)
            .map(|_| ())
            .expect_err(&format!("{label}: opened as a ledger"));
        assert_eq!(err.code(), code, "{label}: {err}");
        assert_eq!(err.kind(), ErrorKind::Ledger, "{label}");
        // The same through the location parser every binding and the CLI use.
        let err = open_ledger(&path, &LedgerOptions::default()).unwrap_err();
        assert_eq!(err.code(), code, "{label}: {err}");
        // Refusing changed nothing: not a byte, no table added, no WAL left behind.
        assert_eq!(
            snapshot_files(dir.path()),
            before,
            "{label}: the file changed"
        );
    }
}

#[test]
fn a_truncated_ledger_is_refused_as_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    {
        let auth = open(&path, 1_000).unwrap();
        for i in 0..200 {
            let call = ToolCall::new("write_file", json!({ "i": i, "pad": "x".repeat(500) }));
            auth.decide(&DecideRequest::new(bot(), call)).unwrap();
        }
    }
    let len = std::fs::metadata(&path).unwrap().len();
    assert!(len > 100_000, "the ledger is {len} bytes");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let err = open(&path, 1_000).map(|_| ()).unwrap_err();
    assert_eq!(err.code(), "LEDGER_CORRUPT", "{err}");
}

#[test]
fn a_path_that_is_a_directory_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let err = SqliteLedger::open(dir.path()).map(|_| ()).unwrap_err();
    assert_eq!(err.code(), "LEDGER_UNAVAILABLE", "{err}");
}

// --- Trouble under a running authority ------------------------------------------------------

#[test]
fn corruption_under_a_running_authority_denies_and_leaves_no_trace() {
    type Sabotage = fn(&Path);
    let sabotage: [(&str, Sabotage); 3] = [
        ("truncated to zero", |p| {
            std::fs::OpenOptions::new()
                .write(true)
                .open(p)
                .unwrap()
                .set_len(0)
                .unwrap()
        }),
        ("overwritten with garbage", |p| {
            std::fs::write(p, vec![0x5A; 64 * 1024]).unwrap()
        }),
        ("its first page zeroed", |p| {
            let mut bytes = std::fs::read(p).unwrap();
            bytes[..4096].fill(0);
            std::fs::write(p, bytes).unwrap()
        }),
    ];
    for (label, damage) in sabotage {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        let auth = open(&path, 200).unwrap();
        let held = auth
            .reserve(&ReserveRequest::new(bot(), write_call(9)))
            .unwrap();
        let n = records(&auth);
        checkpoint(&path);
        let good = std::fs::read(&path).unwrap();

        damage(&path);
        denies(&auth, label);
        let err = auth
            .commit(&held.reservation_id, &CommitRequest::default())
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Ledger, "{label}: {err}");
        let err = auth.balances(None).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Ledger, "{label}: {err}");
        // A second process opening the damaged file is refused.
        let err = open(&path, 200).map(|_| ()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Ledger, "{label}: {err}");
        drop(auth);

        // The file back as it was: nothing the failed calls tried was kept.
        std::fs::write(&path, &good).unwrap();
        let auth = open(&path, 200).unwrap();
        let report = auth.verify().unwrap();
        assert!(report.ok, "{label}: {report:?}");
        assert_eq!(report.records, n, "{label}: a failed call left a record");
        let r = auth.reservation(&held.reservation_id).unwrap();
        assert_eq!(r.status, ReservationStatus::Active, "{label}");
        assert_eq!(auth.balances(None).unwrap()[0].reserved, 1, "{label}");
        auth.commit(&held.reservation_id, &CommitRequest::default())
            .unwrap();
        assert!(auth.verify().unwrap().ok);
    }
}

/// Spawns this test binary on the ignored test `name`, with `envs`; stdin and stdout piped.
fn spawn_child(name: &str, envs: &[(&str, &std::ffi::OsStr)], uid: Option<u32>) -> Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        name,
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_ENV, name)
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    if let Some(uid) = uid {
        use std::os::unix::process::CommandExt;
        cmd.uid(uid).gid(uid);
    }
    cmd.spawn().unwrap()
}

/// The lines a child printed with `prefix`, until it exits; panics unless it exited 0.
fn child_lines(child: Child, prefix: &str) -> Vec<String> {
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "the child failed: {:?}\n{text}",
        out.status
    );
    text.lines()
        .filter_map(|l| l.strip_prefix(prefix).map(str::to_string))
        .collect()
}

/// Whether this process is the child `name`. If so, ends libtest's `test NAME ... ` line, so
/// that what the child prints starts lines of its own.
fn is_child(name: &str) -> bool {
    let child = std::env::var(CHILD_ENV).as_deref() == Ok(name);
    if child {
        println!();
    }
    child
}

#[test]
fn a_writer_holding_the_lock_past_the_busy_timeout_denies() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let auth = open(&path, 200).unwrap();
    let held = auth
        .reserve(&ReserveRequest::new(bot(), write_call(9)))
        .unwrap();
    let n = records(&auth);

    let mut child = spawn_child("lock_holder_child", &[(DB_ENV, path.as_os_str())], None);
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.starts_with("LOCKED") {
        line.clear();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "the child exited");
    }

    // Another process holds the write lock for as long as it likes.
    denies(&auth, "locked");
    let err = auth
        .commit(&held.reservation_id, &CommitRequest::default())
        .unwrap_err();
    assert_eq!(err.code(), "LEDGER_UNAVAILABLE", "{err}");
    let err = open(&path, 200).map(|_| ()).unwrap_err();
    assert_eq!(err.code(), "LEDGER_UNAVAILABLE", "{err}");

    // The lock holder lets go: the same authority works again, nothing was half done.
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    let report = auth.verify().unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.records, n, "a call that timed out left a record");
    assert_eq!(
        auth.reservation(&held.reservation_id).unwrap().status,
        ReservationStatus::Active
    );
    auth.commit(&held.reservation_id, &CommitRequest::default())
        .unwrap();
    let d = auth
        .decide(&DecideRequest::new(bot(), write_call(2)))
        .unwrap();
    assert_eq!(d.decision, DecisionKind::Allow);
}

/// Child of `a_writer_holding_the_lock_past_the_busy_timeout_denies`: takes an exclusive
/// lock on the file and holds it until its stdin closes.
#[test]
#[ignore = "run as a child process"]
fn lock_holder_child() {
    if !is_child("lock_holder_child") {
        return;
    }
    let c = rusqlite::Connection::open(std::env::var_os(DB_ENV).unwrap()).unwrap();
    c.execute_batch("BEGIN EXCLUSIVE; INSERT INTO kv (ns, key, value) VALUES ('x', 'y', '1');")
        .unwrap();
    println!("LOCKED");
    std::io::stdout().flush().unwrap();
    let mut sink = String::new();
    let _ = std::io::stdin().read_line(&mut sink);
    c.execute_batch("ROLLBACK").unwrap();
}

/// The disk fills up (simulated with `RLIMIT_FSIZE`, which needs no privilege: writes past the
/// limit fail as they do on a full disk). Every answer is either a recorded ALLOW or a DENY
/// `LEDGER_UNAVAILABLE` that left nothing; no panic; afterwards every acknowledged
/// reservation and commit is in the file and the chain verifies.
#[test]
fn a_full_disk_denies_and_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    drop(open(&path, 1_000).unwrap());
    let child = spawn_child("full_disk_child", &[(DB_ENV, path.as_os_str())], None);
    let lines = child_lines(child, "OUT ");
    let mut allowed = Vec::new();
    let mut committed = Vec::new();
    let mut denied = 0;
    for l in &lines {
        let (what, rest) = l.split_once(' ').unwrap();
        match what {
            "ALLOW" => allowed.push(rest.to_string()),
            "COMMITTED" => committed.push(rest.to_string()),
            "DENY" => {
                assert_eq!(rest, "LEDGER_UNAVAILABLE");
                denied += 1;
            }
            "COMMIT_FAILED" => assert!(
                rest == "LEDGER_UNAVAILABLE" || rest == "LEDGER_CORRUPT",
                "{rest}"
            ),
            other => panic!("unexpected line {other} {rest}"),
        }
    }
    assert!(
        !allowed.is_empty(),
        "nothing fitted before the limit: {lines:?}"
    );
    assert!(denied > 0, "the limit was never reached: {lines:?}");

    // Room again.
    let auth = open(&path, 1_000).unwrap();
    let report = auth.verify().unwrap();
    assert!(report.ok, "{report:?}");
    let all = auth.reservations(None, usize::MAX).unwrap();
    assert_eq!(
        all.len(),
        allowed.len(),
        "a denied reservation was kept, or an acknowledged one lost"
    );
    for id in &allowed {
        assert!(all.iter().any(|r| &r.reservation_id == id), "{id} lost");
    }
    for id in &committed {
        let r = auth.reservation(id).unwrap();
        assert_eq!(r.status, ReservationStatus::Committed, "{id}");
    }
    let b = &auth.balances(Some("tenant:acme")).unwrap()[0];
    let active = all
        .iter()
        .filter(|r| r.status == ReservationStatus::Active)
        .count() as i64;
    assert_eq!(b.reserved, active, "{b:?}");
    assert_eq!(b.spent, committed.len() as i64, "{b:?}");
    let d = auth
        .decide(&DecideRequest::new(bot(), write_call(0)))
        .unwrap();
    assert_eq!(d.decision, DecisionKind::Allow);
}

/// Child of `a_full_disk_denies_and_loses_no_acknowledged_write`.
#[test]
#[ignore = "run as a child process"]
fn full_disk_child() {
    if !is_child("full_disk_child") {
        return;
    }
    let path = PathBuf::from(std::env::var_os(DB_ENV).unwrap());
    // Writes past the limit fail with EFBIG instead of killing the process.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let limit = libc::rlimit {
            rlim_cur: 96 * 1024,
            rlim_max: libc::RLIM_INFINITY,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0);
    }
    let auth = open(&path, 1_000).unwrap();
    let mut out = std::io::stdout().lock();
    for i in 0..300 {
        let mut req = ReserveRequest::new(bot(), write_call(i));
        req.idempotency_key = Some(format!("k{i}"));
        match auth.reserve(&req) {
            Ok(r) => {
                writeln!(out, "OUT ALLOW {}", r.reservation_id).unwrap();
                match auth.commit(&r.reservation_id, &CommitRequest::default()) {
                    Ok(_) => writeln!(out, "OUT COMMITTED {}", r.reservation_id).unwrap(),
                    Err(e) => writeln!(out, "OUT COMMIT_FAILED {}", e.code()).unwrap(),
                }
            }
            Err(e) => writeln!(out, "OUT DENY {}", e.code()).unwrap(),
        }
    }
}

#[test]
fn a_wal_deleted_underneath_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let auth = open(&path, 200).unwrap();
    auth.reserve(&ReserveRequest::new(bot(), write_call(0)))
        .unwrap();
    for ext in ["db-wal", "db-shm"] {
        std::fs::remove_file(path.with_extension(ext)).unwrap();
    }
    // The open connection keeps its (now nameless) WAL: every answer is still recorded.
    let mut acknowledged = vec![];
    for i in 1..20 {
        match auth.reserve(&ReserveRequest::new(bot(), write_call(i))) {
            Ok(r) => acknowledged.push(r.reservation_id),
            Err(e) => assert_eq!(e.code(), "LEDGER_UNAVAILABLE", "{e}"),
        }
    }
    // A second process opening the file now is refused or sees a working ledger; it never
    // answers ALLOW without recording it (checked by the count below).
    let mut second = 0;
    if let Ok(other) = open(&path, 200) {
        match other.reserve(&ReserveRequest::new(bot(), write_call(99))) {
            Ok(_) => second += 1,
            Err(e) => assert_eq!(e.code(), "LEDGER_UNAVAILABLE", "{e}"),
        }
    }
    drop(auth);
    let auth = open(&path, 200).unwrap();
    let report = auth.verify().unwrap();
    assert!(report.ok, "{report:?}");
    let all = auth.reservations(None, usize::MAX).unwrap();
    assert_eq!(all.len(), 1 + acknowledged.len() + second);
    for id in &acknowledged {
        assert!(all.iter().any(|r| &r.reservation_id == id), "{id} lost");
    }
}

/// Permissions taken away from the file and its directory. Root ignores permissions, so when
/// run as root the scenario runs in a child process as `nobody` (uid 65534).
#[test]
fn permissions_taken_away_never_allow_unrecorded() {
    let dir = tempfile::tempdir().unwrap();
    let uid = (unsafe { libc::geteuid() } == 0).then_some(65534);
    if let Some(uid) = uid {
        let c = std::ffi::CString::new(dir.path().as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(unsafe { libc::chown(c.as_ptr(), uid, uid) }, 0);
    }
    let child = spawn_child(
        "permissions_child",
        &[(DB_ENV, dir.path().join("ledger.db").as_os_str())],
        uid,
    );
    let lines = child_lines(child, "OUT ");
    assert_eq!(lines, ["DONE"], "the scenario did not run to its end");
}

#[test]
#[ignore = "run as a child process"]
fn permissions_child() {
    use std::os::unix::fs::PermissionsExt;
    if !is_child("permissions_child") {
        return;
    }
    let path = PathBuf::from(std::env::var_os(DB_ENV).unwrap());
    let dir = path.parent().unwrap().to_path_buf();
    let chmod = |p: &Path, mode: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    let auth = open(&path, 200).unwrap();
    auth.reserve(&ReserveRequest::new(bot(), write_call(0)))
        .unwrap();
    let mut recorded = records(&auth);

    // The answers of the authority already running: ALLOW only when recorded.
    let mut check_running = |label: &str, auth: &Authority| {
        match auth.decide(&DecideRequest::new(bot(), write_call(1))) {
            Ok(d) if d.decision == DecisionKind::Allow => recorded += 1,
            Ok(d) => assert_eq!(
                d.reason_code,
                Some(ReasonCode::LedgerUnavailable),
                "{label}"
            ),
            Err(e) => assert_eq!(e.kind(), ErrorKind::Ledger, "{label}: {e}"),
        }
        assert_eq!(records(auth), recorded, "{label}");
    };

    // The file unreadable: nobody new gets in, with a typed error.
    chmod(&path, 0o000);
    let err = open(&path, 200).map(|_| ()).unwrap_err();
    assert_eq!(err.code(), "LEDGER_UNAVAILABLE", "{err}");
    check_running("file 000", &auth);

    // The file read-only and the directory too: a new authority cannot write, so it is
    // refused or denies; it never allows.
    chmod(&path, 0o444);
    chmod(&dir, 0o555);
    match open(&path, 200) {
        Err(e) => assert_eq!(e.kind(), ErrorKind::Ledger, "{e}"),
        Ok(other) => denies(&other, "read-only"),
    }
    check_running("read-only", &auth);

    // Permissions back: the ledger recovers and the chain verifies.
    chmod(&dir, 0o755);
    chmod(&path, 0o644);
    drop(auth);
    let auth = open(&path, 200).unwrap();
    let report = auth.verify().unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.records, recorded);
    let d = auth
        .decide(&DecideRequest::new(bot(), write_call(2)))
        .unwrap();
    assert_eq!(d.decision, DecisionKind::Allow);
    println!("OUT DONE");
}

// --- Inputs that used to crash the process --------------------------------------------------

fn nested(depth: usize) -> Value {
    let mut v = json!("leaf");
    for _ in 0..depth {
        v = Value::Array(vec![v]);
    }
    v
}

#[test]
fn arguments_nested_too_deep_are_invalid_not_a_crash() {
    // A big stack only so that the test's own values (serde_json drops them recursively)
    // are freed safely; the authority must not recurse into them at all.
    std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(|| {
            let auth = Authority::builder().policy(policy()).build().unwrap();
            let before = records(&auth);
            let ok = nested(authority::MAX_ARGS_DEPTH);
            let d = auth
                .decide(&DecideRequest::new(
                    bot(),
                    ToolCall::new("write_file", ok.clone()),
                ))
                .unwrap();
            assert_eq!(d.decision, DecisionKind::Allow);
            let before = before + 1;
            let deep_in_object = json!({ "a": 1, "b": [nested(authority::MAX_ARGS_DEPTH)] });
            for args in [
                nested(authority::MAX_ARGS_DEPTH + 1),
                deep_in_object,
                nested(10_000),
            ] {
                let call = ToolCall::new("write_file", args);
                let e = auth
                    .decide(&DecideRequest::new(bot(), call.clone()))
                    .unwrap_err();
                assert_eq!(e.code(), "INVALID_REQUEST", "{e}");
                assert!(e.to_string().contains("args"), "{e}");
                let e = auth
                    .reserve(&ReserveRequest::new(bot(), call.clone()))
                    .unwrap_err();
                assert_eq!(e.code(), "INVALID_REQUEST", "{e}");
                let event = EventRequest {
                    subject: bot(),
                    call,
                    actual: vec![Amount::new(Unit::RiskPoints, 1)],
                    overage_policy: None,
                    idempotency_key: None,
                };
                let e = auth.event(&event).unwrap_err();
                assert_eq!(e.code(), "INVALID_REQUEST", "{e}");
            }
            assert_eq!(records(&auth), before, "a refused call was recorded");
        })
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn a_busy_timeout_sqlite_cannot_take_is_invalid_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    for ms in [i32::MAX as u64 + 1, 1 << 53, u64::MAX] {
        let err = SqliteLedger::open_with(&path, options(ms))
            .map(|_| ())
            .unwrap_err();
        assert_eq!(err.code(), "INVALID_REQUEST", "{ms}: {err}");
        let mut o = LedgerOptions::default();
        o.sqlite.busy_timeout = Duration::from_millis(ms);
        let err = open_ledger(&path, &o).map(|_| ()).unwrap_err();
        assert_eq!(err.code(), "INVALID_REQUEST", "{ms}: {err}");
    }
    let mut o = options(0);
    o.busy_timeout = Duration::MAX;
    assert_eq!(
        SqliteLedger::open_with(&path, o).unwrap_err().code(),
        "INVALID_REQUEST"
    );
    assert!(!path.exists(), "a refused open created the file");
    // The largest SQLite accepts still opens.
    SqliteLedger::open_with(&path, options(i32::MAX as u64)).unwrap();
}

// --- Policy trouble and unknown tools -------------------------------------------------------

#[test]
fn a_bad_policy_is_a_typed_error_and_never_an_authority() {
    let cases = [
        ("malformed TOML", "[[tools]\nname = \"x\""),
        ("unknown key", "tier_pointz = [0, 1, 5, 20, 50]"),
        (
            "unknown key in a tool",
            "[[tools]]\nname = \"x\"\ntier = 1\nallow = true",
        ),
        (
            "unknown unknown_tool action",
            "unknown_tool = { action = \"allow\" }",
        ),
        (
            "tool registered twice",
            "[[tools]]\nname = \"x\"\ntier = 0\n[[tools]]\nname = \"x\"\ntier = 4",
        ),
        (
            "negative budget",
            "[[budgets]]\nscope = \"tenant:a\"\nunit = \"RISK_POINTS\"\nallocated = -1",
        ),
        (
            "unknown unit",
            "[[budgets]]\nscope = \"tenant:a\"\nunit = \"DOLLARS\"\nallocated = 5",
        ),
        ("tier 5", "[[tools]]\nname = \"x\"\ntier = 5"),
        ("tier -1", "[[tools]]\nname = \"x\"\ntier = -1"),
        ("tier as text", "[[tools]]\nname = \"x\"\ntier = \"0\""),
        ("fractional tier", "[[tools]]\nname = \"x\"\ntier = 0.5"),
        ("negative tier points", "tier_points = [0, -1, 5, 20, 50]"),
        (
            "unknown tool tier 9",
            "unknown_tool = { action = \"tier\", tier = 9 }",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (label, text) in cases {
        let err = Policy::from_toml_str(text, "p.toml").unwrap_err();
        assert_eq!(err.code(), "POLICY_INVALID", "{label}: {err}");
        let file = dir.path().join("p.toml");
        std::fs::write(&file, text).unwrap();
        let err = Policy::from_file(&file).unwrap_err();
        assert_eq!(err.code(), "POLICY_INVALID", "{label}: {err}");
    }
    // Missing, unreadable (a directory), not UTF-8.
    let missing = dir.path().join("missing.toml");
    std::fs::write(dir.path().join("latin1.toml"), b"# caf\xe9\n").unwrap();
    for p in [
        missing.as_path(),
        dir.path(),
        &dir.path().join("latin1.toml"),
    ] {
        let err = Policy::from_file(p).unwrap_err();
        assert_eq!(err.code(), "POLICY_INVALID", "{}: {err}", p.display());
        assert_eq!(err.kind(), ErrorKind::Policy);
    }
    // Built in code, an invalid policy does not start an authority (nor write its budgets).
    let ledger = std::sync::Arc::new(MemoryLedger::new());
    let bad = policy().register("read_file", Tier::T4);
    let err = Authority::builder()
        .policy(bad)
        .shared_ledger(ledger.clone())
        .build()
        .unwrap_err();
    assert_eq!(err.code(), "POLICY_INVALID", "{err}");
    let auth = Authority::builder().shared_ledger(ledger).build().unwrap();
    assert_eq!(records(&auth), 0, "the refused policy wrote its budgets");
}

#[test]
fn an_unknown_tool_is_denied_tool_unknown_and_holds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = SqliteLedger::open(dir.path().join("ledger.db")).unwrap();
    let auth = Authority::builder()
        .policy(policy().unknown_tool(UnknownTool::Deny))
        .ledger(ledger)
        .build()
        .unwrap();
    let call = ToolCall::new("railway.delete_volume", json!({ "id": "vol-1" }));
    let d = auth
        .decide(&DecideRequest::new(bot(), call.clone()))
        .unwrap();
    assert_eq!(d.decision, DecisionKind::Deny);
    assert_eq!(d.reason_code, Some(ReasonCode::ToolUnknown));
    let err = auth.reserve(&ReserveRequest::new(bot(), call)).unwrap_err();
    assert_eq!(err.code(), "TOOL_UNKNOWN");
    assert_eq!(err.code(), ReasonCode::ToolUnknown.as_str());
    assert!(auth.reservations(None, 10).unwrap().is_empty());
    assert_eq!(auth.balances(None).unwrap()[0].reserved, 0);
    let kinds: Vec<_> = auth
        .audit(&AuditQuery::default())
        .unwrap()
        .iter()
        .map(|r| r.kind)
        .collect();
    assert!(kinds.contains(&AuditKind::Denial), "{kinds:?}");
}
