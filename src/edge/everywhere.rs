//! What the admin API and the management room do in every room of the deployment at once:
//! block and unblock (the list object first, then each room), preview what an entry would catch,
//! and the list of rooms itself. One place, so both callers answer alike.

use serde_json::{json, Value};
use worker::{Env, Result};

use super::blocklist;
use super::list_do::{ListOp, DEFAULT_LIST};
use super::log::Logger;
use super::{room_do, stub, LISTS_BINDING};
use crate::domain::blocklist::{Entry, EntryKind};
use crate::domain::config::Config;
use crate::domain::deployment::Site;
use crate::domain::moderation;
use crate::room::RoomOp;

/// Every room of the deployment with its label and configuration, the default room first.
pub fn all_rooms(
    site: &Site,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> std::result::Result<Vec<(String, Config)>, crate::domain::config::Problems> {
    let default = site.default_room();
    let mut rooms = Vec::new();
    for room in default
        .iter()
        .chain(site.rooms().iter().filter(|r| Some(*r) != default.as_ref()))
    {
        rooms.push((site.label(room), site.config_for(room, lookup)?));
    }
    Ok(rooms)
}

/// What an entry would catch in every room: each room's preview, merged (each caught person
/// says in which room).
pub async fn preview_everywhere(
    env: &Env,
    rooms: &[(String, Config)],
    entry: &Entry,
) -> Result<Value> {
    let calls = rooms.iter().map(|(label, cfg)| async move {
        let op = RoomOp::Preview {
            entry: entry.clone(),
        };
        (label, room_do::call::<Value>(env, cfg, &op).await)
    });
    let mut merged = json!({ "reach": Value::Null, "blocked": 0, "held": 0, "caught": [] });
    for (label, out) in futures_util::future::join_all(calls).await {
        let out = out?;
        if merged["reach"].is_null() {
            merged["reach"] = out["reach"].clone();
        }
        for key in ["blocked", "held"] {
            merged[key] =
                (merged[key].as_u64().unwrap_or(0) + out[key].as_u64().unwrap_or(0)).into();
        }
        if let (Some(all), Some(caught)) =
            (merged["caught"].as_array_mut(), out["caught"].as_array())
        {
            for c in caught {
                let mut c = c.clone();
                c["room"] = label.clone().into();
                all.push(c);
            }
        }
    }
    Ok(merged)
}

/// This isolate's hot path takes the list the change just stored at once, without waiting for
/// the list object's publish to KV or for its own cached version to expire: a knock this
/// isolate serves next is judged by the new list. (Other isolates see it once KV has it; a
/// room checks the list object itself before any invite meanwhile.)
async fn adopt_version(env: &Env, rooms: &[(String, Config)], changed: &Value, log: &Logger) {
    let (Some(version), Some((_, cfg))) = (changed["version"].as_u64(), rooms.first()) else {
        return;
    };
    if let Err(e) = blocklist::adopt(env, version, &cfg.blocklist).await {
        log.event("blocklist_adopt_failed", &[("error", e.to_string().into())]);
    }
}

/// Adds `entry` to the block-list and enforces it in every room: the answer of `block_user`
/// (`None`: the list is full). The admin API and the management room's 🔨 both block so. The
/// top-level fields are the default room's (as a one-room deployment always answered); `rooms`
/// has one entry per room.
pub async fn block_everywhere(
    env: &Env,
    rooms: &[(String, Config)],
    entry: &Entry,
    reach: Option<crate::domain::blocklist::Reach>,
    log: &Logger,
) -> Result<Option<Value>> {
    // What the entry catches, read before it acts (the same answer `blocklist/preview` gives).
    let preview = preview_everywhere(env, rooms, entry).await?;
    let added: Value = stub::call(
        env,
        LISTS_BINDING,
        DEFAULT_LIST,
        "/",
        &ListOp::Add {
            entry: entry.clone(),
        },
    )
    .await?;
    let status = match added["outcome"]["outcome"].as_str() {
        Some("added") => "blocked",
        Some("duplicate") => "already_blocked",
        _ => return Ok(None),
    };
    adopt_version(env, rooms, &added, log).await;
    let mut reply = json!({ "status": status, "entry": added["entry"], "version": added["version"],
                            "preview": preview });
    if entry.kind != EntryKind::DisplayName {
        let rule = if entry.kind == EntryKind::UserId {
            "exact"
        } else {
            "glob"
        };
        let explanation = format!("matches blocked {} ({rule})", entry.pattern);
        let op = RoomOp::Enforce {
            pattern: entry.pattern.clone(),
            reason: moderation::reason(&explanation),
            reach,
        };
        let calls = rooms.iter().map(|(label, cfg)| {
            let op = &op;
            async move { (label, room_do::call::<Value>(env, cfg, op).await) }
        });
        let mut per_room = Vec::new();
        for (i, (label, acted)) in futures_util::future::join_all(calls)
            .await
            .into_iter()
            .enumerate()
        {
            let acted = acted?;
            let mut one = json!({ "room": label, "action": acted["action"],
                                  "knocks_closed": acted["knocks_closed"],
                                  "knocks_held": acted["knocks_held"] });
            if entry.kind == EntryKind::UserId {
                one["membership_was"] = acted["membership_was"].clone();
            }
            if let Some(d) = acted.get("detail") {
                one["detail"] = d.clone();
            }
            // The first room is the default room: its answer stays at the top, as before.
            if i == 0 {
                for key in [
                    "membership_was",
                    "action",
                    "knocks_closed",
                    "knocks_held",
                    "detail",
                ] {
                    if let Some(v) = one.get(key) {
                        reply[key] = v.clone();
                    }
                }
            }
            per_room.push(one);
        }
        reply["rooms"] = per_room.into();
    }
    log.event(
        "blocked",
        &[
            ("pattern", entry.pattern.clone().into()),
            ("action", reply["action"].clone()),
            ("rooms", reply["rooms"].clone()),
        ],
    );
    Ok(Some(reply))
}

/// Removes a block-list entry and lifts what it did in every room (owed kicks, Knock's bans):
/// the answer of `unblock_user`. The admin API and `!knock unblock` both unblock so.
pub async fn unblock_everywhere(
    env: &Env,
    rooms: &[(String, Config)],
    pattern: &str,
    log: &Logger,
) -> Result<Value> {
    let removed: Value = stub::call(
        env,
        LISTS_BINDING,
        DEFAULT_LIST,
        "/",
        &ListOp::Remove {
            pattern: pattern.to_owned(),
        },
    )
    .await?;
    let mut was_blocked = removed["removed"].as_bool().unwrap_or(false);
    let mut changed = removed.clone();
    // A subscribed policy list that still names them is overridden for this one person by a
    // local exception (Knock's own entries still apply to them).
    let mut allowed_over = None;
    if let (Ok(user), Some((_, cfg))) = (crate::domain::mxid::UserId::parse(pattern), rooms.first())
    {
        let lists = super::policy::lists(env, cfg, log).await;
        if let Some(found) = lists
            .iter()
            .find_map(|l| l.judge(user.as_str()).ok().flatten())
        {
            let out: Value = stub::call(
                env,
                LISTS_BINDING,
                DEFAULT_LIST,
                "/",
                &ListOp::Allow {
                    user_id: user.as_str().into(),
                    reason: Some(format!("unblocked over {}", found.explain())),
                },
            )
            .await?;
            if out["allowed"].as_bool().unwrap_or(false) {
                changed = out;
            }
            allowed_over = Some(found.explain());
            was_blocked = true;
        }
    }
    if was_blocked {
        adopt_version(env, rooms, &changed, log).await;
    }
    let mut reply = json!({
        "status": if was_blocked { "unblocked" } else { "not_blocked" },
        "removed": removed["entries"],
    });
    if let Some(over) = allowed_over {
        reply["allowed_over"] = over.into();
    }
    if let Ok(user) = crate::domain::mxid::UserId::parse(pattern) {
        let op = RoomOp::Lift {
            user_id: user.as_str().into(),
        };
        let calls = rooms.iter().map(|(label, cfg)| {
            let op = &op;
            async move { (label, room_do::call::<Value>(env, cfg, op).await) }
        });
        let mut per_room = Vec::new();
        for (i, (label, lifted)) in futures_util::future::join_all(calls)
            .await
            .into_iter()
            .enumerate()
        {
            let lifted = lifted?;
            if i == 0 {
                reply["unbanned"] = lifted["unbanned"].clone();
            }
            per_room.push(json!({ "room": label, "unbanned": lifted["unbanned"] }));
        }
        reply["rooms"] = per_room.into();
    }
    log.event("unblocked", &[("pattern", pattern.into())]);
    Ok(reply)
}
