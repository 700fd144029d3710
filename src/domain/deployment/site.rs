//! [`Site`]: the whole deployment the worker serves, as [`super::parse`] read it: which room a
//! form or `?room=` means, the rooms' labels, and each room's configuration (its own settings
//! over the global variables). Never does: read the environment (a lookup is passed in).

use super::*;

/// The variable a per-room key stands for.
const ROOM_VARS: [(&str, &str); 9] = [
    ("WELCOME_MESSAGE", "welcome_message"),
    ("REMINDER_MESSAGE", "reminder_message"),
    ("REMINDER_AFTER", "reminder_after"),
    ("INVITE_EXPIRY", "invite_expiry"),
    ("KNOCK_POLICY", "knock_policy"),
    ("BLOCK_ACTION", "block_action"),
    ("MANAGEMENT_ROOM_ID", "management_room_id"),
    ("MANAGEMENT_NOTIFY", "management_notify"),
    ("DENY_MESSAGE", "deny_message"),
];

impl RoomEntry {
    /// The room's own value for a global variable, as the variable would hold it (`null` turns
    /// a message off, like an empty variable).
    pub fn setting(&self, var: &str) -> Option<String> {
        let key = ROOM_VARS.iter().find(|(v, _)| *v == var)?.1;
        match self.settings.get(key)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Null => Some(String::new()),
            _ => None,
        }
    }
}

/// A whole deployment as the environment describes it: `NEW_ROOM_ID`, `KNOCK_ROOMS` and
/// `KNOCK_FORMS`, and each room's configuration (its own settings over the global variables).
#[derive(Debug, Clone, PartialEq)]
pub struct Site {
    pub deployment: Deployment,
    /// `NEW_ROOM_ID`, if set.
    pub new_room_id: Option<RoomId>,
}

/// A room of the deployment as the admin API shows it: never its ID.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RoomLabel {
    pub room: String,
    pub space: bool,
    pub default: bool,
    pub forms: Vec<String>,
}

impl Site {
    /// Reads the three variables through `get`. With none of them set, the problem names
    /// `NEW_ROOM_ID`, the one-room setup.
    pub fn load(get: &dyn Fn(&str) -> Option<String>) -> Result<Site, Problems> {
        let set = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let mut problems = Vec::new();
        let new_room_id = match set("NEW_ROOM_ID") {
            None => None,
            Some(v) => match RoomId::parse(v.trim()) {
                Ok(r) => Some(r),
                Err(why) => {
                    problems.push(ConfigProblem {
                        name: "NEW_ROOM_ID".into(),
                        missing: false,
                        fix: format!("it {why}"),
                    });
                    None
                }
            },
        };
        let global = global_secrets(get);
        let deployment = match parse(
            set("KNOCK_ROOMS").as_deref(),
            set("KNOCK_FORMS").as_deref(),
            new_room_id.as_ref(),
            get,
            &global,
        ) {
            Ok(d) => d,
            Err(found) => {
                problems.extend(found.into_iter().map(|p| ConfigProblem {
                    name: p.name,
                    missing: false,
                    fix: p.fix,
                }));
                Deployment::default()
            }
        };
        let site = Site {
            deployment,
            new_room_id,
        };
        if problems.is_empty() && site.rooms().is_empty() {
            // No room at all: what a one-room setup lacks, every missing setting at once.
            if let Err(p) = Config::from_lookup(get) {
                problems.extend(p.0);
            }
        }
        if problems.is_empty() {
            Ok(site)
        } else {
            Err(Problems(problems))
        }
    }

    /// The room `/invite_from_form` and the admin API mean without a `?room=`: the `default`
    /// form's, else `NEW_ROOM_ID`, else the first room of `KNOCK_ROOMS` by alias (a JSON object
    /// has no order a worker can rely on).
    pub fn default_room(&self) -> Option<RoomId> {
        self.deployment
            .form(None)
            .map(|f| f.room.clone())
            .or_else(|| self.new_room_id.clone())
            .or_else(|| self.deployment.rooms.first().map(|r| r.room_id.clone()))
    }

    /// Every room of the deployment, once each: `KNOCK_ROOMS` in order, the children its spaces
    /// list, then rooms only a form or `NEW_ROOM_ID` names.
    pub fn rooms(&self) -> Vec<RoomId> {
        let mut out: Vec<RoomId> = Vec::new();
        let named = self.deployment.rooms.iter().map(|r| &r.room_id);
        // A space's listed children are rooms of the deployment too (cron, blocks, `?room=`);
        // a space that takes every `m.space.child` serves its children itself.
        let children = self
            .deployment
            .rooms
            .iter()
            .flat_map(|r| r.children.iter().flatten());
        let by_forms = self.deployment.forms.iter().map(|f| &f.room);
        for r in named
            .chain(children)
            .chain(by_forms)
            .chain(self.new_room_id.iter())
        {
            if !out.contains(r) {
                out.push(r.clone());
            }
        }
        out
    }

    /// A room by alias, room ID, or `default`; only rooms of this deployment.
    pub fn resolve(&self, name: &str) -> Option<RoomId> {
        let name = name.trim();
        if name == "default" {
            if let Some(r) = self.deployment.room("default") {
                return Some(r.room_id.clone());
            }
            return self.default_room();
        }
        if let Some(r) = self.deployment.room(name) {
            return Some(r.room_id.clone());
        }
        self.rooms()
            .into_iter()
            .find(|r| r.as_str() == name || self.label(r) == name)
    }

    /// The deployment's room with this [`room_key`].
    pub fn by_key(&self, key: &str) -> Option<RoomId> {
        self.rooms().into_iter().find(|r| room_key(r) == key)
    }

    /// How the admin API names a room: its alias, `<space>/<n>` for a space's n-th listed child,
    /// `default` for the default room without one, else `form:<id>` of the first form that
    /// delivers into it.
    pub fn label(&self, room: &RoomId) -> String {
        if let Some(r) = self.deployment.rooms.iter().find(|r| &r.room_id == room) {
            return r.alias.clone();
        }
        // A child a space lists: `<space>/<position>`, from 1.
        for space in &self.deployment.rooms {
            if let Some(i) = space.children.iter().flatten().position(|c| c == room) {
                return format!("{}/{}", space.alias, i + 1);
            }
        }
        if self.default_room().as_ref() == Some(room) {
            return "default".into();
        }
        match self.deployment.forms.iter().find(|f| &f.room == room) {
            Some(f) => format!("form:{}", f.id),
            None => "default".into(),
        }
    }

    /// The rooms with their forms, as `GET /rooms` lists them.
    pub fn labels(&self) -> Vec<RoomLabel> {
        let default = self.default_room();
        self.rooms()
            .iter()
            .map(|r| RoomLabel {
                room: self.label(r),
                space: self
                    .deployment
                    .rooms
                    .iter()
                    .any(|e| &e.room_id == r && e.space),
                default: default.as_ref() == Some(r),
                forms: self
                    .deployment
                    .forms
                    .iter()
                    .filter(|f| &f.room == r)
                    .map(|f| f.id.clone())
                    .collect(),
            })
            .collect()
    }

    /// One room's configuration: its settings in `KNOCK_ROOMS` over the global variables.
    pub fn config_for(
        &self,
        room: &RoomId,
        get: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, Problems> {
        let entry = self.deployment.rooms.iter().find(|r| &r.room_id == room);
        let mut cfg = Config::from_lookup(|name: &str| {
            if name == "NEW_ROOM_ID" {
                return Some(room.as_str().to_owned());
            }
            entry.and_then(|e| e.setting(name)).or_else(|| get(name))
        })?;
        cfg.space = entry.filter(|e| e.space).map(|e| SpaceTarget {
            children: e.children.clone(),
        });
        cfg.label = self.label(room);
        Ok(cfg)
    }

    /// The configuration a delivery to form `id` (`None`: the default form) is handled with:
    /// its room's, with the form's field, honeypots, thank-you page and secrets. `None` for an
    /// unknown form, which the route answers like a wrong secret.
    pub fn form_config(
        &self,
        id: Option<&str>,
        get: &dyn Fn(&str) -> Option<String>,
    ) -> Option<Result<Config, Problems>> {
        let form = self.deployment.form(id)?;
        Some(self.config_for(&form.room, get).map(|mut cfg| {
            if form.form_field.is_some() {
                cfg.form_field = form.form_field.clone();
            }
            if let Some(h) = &form.honeypot_fields {
                cfg.honeypot_fields = h.clone();
            }
            if form.thank_you_url.is_some() {
                cfg.thank_you_url = form.thank_you_url.clone();
            }
            cfg.secrets = form.secrets.clone();
            cfg
        }))
    }

    /// The default room's configuration, for what is not about one room (the session, health).
    pub fn default_config(&self, get: &dyn Fn(&str) -> Option<String>) -> Result<Config, Problems> {
        match self.default_room() {
            Some(room) => self.config_for(&room, get),
            None => Config::from_lookup(get),
        }
    }
}
