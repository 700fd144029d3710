//! The moderator page's sign-in sessions: one Durable Object per session id (never a global
//! singleton). It loads the session, lets [`crate::web::session`] decide, and stores the result;
//! an alarm deletes it once it has been idle for 12 hours.

use serde::{Deserialize, Serialize};
use worker::{durable_object, DurableObject, Env, Request, Response, Result, State};

use super::{now_ms, stub, ADMIN_SESSIONS_BINDING};
use crate::web::session::{Session, Touch};

#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum AdminSessionOp {
    /// Stores a new session under this object's id.
    Create { session: Session },
    /// Uses the session: its CSRF token while it is valid.
    Touch,
    /// Ends it at once (logout).
    End,
}

#[derive(Serialize, Deserialize)]
pub struct TouchAnswer {
    pub session: Option<Session>,
}

/// Sends `op` to the object of session `id`.
pub async fn call<T: serde::de::DeserializeOwned>(
    env: &Env,
    id: &str,
    op: &AdminSessionOp,
) -> Result<T> {
    stub::call(env, ADMIN_SESSIONS_BINDING, id, "/", op).await
}

/// The valid session behind `id`, if there is one.
pub async fn touch(env: &Env, id: &str) -> Result<Option<Session>> {
    let answer: TouchAnswer = call(env, id, &AdminSessionOp::Touch).await?;
    Ok(answer.session)
}

#[durable_object]
pub struct AdminSessionDo {
    state: State,
    #[allow(dead_code)]
    env: Env,
}

impl DurableObject for AdminSessionDo {
    fn new(state: State, env: Env) -> Self {
        AdminSessionDo { state, env }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let op: AdminSessionOp = req.json().await?;
        let storage = self.state.storage();
        match op {
            AdminSessionOp::Create { session } => {
                storage.put("session", &session).await?;
                self.expire_at(session.expires_at()).await?;
                Response::from_json(&TouchAnswer {
                    session: Some(session),
                })
            }
            AdminSessionOp::Touch => {
                let Some(stored) = storage.get::<Session>("session").await? else {
                    return Response::from_json(&TouchAnswer { session: None });
                };
                match stored.touch(now_ms()) {
                    Touch::Expired => {
                        storage.delete_all().await?;
                        Response::from_json(&TouchAnswer { session: None })
                    }
                    Touch::Valid { session, store } => {
                        if store {
                            storage.put("session", &session).await?;
                            self.expire_at(session.expires_at()).await?;
                        }
                        Response::from_json(&TouchAnswer {
                            session: Some(session),
                        })
                    }
                }
            }
            AdminSessionOp::End => {
                storage.delete_all().await?;
                let _ = storage.delete_alarm().await;
                Response::from_json(&TouchAnswer { session: None })
            }
        }
    }

    async fn alarm(&self) -> Result<Response> {
        let storage = self.state.storage();
        let Some(stored) = storage.get::<Session>("session").await? else {
            return Response::ok("empty");
        };
        match stored.touch(now_ms()) {
            Touch::Expired => {
                storage.delete_all().await?;
                Response::ok("expired")
            }
            // Used since the alarm was set: wait for the new end.
            Touch::Valid { session, .. } => {
                self.expire_at(session.expires_at()).await?;
                Response::ok("still in use")
            }
        }
    }
}

impl AdminSessionDo {
    async fn expire_at(&self, at_ms: u64) -> Result<()> {
        let wait = at_ms.saturating_sub(now_ms()).max(1_000);
        self.state
            .storage()
            .set_alarm(std::time::Duration::from_millis(wait))
            .await
    }
}
