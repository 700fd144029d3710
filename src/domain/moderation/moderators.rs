//! Who moderates, and whom Knock never acts against.
//!
//! Decides: from a room's `m.room.power_levels` content, each user's level and the level its
//! `kick` needs (default 50, as the spec says); the management room's moderators are its members
//! at or above that. Knock never acts against the bot itself or a moderator. Never does: IO.

use serde_json::Value;

/// The spec's default `kick` level when the event does not name one.
pub const DEFAULT_KICK_LEVEL: i64 = 50;

/// A room's power levels, as the parts Knock reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PowerLevels {
    users: Vec<(String, i64)>,
    users_default: i64,
    kick: i64,
}

fn level(v: &Value) -> Option<i64> {
    // Old rooms may carry levels as strings.
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

impl PowerLevels {
    /// Reads `m.room.power_levels` content; missing parts take the spec's defaults.
    pub fn from_content(content: &Value) -> PowerLevels {
        let users = content["users"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(u, v)| level(v).map(|l| (u.clone(), l)))
                    .collect()
            })
            .unwrap_or_default();
        PowerLevels {
            users,
            users_default: level(&content["users_default"]).unwrap_or(0),
            kick: level(&content["kick"]).unwrap_or(DEFAULT_KICK_LEVEL),
        }
    }

    pub fn of(&self, user: &str) -> i64 {
        self.users
            .iter()
            .find(|(u, _)| u == user)
            .map_or(self.users_default, |(_, l)| *l)
    }

    /// At or above the room's `kick` level.
    pub fn is_moderator(&self, user: &str) -> bool {
        self.of(user) >= self.kick
    }
}

/// Whether Knock may act against `target` at all: never the bot, never a moderator of the
/// management room or of the room itself.
pub fn may_act_against(
    target: &str,
    bot: &str,
    management: &PowerLevels,
    room: &PowerLevels,
) -> bool {
    target != bot && !management.is_moderator(target) && !room.is_moderator(target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn moderators_are_at_or_above_the_kick_level() {
        let pl = PowerLevels::from_content(&json!({
            "users": {"@owner:x": 100, "@mod:x": 50, "@helper:x": "49"},
            "users_default": 0,
            "kick": 50
        }));
        assert!(pl.is_moderator("@owner:x"));
        assert!(pl.is_moderator("@mod:x"));
        assert!(!pl.is_moderator("@helper:x"), "a string level is read too");
        assert!(!pl.is_moderator("@stranger:x"));
        // The spec's defaults: kick 50, users_default 0.
        let bare = PowerLevels::from_content(&json!({"users": {"@a:x": 50}}));
        assert!(bare.is_moderator("@a:x"));
        let lax = PowerLevels::from_content(&json!({"users_default": 60}));
        assert!(lax.is_moderator("@anyone:x"));
    }

    #[test]
    fn knock_never_acts_against_the_bot_or_a_moderator() {
        let mgmt = PowerLevels::from_content(&json!({"users": {"@mod:x": 50}}));
        let room = PowerLevels::from_content(&json!({"users": {"@roommod:x": 75}}));
        assert!(!may_act_against("@bot:x", "@bot:x", &mgmt, &room));
        assert!(!may_act_against("@mod:x", "@bot:x", &mgmt, &room));
        assert!(!may_act_against("@roommod:x", "@bot:x", &mgmt, &room));
        assert!(may_act_against("@troll:x", "@bot:x", &mgmt, &room));
    }
}
