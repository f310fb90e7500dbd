//! Runs after the other test binaries of this crate (cargo runs them in name
//! order): no test left a channel in `/dev/shm` behind. Every test's names are
//! `bt-<tag>-<pid>-...` with the pid of the test process that made them; a
//! name whose process is gone is a leak (names of live processes belong to a
//! concurrent test run and are left alone).

#[test]
fn no_test_channel_left_in_dev_shm() {
    let mut leaked = Vec::new();
    for entry in std::fs::read_dir("/dev/shm").expect("/dev/shm") {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("bips.bt-") else {
            continue;
        };
        // `<tag>-<pid>-<counter>-<nanos>`: the pid is the third field from the end.
        let fields: Vec<&str> = rest.rsplitn(4, '-').collect();
        let Some(pid) = fields.get(2).and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            leaked.push(name);
        }
    }
    assert!(
        leaked.is_empty(),
        "channels left in /dev/shm by finished tests: {leaked:?}"
    );
}

/// No producer of a finished process left its staging object
/// (`bips..new-<pid>-<n>`, see `Segment::create_staged`) behind.
#[test]
fn no_staging_object_of_a_dead_process_left() {
    let mut leaked = Vec::new();
    for entry in std::fs::read_dir("/dev/shm").expect("/dev/shm") {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("bips..new-") else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            leaked.push(name);
        }
    }
    assert!(
        leaked.is_empty(),
        "staging objects left in /dev/shm: {leaked:?}"
    );
}
