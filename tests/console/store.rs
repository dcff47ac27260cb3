//! The state store's contract for the console's accounts and sessions, the adapters' activity
//! and the in-memory de-duplication table's log: one body, run on SQLite and on a real
//! PostgreSQL server. Opening a store again (yesterday's data) keeps everything.

use shenguan::state::{AdapterActivity, Seen, SessionRow, StateStore, UserRow};

use crate::common::*;

fn user(login: &str, department: Option<&str>) -> UserRow {
    UserRow {
        id: format!("id-{login}"),
        login: login.into(),
        name: "张三".into(),
        role: if department.is_some() {
            "clerk"
        } else {
            "admin"
        }
        .into(),
        department: department.map(str::to_string),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        must_change: true,
        failed_logins: 0,
        locked_until: None,
        disabled: false,
        created_at: 1_800_000_000,
    }
}

fn session(id: &str, user_id: &str, now: i64) -> SessionRow {
    SessionRow {
        id: id.into(),
        secret_sha256: [7u8; 32],
        user_id: user_id.into(),
        created_at: now,
        expires_at: now + 36_000,
        idle_until: now + 1_800,
    }
}

async fn contract(store: &dyn StateStore) {
    let clerk = user("szs-scjg-1", Some("szs-scjg"));
    assert!(store.add_user(clerk.clone()).await.unwrap());
    assert!(
        !store.add_user(user("szs-scjg-1", None)).await.unwrap(),
        "logins are unique"
    );
    assert!(store.add_user(user("admin-1", None)).await.unwrap());
    assert_eq!(store.user("szs-scjg-1").await.unwrap(), Some(clerk.clone()));
    assert_eq!(store.user("nobody").await.unwrap(), None);
    let logins: Vec<String> = store
        .users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.login)
        .collect();
    assert_eq!(logins, ["admin-1", "szs-scjg-1"]);

    // Four failures count; the fifth locks and starts the count again.
    for n in 1..5 {
        assert!(!store
            .login_failed("szs-scjg-1", 5, 2_000_000_000)
            .await
            .unwrap());
        assert_eq!(
            store
                .user("szs-scjg-1")
                .await
                .unwrap()
                .unwrap()
                .failed_logins,
            n
        );
    }
    assert!(store
        .login_failed("szs-scjg-1", 5, 2_000_000_000)
        .await
        .unwrap());
    let locked = store.user("szs-scjg-1").await.unwrap().unwrap();
    assert_eq!(
        (locked.failed_logins, locked.locked_until),
        (0, Some(2_000_000_000))
    );
    assert!(!store.login_failed("nobody", 5, 1).await.unwrap());
    // A new password clears the lock.
    assert!(store
        .set_password("szs-scjg-1", "$argon2id$new", false)
        .await
        .unwrap());
    let changed = store.user("szs-scjg-1").await.unwrap().unwrap();
    assert_eq!(changed.password_hash, "$argon2id$new");
    assert!(!changed.must_change);
    assert_eq!(changed.locked_until, None);
    assert!(!store.set_password("nobody", "x", true).await.unwrap());
    store.login_failed("szs-scjg-1", 5, 1).await.unwrap();
    store.login_succeeded("szs-scjg-1").await.unwrap();
    assert_eq!(
        store
            .user("szs-scjg-1")
            .await
            .unwrap()
            .unwrap()
            .failed_logins,
        0
    );

    // Sessions: found with their account, touched, ended.
    let now = 1_900_000_000;
    store
        .add_session(session("s1", &clerk.id, now))
        .await
        .unwrap();
    store
        .add_session(session("s2", &clerk.id, now))
        .await
        .unwrap();
    store
        .add_session(session("s3", "id-admin-1", now - 100_000))
        .await
        .unwrap();
    let (row, account) = store.session("s1").await.unwrap().unwrap();
    assert_eq!(row, session("s1", &clerk.id, now));
    assert_eq!(account.login, "szs-scjg-1");
    assert!(store.session("missing").await.unwrap().is_none());
    store.touch_session("s1", now + 5_000).await.unwrap();
    assert_eq!(
        store.session("s1").await.unwrap().unwrap().0.idle_until,
        now + 5_000
    );
    store.purge_sessions(now).await.unwrap();
    assert!(
        store.session("s3").await.unwrap().is_none(),
        "expired sessions go"
    );
    store
        .delete_sessions_of(&clerk.id, Some("s1"))
        .await
        .unwrap();
    assert!(store.session("s1").await.unwrap().is_some());
    assert!(store.session("s2").await.unwrap().is_none());
    store.delete_session("s1").await.unwrap();
    assert!(store.session("s1").await.unwrap().is_none());

    // Disabling ends the account's sessions.
    store
        .add_session(session("s4", &clerk.id, now))
        .await
        .unwrap();
    assert!(store.disable_user("szs-scjg-1").await.unwrap());
    assert!(!store.disable_user("szs-scjg-1").await.unwrap());
    assert!(store.user("szs-scjg-1").await.unwrap().unwrap().disabled);
    assert!(store.session("s4").await.unwrap().is_none());

    // What arrived per adapter.
    assert!(store.adapter_activity().await.unwrap().is_empty());
    store
        .remember(vec![
            Seen {
                adapter: "a".into(),
                business_key: "1".into(),
                content_hash: "h".into(),
                record_id: "r1".into(),
            },
            Seen {
                adapter: "a".into(),
                business_key: "2".into(),
                content_hash: "h".into(),
                record_id: "r2".into(),
            },
        ])
        .await
        .unwrap();
    let activity = store.adapter_activity().await.unwrap();
    assert_eq!(activity.len(), 1);
    assert_eq!(
        (activity[0].adapter.as_str(), activity[0].records),
        ("a", 2)
    );
    assert!(activity[0].last_at.is_some());

    // The log of an ingest process's in-memory de-duplication table: pieces in order, each
    // adding its adapters' new records to their activity.
    assert!(store.dedup_log(i64::MIN, 10).await.unwrap().is_empty());
    let at = |t: &str| Some(format!("2026-12-0{t}T08:00:00+00:00"));
    let activity = |adapter: &str, records: u64, t: &str| AdapterActivity {
        adapter: adapter.into(),
        records,
        last_at: at(t),
    };
    store
        .dedup_append(vec![1; 32], vec![activity("a", 3, "7")])
        .await
        .unwrap();
    store
        .dedup_append(
            vec![2; 16],
            vec![activity("a", 0, "8"), activity("b", 1, "8")],
        )
        .await
        .unwrap();
    let log = store.dedup_log(i64::MIN, 10).await.unwrap();
    assert_eq!(
        log.iter().map(|(_, p)| p.clone()).collect::<Vec<_>>(),
        vec![vec![1; 32], vec![2; 16]]
    );
    assert!(log[0].0 < log[1].0);
    assert_eq!(
        store.dedup_log(log[0].0, 1).await.unwrap(),
        log[1..].to_vec()
    );
    let activity = store.adapter_activity().await.unwrap();
    let counts: Vec<(&str, u64)> = activity
        .iter()
        .map(|a| (a.adapter.as_str(), a.records))
        .collect();
    assert_eq!(
        counts,
        vec![("a", 5), ("b", 1)],
        "the table's rows and the log's new records"
    );
    let last_a = activity[0].last_at.as_deref().unwrap();
    assert!(last_a.starts_with("2026-12-08"), "{last_a}");

    // Replacing the pieces up to the first keeps the second after the replacement.
    store
        .dedup_compact(log[0].0, vec![vec![3; 16], vec![4; 16]])
        .await
        .unwrap();
    let compacted: Vec<Vec<u8>> = store
        .dedup_log(i64::MIN, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    assert_eq!(compacted, vec![vec![3; 16], vec![4; 16], vec![2; 16]]);
    store.dedup_append(vec![5; 16], Vec::new()).await.unwrap();
    let last = store.dedup_log(i64::MIN, 10).await.unwrap();
    assert_eq!(
        last.last().unwrap().1,
        vec![5; 16],
        "appended after everything"
    );
}

#[tokio::test]
async fn accounts_and_sessions_keep_their_contract_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    contract(&shenguan::state::SqliteState::open(&path).unwrap()).await;
    let again = shenguan::state::SqliteState::open(&path).unwrap();
    assert!(again.user("admin-1").await.unwrap().is_some());
}

#[tokio::test]
async fn accounts_and_sessions_keep_their_contract_on_postgres() {
    let url = postgres_database().await;
    contract(&shenguan::state::pg::PgState::connect(&url).await.unwrap()).await;
    let again = shenguan::state::pg::PgState::connect(&url).await.unwrap();
    assert!(again.user("admin-1").await.unwrap().is_some());
}
