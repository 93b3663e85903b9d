//! The panel's forms: each POST path is one [`Action`], parsed once by
//! [`Action::route`], and each action has a handler of its own. On success
//! a handler redirects (with a one-time notice); on refusal it shows the
//! page again with the form's messages.

use pakkt_core::id::{AgentId, ApiKeyId, EngineRuleId, FirewallRuleId, IpEntryId};
use pakkt_core::store::Store;
use pakkt_core::wire::CreateAgentRequest;
use pakkt_core::{Entity, Error, ErrorKind};
use poem::Response;
use poem::http::header::{self, HeaderValue};

use super::form::{self, FormState};
use super::session::Notice;
use super::{Answer, Cursors, Panel, Signed, cleared_cookie, failure, parse_id, see_other, status_of};

/// What a POST asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Action {
    /// `POST /signout`.
    SignOut,
    /// `POST /agents`.
    AddAgent,
    /// `POST /agents/{id}/delete`.
    DeleteAgent(AgentId),
    /// `POST /agents/{id}/…`: a change to one agent's items.
    OnAgent(AgentId, AgentAction),
    /// `POST /keys`.
    AddKey,
    /// `POST /keys/{id}/revoke`.
    RevokeKey(ApiKeyId),
}

/// A change to one agent's items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AgentAction {
    /// `engine-rules`.
    AddEngineRule,
    /// `engine-rules/{id}/delete`.
    DeleteEngineRule(EngineRuleId),
    /// `ip-list`.
    AddIpEntry,
    /// `ip-list/{id}/delete`.
    DeleteIpEntry(IpEntryId),
    /// `firewall`.
    AddFirewallRule,
    /// `firewall/{id}/delete`.
    DeleteFirewallRule(FirewallRuleId),
    /// `templates`.
    ApplyTemplate,
}

impl Action {
    /// The action of a POST path's segments; `None` (a page not found) for
    /// any other path, or a malformed ID.
    pub(super) fn route(segs: &[&str]) -> Option<Self> {
        Some(match segs {
            ["signout"] => Self::SignOut,
            ["agents"] => Self::AddAgent,
            ["agents", id, "delete"] => Self::DeleteAgent(parse_id(id)?),
            ["agents", id, rest @ ..] => Self::OnAgent(parse_id(id)?, AgentAction::route(rest)?),
            ["keys"] => Self::AddKey,
            ["keys", id, "revoke"] => Self::RevokeKey(parse_id(id)?),
            _ => return None,
        })
    }

    /// The name of the form that posts to it (field IDs and messages).
    pub(super) fn form_name(self) -> &'static str {
        match self {
            Self::AddAgent => "agent",
            Self::OnAgent(_, AgentAction::AddEngineRule) => "engine",
            Self::OnAgent(_, AgentAction::AddIpEntry) => "ip",
            Self::OnAgent(_, AgentAction::AddFirewallRule) => "firewall",
            Self::OnAgent(_, AgentAction::ApplyTemplate) => "template",
            Self::AddKey => "key",
            _ => "action",
        }
    }
}

impl AgentAction {
    fn route(segs: &[&str]) -> Option<Self> {
        Some(match segs {
            ["engine-rules"] => Self::AddEngineRule,
            ["engine-rules", id, "delete"] => Self::DeleteEngineRule(parse_id(id)?),
            ["ip-list"] => Self::AddIpEntry,
            ["ip-list", id, "delete"] => Self::DeleteIpEntry(parse_id(id)?),
            ["firewall"] => Self::AddFirewallRule,
            ["firewall", id, "delete"] => Self::DeleteFirewallRule(parse_id(id)?),
            ["templates"] => Self::ApplyTemplate,
            _ => return None,
        })
    }

    /// The form fields a refusal of this action may name.
    fn fields(self) -> &'static [&'static str] {
        match self {
            Self::AddEngineRule => form::ENGINE_FIELDS,
            Self::AddIpEntry => form::IP_FIELDS,
            Self::AddFirewallRule => form::FIREWALL_FIELDS,
            _ => &[],
        }
    }
}

/// A redirect to the sign-in page that ends the session's cookie.
fn to_sign_in() -> Response {
    let mut resp = see_other("/signin");
    if let Ok(cookie) = HeaderValue::from_str(&cleared_cookie()) {
        resp.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    resp
}

impl<S: Store, A> Panel<S, A> {
    /// Runs a POST's action.
    pub(super) async fn act(&self, s: &Signed, action: Action, form: FormState) -> Answer {
        match action {
            Action::SignOut => {
                self.core.sign_out(s.token.expose()).await.map_err(|e| failure(&e))?;
                Ok(to_sign_in())
            }
            Action::AddAgent => self.add_agent(s, form).await,
            Action::DeleteAgent(agent) => match self.core.delete_agent(&s.session, agent).await {
                Ok(()) => {
                    self.leave_notice(s, &Notice::Done("Agent deleted.".into())).await?;
                    Ok(see_other("/"))
                }
                Err(e) => Err(failure(&e)),
            },
            Action::OnAgent(agent, what) => self.on_agent(s, agent, what, form).await,
            Action::AddKey => self.add_key(s, form).await,
            Action::RevokeKey(id) => self.revoke_key(s, id).await,
        }
    }

    async fn add_agent(&self, s: &Signed, mut form: FormState) -> Answer {
        let request = CreateAgentRequest { name: form.value("name").to_owned() };
        match self.core.create_agent(&s.session, &request).await {
            Ok(created) => {
                let to = format!("/agents/{}", created.agent.id);
                let notice = Notice::Secret {
                    title: format!("Agent {} added: its token", created.agent.name),
                    secret: created.token,
                    hint: "Run pakkt-agent on the host with --server <this server's URL> --token-file <a file holding this token>."
                        .into(),
                };
                self.leave_notice(s, &notice).await?;
                Ok(see_other(&to))
            }
            Err(e) => {
                form.refuse(&e, &["name"]);
                self.agents_page(s, None, &form, status_of(&e)).await
            }
        }
    }

    /// A change to one agent's items: back to the agent's page with a
    /// notice, or the page again with the form's messages.
    async fn on_agent(&self, s: &Signed, agent: AgentId, what: AgentAction, mut form: FormState) -> Answer {
        let (core, session) = (&self.core, &s.session);
        let outcome = match what {
            AgentAction::AddEngineRule => match form::engine_rule(&mut form) {
                Some(request) => core
                    .create_engine_rule(session, agent, &request)
                    .await
                    .map(|r| format!("Engine rule {} added: {}.", r.name, r.status.as_str())),
                None => return self.agent_page(s, agent, Cursors::default(), Some(&form)).await,
            },
            AgentAction::DeleteEngineRule(rule) => core
                .delete_engine_rule(session, agent, rule)
                .await
                .map(|()| "Engine rule deleted (or unloading).".into()),
            AgentAction::AddIpEntry => match form::ip_entry(&mut form) {
                Some(request) => core
                    .create_ip_entry(session, agent, &request)
                    .await
                    .map(|e| format!("Address added: {}.", e.status.as_str())),
                None => return self.agent_page(s, agent, Cursors::default(), Some(&form)).await,
            },
            AgentAction::DeleteIpEntry(entry) => {
                core.delete_ip_entry(session, agent, entry).await.map(|()| "Address removed (or being removed).".into())
            }
            AgentAction::AddFirewallRule => match form::firewall_rule(&mut form) {
                Some(request) => core
                    .create_firewall_rule(session, agent, &request)
                    .await
                    .map(|r| format!("Firewall rule {} added: {}.", r.name, r.status.as_str())),
                None => return self.agent_page(s, agent, Cursors::default(), Some(&form)).await,
            },
            AgentAction::DeleteFirewallRule(rule) => core
                .delete_firewall_rule(session, agent, rule)
                .await
                .map(|()| "Firewall rule deleted (or being removed).".into()),
            AgentAction::ApplyTemplate => {
                let template = form.value("template_id").to_owned();
                core.apply_template(session, agent, &template).await.map(|_| format!("Template {template} applied."))
            }
        };
        match outcome {
            Ok(done) => {
                self.leave_notice(s, &Notice::Done(done)).await?;
                Ok(see_other(&format!("/agents/{agent}")))
            }
            // A missing agent or item is a page not found; a missing
            // template is the form's mistake.
            Err(e) if e.kind() == ErrorKind::NotFound && !matches!(e, Error::NotFound { what: Entity::Template }) => {
                Err(failure(&e))
            }
            Err(e) => {
                form.refuse(&e, what.fields());
                let mut page = self.agent_page(s, agent, Cursors::default(), Some(&form)).await?;
                page.set_status(status_of(&e));
                Ok(page)
            }
        }
    }

    async fn add_key(&self, s: &Signed, mut form: FormState) -> Answer {
        match self.core.create_account_key(&s.session).await {
            Ok((record, key)) => {
                let notice = Notice::Secret {
                    title: format!("Key {} created", record.id),
                    secret: key.expose().to_owned(),
                    hint: "Send it in the X-API-Key header, or sign in to this panel with it.".into(),
                };
                self.leave_notice(s, &notice).await?;
                Ok(see_other("/keys"))
            }
            Err(e) => {
                form.refuse(&e, &[]);
                self.keys_page(s, &form, status_of(&e)).await
            }
        }
    }

    /// Revokes a key, which ends every session signed in with it (on
    /// every server: the store deletes them with the key); revoking the
    /// session's own key signs out.
    async fn revoke_key(&self, s: &Signed, id: ApiKeyId) -> Answer {
        self.core.revoke_account_key(&s.session, id).await.map_err(|e| failure(&e))?;
        if id == s.session.key_id {
            return Ok(to_sign_in());
        }
        self.leave_notice(s, &Notice::Done(format!("Key {id} revoked."))).await?;
        Ok(see_other("/keys"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn post_paths_route_to_actions_and_malformed_ids_to_nothing() {
        let agent = AgentId::generate();
        let rule = EngineRuleId::generate();
        let a = agent.to_string();
        let r = rule.to_string();
        assert_eq!(Action::route(&["agents"]), Some(Action::AddAgent));
        assert_eq!(Action::route(&["agents", &a, "delete"]), Some(Action::DeleteAgent(agent)));
        assert_eq!(
            Action::route(&["agents", &a, "engine-rules", &r, "delete"]),
            Some(Action::OnAgent(agent, AgentAction::DeleteEngineRule(rule)))
        );
        assert_eq!(Action::route(&["agents", &a, "templates"]).map(Action::form_name), Some("template"));
        assert_eq!(Action::route(&["agents", "01J5", "engine-rules"]), None, "a malformed ID");
        assert_eq!(Action::route(&["agents", &a, "nothing"]), None);
        assert_eq!(Action::route(&["keys", "x", "revoke"]), None);
        assert_eq!(Action::route(&["signout"]), Some(Action::SignOut));
    }
}
