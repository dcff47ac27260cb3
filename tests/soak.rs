//! The soak in a bounded form: `shenguan soak` runs a gateway process for two minutes at 20
//! records/s with bad records, resent duplicates, claims, returns and feedback, then reads the
//! bus back. The 30-minute run is `bash scripts/soak.sh`; both fail on any loss or duplicate and
//! on memory or open files that keep growing.

mod common;

#[test]
fn a_two_minute_soak_loses_nothing_duplicates_nothing_and_stays_steady() {
    let out = common::shenguan(&["soak", "--minutes", "2", "--rate", "20"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains(" 0 duplicated, 0 lost,"), "{stdout}");
    assert!(!stdout.contains("FAILED"), "{stdout}");
}
