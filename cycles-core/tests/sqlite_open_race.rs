//! Many threads opening the same fresh SQLite file at once: every open succeeds.

use cycles_core::*;

#[test]
fn concurrent_opens_of_a_fresh_file_all_succeed() {
    for round in 0..40 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("race.db");
        let barrier = std::sync::Barrier::new(8);
        let results: Vec<Result<SqliteLedger>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    let (barrier, path) = (&barrier, &path);
                    s.spawn(move || {
                        barrier.wait();
                        SqliteLedger::open(path)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for r in results {
            if let Err(e) = r {
                panic!("round {round}: open failed: {e} ({})", e.code());
            }
        }
    }
}
