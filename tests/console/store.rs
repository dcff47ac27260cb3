//! The state store's contract for the console's accounts and sessions: one body, run on SQLite
//! and on a real PostgreSQL server. Opening a store again (yesterday's data) keeps everything.

use shenguan::state::{Seen, SessionRow, StateStore, UserRow};

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
