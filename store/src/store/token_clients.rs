//! The application a client of the identity provider calls as, when it
//! brings an access token instead of an API key: one per (organization,
//! product, client id), made live on the client's first call. Its plan is
//! whatever the token's groups give (decided by the proxy on every token);
//! the stored plan follows, so the portal and statistics show the plan
//! the client last called on.

use super::{Store, encode, now_ms};
use crate::backend::{Condition, WriteBatch};
use crate::error::{StoreError, StoreResult};
use crate::ids::new_id;
use crate::model::{Account, Application, ApplicationState, token_application_name};

/// Tries before a first call racing others (or a taken name) gives up.
const ATTEMPTS: usize = 5;

/// The index from (account, product, client id) to the application.
/// Account ids and product names hold no `:`, so the client id (last)
/// may hold anything.
pub(super) fn token_client_key(account_id: &str, product: &str, client_id: &str) -> String {
    format!("app-client:{account_id}:{product}:{client_id}")
}

/// The collection of people who called as a token application.
pub(super) fn token_users_key(application_id: &str) -> String {
    format!("app-users:{application_id}")
}

impl Store {
    /// The application of token client `client_id` of `account` on
    /// `product`, on `plan`: made live on its first call (the admin's
    /// `token_plans` rule is the approval), moved to `plan` when the
    /// token's groups now give another. An application an admin
    /// suspended stays suspended: the caller refuses it.
    pub async fn application_for_token_client(
        &self,
        account: &Account,
        product: &str,
        client_id: &str,
        plan: &str,
    ) -> StoreResult<Application> {
        let index = token_client_key(&account.id, product, client_id);
        for attempt in 0..ATTEMPTS {
            let known: Option<String> = self.get_json(&index).await?;
            if let Some(id) = &known
                && let Some(app) = self.get_application(id).await?
            {
                if app.plan == plan {
                    return Ok(app);
                }
                let mut after = app.clone();
                after.plan = plan.to_owned();
                after.requested_plan = None;
                match self.replace_application(&app, after, "token_plan").await {
                    Ok(moved) => return Ok(moved),
                    Err(StoreError::Conflict(_)) => continue,
                    Err(error) => return Err(error),
                }
            }
            let name = match attempt {
                0 => token_application_name(client_id, product),
                n => format!("{} {}", token_application_name(client_id, product), n + 1),
            };
            match self
                .create_token_application(account, product, client_id, plan, &name, known.as_deref())
                .await
            {
                Ok(app) => return Ok(app),
                // Another first call won, or the name is someone's application.
                Err(StoreError::AlreadyExists { .. }) => continue,
                Err(error) => return Err(error),
            }
        }
        Err(StoreError::Conflict(format!(
            "the application of client `{client_id}` changed meanwhile; try again"
        )))
    }

    /// Notes that person `user` (a token's `sub`) called as token
    /// application `application_id`, so statistics can break its traffic
    /// down by person ([`crate::Breakdown::User`]). Idempotent.
    pub async fn note_token_user(&self, application_id: &str, user: &str) -> StoreResult<()> {
        let mut batch = WriteBatch::default();
        batch
            .require(Condition::Exists(format!("app:{application_id}")))
            .add_member(token_users_key(application_id), user.to_owned());
        // A deleted application has no one to note: nothing to write.
        let _ = self.commit(batch, Vec::new()).await?;
        Ok(())
    }

    /// The people noted calling as a token application, in lexical order,
    /// at most `limit` (the breakdown shows that many).
    pub async fn token_users(&self, application_id: &str, limit: usize) -> StoreResult<Vec<String>> {
        self.backend
            .members(&token_users_key(application_id), None, limit.clamp(1, 1000), false)
            .await
    }

    /// Writes a new token application, on the condition that the index
    /// still says what was read (`stale`: an application since deleted).
    async fn create_token_application(
        &self,
        account: &Account,
        product: &str,
        client_id: &str,
        plan: &str,
        name: &str,
        stale: Option<&str>,
    ) -> StoreResult<Application> {
        let now = self.now();
        let app = Application {
            id: new_id("app", now_ms(now)),
            account_id: account.id.clone(),
            name: name.to_owned(),
            description: format!("Calls with access tokens of client `{client_id}`."),
            product: product.to_owned(),
            plan: plan.to_owned(),
            state: ApplicationState::Live,
            requested_plan: None,
            budgets: Vec::new(),
            token_client: Some(client_id.to_owned()),
            created_at: now,
            updated_at: now,
        };
        let index = token_client_key(&account.id, product, client_id);
        let mut own = WriteBatch::default();
        own.require(match stale {
            None => Condition::Absent(index.clone()),
            Some(id) => Condition::Equals(index.clone(), encode(&id)?),
        })
        .put(index, encode(&app.id)?);
        self.insert_application(app, own).await
    }
}
