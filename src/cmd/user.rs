//! `shenguan user add|list|disable`: accounts for people, who log in to the console at `/ui`
//! (systems use bearer tokens, `shenguan token`).

use crate::app::*;
use crate::config::Settings;
use crate::console::accounts::{self, NewUser};
use crate::route::Catalog;

/// A new account: its login and its one-time password (printed once).
pub struct Added {
    pub login: String,
    pub password: String,
}

fn catalog(settings: &Settings) -> anyhow::Result<Catalog> {
    Catalog::load(&settings.catalog_file).map_err(|e| {
        anyhow::anyhow!(
            "{}",
            e.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        )
    })
}

/// `shenguan user add --name NAME (--department CODE | --admin) [--login LOGIN]`: a clerk of a
/// catalog department or an operator, with a one-time password that must be changed at the
/// first login. Without `--login`, the login is the department code (or `admin`) and a number.
pub async fn user_add(
    settings: &Settings,
    name: &str,
    department: Option<&str>,
    admin: bool,
    login: Option<&str>,
) -> anyhow::Result<Added> {
    anyhow::ensure!(
        admin != department.is_some(),
        "name either --department CODE (a clerk of that department) or --admin (an operator)"
    );
    let catalog = catalog(settings)?;
    if let Some(d) = department {
        anyhow::ensure!(
            catalog.department(d).is_some(),
            "department '{d}' is not in the routing catalog {}",
            settings.catalog_file.display()
        );
    }
    let state = open_state(settings).await?;
    let login = match login {
        Some(l) => l.trim().to_lowercase(),
        None => {
            let prefix = department.unwrap_or("admin");
            let taken: Vec<String> = state.users().await?.into_iter().map(|u| u.login).collect();
            (1..)
                .map(|n| format!("{prefix}-{n}"))
                .find(|l| !taken.contains(l))
                .expect("a free number")
        }
    };
    let new = NewUser {
        login,
        name: name.to_string(),
        role: if admin { "admin" } else { "clerk" }.to_string(),
        department: department.map(str::to_string),
    };
    let (user, password) = accounts::create_user(state.as_ref(), &catalog, new, "cli").await?;
    Ok(Added {
        login: user.login,
        password,
    })
}

/// `shenguan user list`: every account (never a password or its hash).
pub async fn user_list(settings: &Settings) -> anyhow::Result<String> {
    let state = open_state(settings).await?;
    let now = accounts::unix_now();
    let mut out = format!(
        "{:<24} {:<12} {:<7} {:<16} {:<22} CREATED\n",
        "LOGIN", "NAME", "ROLE", "DEPARTMENT", "STATUS"
    );
    for u in state.users().await? {
        let status = if u.disabled {
            "disabled".to_string()
        } else if let Some(t) = u.locked_until.filter(|t| *t > now) {
            format!(
                "locked until {}",
                crate::console::labels::local_unix(t)
                    .split(' ')
                    .nth(1)
                    .unwrap_or("")
            )
        } else if u.must_change {
            "one-time password".to_string()
        } else {
            "active".to_string()
        };
        out.push_str(&format!(
            "{:<24} {:<12} {:<7} {:<16} {:<22} {}\n",
            u.login,
            u.name,
            u.role,
            u.department.as_deref().unwrap_or("-"),
            status,
            crate::console::labels::local_unix(u.created_at)
        ));
    }
    Ok(out)
}

/// `shenguan user disable LOGIN`: the account can no longer log in; its sessions end.
pub async fn user_disable(settings: &Settings, login: &str) -> anyhow::Result<bool> {
    let state = open_state(settings).await?;
    Ok(accounts::disable_user(state.as_ref(), login, "cli").await?)
}
