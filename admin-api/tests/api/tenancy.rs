//! Accounts, applications, keys, users, promotion, analytics and the
//! portal's admin sessions.

use maas_store::AuditQuery;
use reqwest::StatusCode;
use serde_json::json;

use super::harness::{ADMIN, Api, READER};
use super::{backend, etag, seed};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_applications_and_keys() {
    for api in Api::both().await {
        let kind = api.kind();
        seed(&api).await;
        let (status, _, account) = api.admin("POST", "/accounts", Some(json!({"name": "Acme"}))).await;
        assert_eq!(status, StatusCode::CREATED, "{kind}: {account}");
        let account_id = account["id"].as_str().unwrap().to_owned();
        let (status, _, body) = api.admin("POST", "/accounts", Some(json!({"name": "acme"}))).await;
        assert_eq!(status, StatusCode::CONFLICT, "{kind}: names are unique, case aside");
        assert_eq!(body["error"]["fields"][0]["field"], "name");
        let (status, _, renamed) = api
            .admin(
                "PATCH",
                &format!("/accounts/{account_id}"),
                Some(json!({"description": "the customer"})),
            )
            .await;
        assert_eq!(
            (status, &renamed["description"]),
            (StatusCode::OK, &json!("the customer")),
            "{kind}"
        );

        // An application on a plan that needs approval starts pending.
        let new = json!({"account_id": account_id, "name": "bot", "product": "granite", "plan": "gated"});
        let (status, _, app) = api.admin("POST", "/applications", Some(new)).await;
        assert_eq!(status, StatusCode::CREATED, "{kind}: {app}");
        assert_eq!(app["state"], "pending");
        let app_id = app["id"].as_str().unwrap().to_owned();
        let (status, _, body) = api.admin("POST", &format!("/applications/{app_id}/resume"), None).await;
        assert_eq!(
            status,
            StatusCode::CONFLICT,
            "{kind}: a pending application is approved, not resumed: {body}"
        );
        for (action, state) in [("approve", "live"), ("suspend", "suspended"), ("resume", "live")] {
            let (status, _, body) = api
                .admin("POST", &format!("/applications/{app_id}/{action}"), None)
                .await;
            assert_eq!(
                (status, &body["state"]),
                (StatusCode::OK, &json!(state)),
                "{kind}: {action}"
            );
        }
        let (status, _, body) = api
            .admin(
                "PATCH",
                &format!("/applications/{app_id}"),
                Some(json!({"plan": "open"})),
            )
            .await;
        assert_eq!(
            (status, &body["plan"]),
            (StatusCode::OK, &json!("open")),
            "{kind}: {body}"
        );
        let (status, _, body) = api
            .admin(
                "PATCH",
                &format!("/applications/{app_id}"),
                Some(json!({"plan": "nope"})),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{kind}: {body}");
        let (status, _, list) = api
            .admin(
                "GET",
                &format!("/applications?account_id={account_id}&state=live"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(list["data"].as_array().unwrap().len(), 1, "{kind}: {list}");
        let (status, _, _) = api.admin("GET", "/applications?state=asleep", None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{kind}: an unknown state filter");

        // Keys: the secret once, then prefix and last 4 only, never the hash.
        let (status, _, issued) = api
            .admin(
                "POST",
                &format!("/applications/{app_id}/keys"),
                Some(json!({"label": "ci"})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{kind}: {issued}");
        let secret = issued["secret"].as_str().unwrap().to_owned();
        assert!(secret.starts_with("sk-maas-") && secret.ends_with(issued["last4"].as_str().unwrap()));
        let key_id = issued["id"].as_str().unwrap().to_owned();
        let (_, _, keys) = api.admin("GET", &format!("/applications/{app_id}/keys"), None).await;
        let listed = keys.to_string();
        assert!(
            !listed.contains(&secret) && !listed.contains("hash"),
            "{kind}: {listed}"
        );
        assert_eq!(keys["data"][0]["active"], true);
        assert!(
            keys["data"][0].get("last_used_at").is_none(),
            "{kind}: never used: {keys}"
        );
        // 2026-11-26 11:30:42 UTC, as a proxy records it: by the minute.
        api.store
            .record_key_uses(&[(key_id.clone(), 1_795_692_642)])
            .await
            .unwrap();
        let (_, _, keys) = api.admin("GET", &format!("/applications/{app_id}/keys"), None).await;
        assert_eq!(
            keys["data"][0]["last_used_at"], "2026-11-26T11:30:00Z",
            "{kind}: {keys}"
        );
        let (_, _, key) = api.admin("GET", &format!("/keys/{key_id}"), None).await;
        assert_eq!(key["last_used_at"], "2026-11-26T11:30:00Z", "{kind}: {key}");
        let (status, _, _) = api.admin("POST", &format!("/applications/{app_id}/keys"), None).await;
        assert_eq!(status, StatusCode::CREATED, "{kind}: a key needs no body");

        let (status, _, body) = api
            .admin(
                "POST",
                &format!("/keys/{key_id}/rotate"),
                Some(json!({"grace_seconds": -1})),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(body["error"]["fields"][0]["field"], "grace_seconds");
        let (status, _, rotated) = api
            .admin(
                "POST",
                &format!("/keys/{key_id}/rotate"),
                Some(json!({"grace_seconds": 3600})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{kind}: {rotated}");
        assert_ne!(rotated["secret"], json!(secret));
        let (_, _, old) = api.admin("GET", &format!("/keys/{key_id}"), None).await;
        assert!(
            old["expires_at"].is_string() && old["active"] == true,
            "{kind}: valid during the grace: {old}"
        );
        // Budgets: checked, replaced whole, kept by the rotation.
        let (status, _, body) = api
            .admin(
                "PUT",
                &format!("/applications/{app_id}/budgets"),
                Some(json!({"budgets": [{"amount": 25, "period": "month"}, {"amount": "0.5", "period": "day", "mode": "soft"}]})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{kind}: {body}");
        assert_eq!(
            body["budgets"],
            json!([{"amount": 25.0, "period": "month", "mode": "hard", "alert_at_percent": [50, 80, 100]},
                   {"amount": 0.5, "period": "day", "mode": "soft", "alert_at_percent": [50, 80, 100]}]),
            "{kind}"
        );
        let (status, _, body) = api
            .admin(
                "PUT",
                &format!("/applications/{app_id}/budgets"),
                Some(json!({"budgets": [{"amount": 0, "period": "week"}]})),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{kind}: {body}");
        assert_eq!(
            body["error"]["fields"][0]["field"], "budgets[0].amount",
            "{kind}: {body}"
        );
        let (status, _, body) = api
            .admin(
                "PUT",
                &format!("/applications/{app_id}/budgets"),
                Some(json!({"budgets": [{"amount": 1, "period": "year"}]})),
            )
            .await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{kind}: an unknown period: {body}"
        );
        let (status, _, body) = api
            .admin(
                "PUT",
                &format!("/keys/{key_id}/budgets"),
                Some(json!({"budgets": [{"amount": 3, "period": "total"}]})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{kind}: {body}");
        let (_, _, newest) = api.admin("GET", &format!("/applications/{app_id}/keys"), None).await;
        let chained = newest["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["id"] != json!(key_id) && k["spend_lineage"] == json!(key_id))
            .unwrap_or_else(|| panic!("{kind}: the rotated key shares the first's spend: {newest}"));
        assert_eq!(
            chained["budgets"],
            json!([]),
            "{kind}: rotated before the budget was set"
        );
        let (status, _, body) = api
            .admin(
                "PUT",
                &format!("/accounts/{account_id}/budgets"),
                Some(json!({"budgets": [{"amount": 100, "period": "month"}]})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{kind}: {body}");
        assert_eq!(body["budgets"][0]["amount"], 100.0, "{kind}: {body}");
        // Where they stand: 12.5 spent by the application, all of it the organization's.
        let now = time::OffsetDateTime::now_utc();
        api.store
            .record_usage(&[
                maas_store::UsageRecord::new(&app_id, "spend", 12_500_000_000, now),
                maas_store::UsageRecord::new(&account_id, "account-spend", 12_500_000_000, now),
            ])
            .await
            .unwrap();
        let (status, _, body) = api.admin("GET", &format!("/accounts/{account_id}/budgets"), None).await;
        assert_eq!(status, StatusCode::OK, "{kind}: {body}");
        let rows = body["data"].as_array().unwrap();
        assert_eq!(
            rows.len(),
            4,
            "{kind}: the organization's, the application's two, the key's: {body}"
        );
        let organization = rows.iter().find(|r| r["scope"] == "organization").unwrap();
        assert_eq!(
            (
                &organization["spent"],
                &organization["remaining"],
                &organization["percent"]
            ),
            (&json!(12.5), &json!(87.5), &json!(12)),
            "{kind}: {body}"
        );
        let monthly = rows
            .iter()
            .find(|r| r["scope"] == "application" && r["budget"]["period"] == "month")
            .unwrap();
        assert_eq!(
            (&monthly["spent"], &monthly["remaining"]),
            (&json!(12.5), &json!(12.5)),
            "{kind}"
        );
        let csv = api
            .raw("GET", &format!("/accounts/{account_id}/budgets?format=csv"))
            .await;
        assert!(
            csv.starts_with("scope,id,name,period,mode,amount,currency,spent,remaining,percent,resets_at\n")
                && csv.contains(&format!("application,{app_id},bot,month,hard,25,USD,12.5,12.5,50,")),
            "{kind}: {csv}"
        );
        let metrics = api.raw("GET", "/budgets/metrics").await;
        assert!(
            metrics.contains(&format!(
                "maas_budget_spent{{scope=\"application\",id=\"{app_id}\",name=\"bot\",period=\"month\",mode=\"hard\",currency=\"USD\"}} 12.5"
            )),
            "{kind}: {metrics}"
        );
        let (status, _, _) = api.admin("GET", "/accounts/acc_missing/budgets", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{kind}");
        api.store.scan_budget_alerts(false).await.unwrap();
        let (_, _, alerts) = api
            .admin("GET", &format!("/budget-alerts?account_id={account_id}"), None)
            .await;
        let mut raised: Vec<(String, u64)> = alerts["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["budget"]["period"].as_str().unwrap().to_owned(),
                    a["threshold_percent"].as_u64().unwrap(),
                )
            })
            .collect();
        raised.sort();
        let expected = [("day", 50), ("day", 80), ("day", 100), ("month", 50)].map(|(p, t)| (p.to_owned(), t));
        assert_eq!(
            raised, expected,
            "{kind}: the daily 0.5 is spent 25 times over, the monthly 25 half: {alerts}"
        );
        let (status, _, _) = api
            .admin("PUT", "/keys/key_missing/budgets", Some(json!({"budgets": []})))
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{kind}");
        let (status, _, revoked) = api.admin("POST", &format!("/keys/{key_id}/revoke"), None).await;
        assert_eq!((status, &revoked["active"]), (StatusCode::OK, &json!(false)), "{kind}");
        let (status, _, _) = api
            .admin(
                "POST",
                &format!("/keys/{key_id}/rotate"),
                Some(json!({"grace_seconds": 0})),
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{kind}: a revoked key is not rotated");
        let (status, _, _) = api.admin("DELETE", &format!("/keys/{key_id}"), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, _, _) = api.admin("GET", &format!("/keys/{key_id}"), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);

        // Deleting the account takes its applications and keys along.
        let (status, _, _) = api.admin("DELETE", &format!("/accounts/{account_id}"), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{kind}");
        let (status, _, _) = api.admin("GET", &format!("/applications/{app_id}"), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{kind}");
        let (status, _, body) = api.admin("POST", "/applications", Some(json!({"name": "x"}))).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{kind}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promotion_users_and_the_audit_log() {
    for api in Api::both().await {
        let kind = api.kind();
        seed(&api).await;
        let (status, _, body) = api
            .admin(
                "POST",
                "/products/granite/promote",
                Some(json!({"environment": "production"})),
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{kind}: nothing in staging yet: {body}");
        let (status, _, body) = api
            .admin(
                "POST",
                "/products/granite/promote",
                Some(json!({"environment": "staging"})),
            )
            .await;
        assert_eq!(
            (status, &body["version"]),
            (StatusCode::OK, &json!(1)),
            "{kind}: {body}"
        );
        api.admin(
            "POST",
            "/products/granite/promote",
            Some(json!({"environment": "production"})),
        )
        .await;
        api.admin(
            "PUT",
            "/products/granite",
            Some(json!({"backend": "vllm", "models": ["g", "h"]})),
        )
        .await;
        let (_, _, body) = api
            .admin(
                "POST",
                "/products/granite/promote",
                Some(json!({"environment": "staging"})),
            )
            .await;
        assert_eq!(body["version"], 2, "{kind}: a changed draft is a new version");
        let (status, _, releases) = api.admin("GET", "/products/granite/releases", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            (releases["staging"].clone(), releases["production"].clone()),
            (json!(2), json!(1)),
            "{kind}"
        );
        assert_eq!(releases["data"].as_array().unwrap().len(), 2);
        let (status, _, _) = api
            .admin(
                "POST",
                "/products/granite/rollback",
                Some(json!({"environment": "staging", "version": 9})),
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{kind}: no such release");
        let (status, _, body) = api
            .admin(
                "POST",
                "/products/granite/rollback",
                Some(json!({"environment": "staging", "version": 1})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{kind}: {body}");
        let (status, _, body) = api
            .admin("POST", "/products/granite/promote", Some(json!({"environment": "qa"})))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{kind}");
        assert_eq!(body["error"]["fields"][0]["field"], "environment");

        let (_, _, account) = api.admin("POST", "/accounts", Some(json!({"name": "People"}))).await;
        let email = ["ada", "example.com"].join("@");
        let new = json!({"account_id": account["id"], "email": email, "role": "admin"});
        let (status, _, user) = api.admin("POST", "/users", Some(new)).await;
        assert_eq!(status, StatusCode::CREATED, "{kind}: {user}");
        assert!(
            user.get("password_hash").is_none() && user["has_password"] == false,
            "{kind}: {user}"
        );
        assert_eq!(
            user["team_role"], "owner",
            "{kind}: an account's first user owns it: {user}"
        );
        let user_id = user["id"].as_str().unwrap();
        let (status, _, user) = api
            .admin(
                "PATCH",
                &format!("/users/{user_id}"),
                Some(json!({"state": "disabled", "team_role": "member"})),
            )
            .await;
        assert_eq!((status, &user["state"]), (StatusCode::OK, &json!("disabled")), "{kind}");
        assert_eq!(user["team_role"], "member", "{kind}: {user}");
        let (status, _, body) = api
            .admin(
                "POST",
                "/users",
                Some(json!({"account_id": account["id"], "email": "nope"})),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{kind}");
        assert_eq!(body["error"]["fields"][0]["field"], "email");
        let (_, _, users) = api
            .admin(
                "GET",
                &format!("/users?account_id={}", account["id"].as_str().unwrap()),
                None,
            )
            .await;
        assert_eq!(users["data"].as_array().unwrap().len(), 1, "{kind}: {users}");

        // The audit log answers who did what, newest first, in pages.
        let (status, _, page) = api.admin("GET", "/audit?entity=environment&limit=2", None).await;
        assert_eq!(status, StatusCode::OK, "{kind}: {page}");
        let entries = page["data"].as_array().unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0]["action"], "rollback", "{kind}: {page}");
        assert_eq!(entries[0]["actor"]["id"], "bootstrap");
        let next = page["next"].as_str().unwrap();
        let (_, _, older) = api
            .admin("GET", &format!("/audit?entity=environment&limit=2&before={next}"), None)
            .await;
        assert!(!older["data"].as_array().unwrap().is_empty(), "{kind}: {older}");
        // By time: the store's clock is real here.
        let (_, _, recent) = api
            .admin("GET", "/audit?entity=environment&since=2000-01-01T00:00:00Z", None)
            .await;
        assert!(!recent["data"].as_array().unwrap().is_empty(), "{kind}: {recent}");
        let (_, _, future) = api.admin("GET", "/audit?since=2999-01-01T00:00:00Z", None).await;
        assert_eq!(future["data"], json!([]), "{kind}: {future}");
        let (_, _, past) = api.admin("GET", "/audit?until=2000-01-01T00:00:00Z", None).await;
        assert_eq!(past["data"], json!([]), "{kind}: {past}");
        let (status, _, body) = api.admin("GET", "/audit?since=yesterday", None).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{kind}: {body}");
        assert_eq!(body["error"]["fields"][0]["field"], "since", "{kind}: {body}");
        let (_, _, users_audit) = api.admin("GET", "/audit?entity=user", None).await;
        assert!(!users_audit.to_string().contains("password"), "{kind}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analytics_check_their_parameters() {
    for api in Api::both().await {
        let kind = api.kind();
        seed(&api).await;
        let (status, _, body) = api
            .admin("GET", "/analytics/usage?scope=application&id=nope", None)
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{kind}: {body}");
        let (status, _, _) = api.admin("GET", "/analytics/usage?scope=galaxy&id=x", None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{kind}");
        let (status, _, body) = api
            .admin("GET", "/analytics/usage?scope=product&id=granite&from=yesterday", None)
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{kind}");
        assert_eq!(body["error"]["fields"][0]["field"], "from");
        let (status, _, body) = api
            .admin(
                "GET",
                "/analytics/usage?scope=product&id=granite&from=2026-11-26T10:00:00Z&to=2026-11-26T09:00:00Z",
                None,
            )
            .await;
        assert_eq!(
            (status, &body["error"]["fields"][0]["field"]),
            (StatusCode::UNPROCESSABLE_ENTITY, &json!("from"))
        );
        let (status, _, body) = api
            .admin(
                "GET",
                "/analytics/usage?scope=product&id=granite&granularity=hour&from=2026-11-26T00:00:00Z&to=2026-11-27T00:00:00Z",
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{kind}: {body}");
        assert_eq!(
            body["points"].as_array().unwrap().len(),
            24,
            "{kind}: a product without applications reads zero"
        );
        assert_eq!(body["total"], 0);
        let (status, _, _) = api
            .admin("GET", "/analytics/usage?scope=product&id=granite&format=xml", None)
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{kind}");
        let (status, _, body) = api.admin("GET", "/analytics/top?limit=0", None).await;
        assert_eq!(
            (status, &body["error"]["fields"][0]["field"]),
            (StatusCode::UNPROCESSABLE_ENTITY, &json!("limit"))
        );
        let (status, _, _) = api.admin("GET", "/analytics/cost?application_id=nope", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{kind}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portal_sessions_of_admins_may_use_the_api() {
    use maas_store::model::{UserRole, UserState};
    use maas_store::{NewAccount, NewUser, SessionRecord};

    for api in Api::both().await {
        let kind = api.kind();
        let account = api
            .store
            .create_account(NewAccount {
                name: "Ops".into(),
                description: String::new(),
                sso: None,
            })
            .await
            .unwrap();
        let mut sessions = Vec::new();
        for (n, (role, state)) in [
            (UserRole::Member, UserState::Active),
            (UserRole::Admin, UserState::Active),
            (UserRole::Admin, UserState::Disabled),
        ]
        .into_iter()
        .enumerate()
        {
            let user = api
                .store
                .create_user(NewUser {
                    account_id: account.id.clone(),
                    email: [format!("user{n}"), "example.com".to_owned()].join("@"),
                    display_name: String::new(),
                    role,
                    state,
                    sso: None,
                    password_hash: None,
                    email_verified: true,
                })
                .await
                .unwrap();
            let id = format!(
                "session-{n}-{}",
                maas_store::ids::hex(&maas_store::ids::random_bytes::<8>())
            );
            let mut record = SessionRecord::signed_in(&user, serde_json::Map::new());
            record.data.insert("csrf".into(), json!(format!("csrf-{n}")));
            api.store
                .put_session(&id, &record, time::Duration::minutes(5))
                .await
                .unwrap();
            sessions.push((id, user.id));
        }
        let cookie = |n: usize| format!("theme=dark; maas_session={}", sessions[n].0);
        let (member, admin, disabled) = (cookie(0), cookie(1), cookie(2));

        let (status, _, body) = api.send("GET", "/products", None, &[("cookie", &member)], None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{kind}: a member's session: {body}");
        let (status, _, _) = api.send("GET", "/products", None, &[("cookie", &disabled)], None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{kind}: a disabled admin's session");
        let (status, _, _) = api
            .send("GET", "/products", None, &[("cookie", "maas_session=forged")], None)
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{kind}: an unknown session");
        let (status, _, _) = api.send("GET", "/products", None, &[("cookie", &admin)], None).await;
        assert_eq!(status, StatusCode::OK, "{kind}: an admin's session reads");

        // Writes need the session's CSRF token too.
        for csrf in [None, Some("csrf-0"), Some("")] {
            let mut headers = vec![("cookie", admin.as_str())];
            if let Some(csrf) = csrf {
                headers.push(("x-csrf-token", csrf));
            }
            let (status, _, body) = api.send("PUT", "/backends/vllm", None, &headers, Some(backend())).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{kind}: CSRF {csrf:?}: {body}");
        }
        assert!(api.store.get_backend("vllm").await.unwrap().is_none(), "{kind}");
        let (status, _, body) = api
            .send(
                "PUT",
                "/backends/vllm",
                None,
                &[("cookie", &admin), ("x-csrf-token", "csrf-1")],
                Some(backend()),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{kind}: {body}");
        // A bearer token wins over a cookie, so a token's scope is never widened.
        let (status, _, _) = api
            .send(
                "DELETE",
                "/backends/vllm",
                Some(READER),
                &[("cookie", &admin), ("x-csrf-token", "csrf-1")],
                None,
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{kind}");
        let audit = api
            .store
            .audit_log(&AuditQuery {
                entity: Some("backend".into()),
                limit: 10,
                ..AuditQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(audit[0].actor.kind, "user", "{kind}");
        assert_eq!(
            audit[0].actor.id, sessions[1].1,
            "{kind}: the audit log names the admin"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_edits_are_conditional_on_their_etag() {
    for api in Api::both().await {
        let kind = api.kind();
        seed(&api).await;
        let (status, _, account) = api.admin("POST", "/accounts", Some(json!({"name": "Etag Corp"}))).await;
        assert_eq!(status, StatusCode::CREATED, "{kind}");
        let account_path = format!("/accounts/{}", account["id"].as_str().unwrap());
        let (_, headers, _) = api.admin("GET", &account_path, None).await;
        let first = etag(&headers);
        // Someone else renames it in between.
        let (status, headers, _) = api
            .admin("PATCH", &account_path, Some(json!({"description": "theirs"})))
            .await;
        assert_eq!(status, StatusCode::OK, "{kind}");
        let second = etag(&headers);
        assert_ne!(first, second, "{kind}: a change is a new version");
        let (status, _, body) = api
            .send(
                "PATCH",
                &account_path,
                Some(ADMIN),
                &[("if-match", &first)],
                Some(json!({"description": "mine"})),
            )
            .await;
        assert_eq!(
            (status, &body["error"]["code"]),
            (StatusCode::CONFLICT, &json!("stale_version")),
            "{kind}"
        );
        let (_, _, now) = api.admin("GET", &account_path, None).await;
        assert_eq!(now["description"], "theirs", "{kind}: a stale write changes nothing");
        let (status, _, body) = api
            .send(
                "PATCH",
                &account_path,
                Some(ADMIN),
                &[("if-match", &second)],
                Some(json!({"description": "mine"})),
            )
            .await;
        assert_eq!(
            (status, &body["description"]),
            (StatusCode::OK, &json!("mine")),
            "{kind}"
        );

        // Applications: state changes too.
        let (_, _, app) = api
            .admin(
                "POST",
                "/applications",
                Some(json!({"account_id": account["id"], "name": "e", "product": "granite", "plan": "open"})),
            )
            .await;
        let app_path = format!("/applications/{}", app["id"].as_str().unwrap());
        let (_, headers, _) = api.admin("GET", &app_path, None).await;
        let app_tag = etag(&headers);
        api.admin("PATCH", &app_path, Some(json!({"name": "renamed"}))).await;
        let (status, _, _) = api
            .send(
                "POST",
                &format!("{app_path}/suspend"),
                Some(ADMIN),
                &[("if-match", &app_tag)],
                None,
            )
            .await;
        assert_eq!(
            status,
            StatusCode::CONFLICT,
            "{kind}: suspending a version that is gone"
        );
        let (_, headers, _) = api.admin("GET", &app_path, None).await;
        let (status, _, body) = api
            .send(
                "POST",
                &format!("{app_path}/suspend"),
                Some(ADMIN),
                &[("if-match", &etag(&headers))],
                None,
            )
            .await;
        assert_eq!(
            (status, &body["state"]),
            (StatusCode::OK, &json!("suspended")),
            "{kind}"
        );

        // Users: the tag versions the stored user, the answer hides its secrets.
        let (_, _, user) = api
            .admin(
                "POST",
                "/users",
                Some(json!({"account_id": account["id"], "email": (["e", "example.com"].join("@"))})),
            )
            .await;
        let user_path = format!("/users/{}", user["id"].as_str().unwrap());
        let (_, headers, _) = api.admin("GET", &user_path, None).await;
        let user_tag = etag(&headers);
        let (status, headers, _) = api
            .send(
                "PATCH",
                &user_path,
                Some(ADMIN),
                &[("if-match", &user_tag)],
                Some(json!({"role": "admin"})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{kind}");
        let (status, _, _) = api
            .send(
                "PATCH",
                &user_path,
                Some(ADMIN),
                &[("if-match", &user_tag)],
                Some(json!({"role": "member"})),
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{kind}");
        let (_, latest, _) = api.admin("GET", &user_path, None).await;
        assert_eq!(
            etag(&latest),
            etag(&headers),
            "{kind}: the PATCH answer's tag is the stored one"
        );
    }
}

/// A plan that prices a model apart: its tokens (counted by model) at its
/// own prices, the rest at the plan's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cost_prices_each_model_apart() {
    for api in Api::both().await {
        let kind = api.kind();
        seed(&api).await;
        let (status, _, body) = api
            .admin(
                "PUT",
                "/products/granite/plans/priced",
                Some(
                    json!({"price_per_1k_prompt_tokens": 1, "price_per_1k_completion_tokens": 2,
                    "model_prices": {"g": {"price_per_1k_prompt_tokens": 10, "price_per_1k_completion_tokens": 20}}}),
                ),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{kind}: {body}");
        let (_, _, account) = api.admin("POST", "/accounts", Some(json!({"name": "Priced"}))).await;
        let (status, _, app) = api
            .admin(
                "POST",
                "/applications",
                Some(json!({"account_id": account["id"], "name": "bot", "product": "granite", "plan": "priced"})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{kind}: {app}");
        let app_id = app["id"].as_str().unwrap();
        let now = time::OffsetDateTime::now_utc();
        let model = maas_store::Breakdown::Model("g");
        api.store
            .record_usage(&[
                maas_store::UsageRecord::new(app_id, "prompt_tokens", 3_000, now),
                maas_store::UsageRecord::new(app_id, "completion_tokens", 1_000, now),
                maas_store::UsageRecord::new(app_id, &model.metric("prompt_tokens"), 1_000, now),
                maas_store::UsageRecord::new(app_id, &model.metric("completion_tokens"), 500, now),
            ])
            .await
            .unwrap();
        let (status, _, cost) = api
            .admin("GET", &format!("/analytics/cost?application_id={app_id}"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{kind}: {cost}");
        // g: 1,000 × 10/1k + 500 × 20/1k = 20; the rest: 2,000 × 1/1k + 500 × 2/1k = 3.
        assert_eq!(
            (&cost["prompt_cost"], &cost["completion_cost"], &cost["cost"]),
            (&json!("12"), &json!("11"), &json!("23")),
            "{kind}: {cost}"
        );
        let (status, _, body) = api
            .admin(
                "PUT",
                "/products/granite/plans/mispriced",
                Some(json!({"model_prices": {"nope": {"price_per_1k_prompt_tokens": 1}}})),
            )
            .await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{kind}: a model the product lacks: {body}"
        );
    }
}
