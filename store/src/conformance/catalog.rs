//! Conformance cases for the catalog: CRUD, validation, promotion, apply.

use super::{Fixture, backend, open, plan, product, seed_catalog};
use crate::document::{AccountSpec, ApplicationSpec, ApplyOptions, CatalogDocument, UserSpec};
use crate::error::StoreError;
use crate::model::{ApplicationState, HttpMethod, MappingRule, Method, UserRole};
use crate::store::{Environment, NewAccount, NewApplication, Precondition, etag};

fn invalid_paths(error: StoreError) -> Vec<String> {
    match error {
        StoreError::Invalid(errors) => errors.0.into_iter().map(|e| e.path).collect(),
        other => panic!("expected a validation error, got {other:?}"),
    }
}

/// Writes naming a version (`If-Match`) or asking for creation
/// (`If-None-Match: *`) succeed only if the catalog still holds what they
/// expect.
pub async fn conditional_catalog_writes<F: Fixture>(fixture: &F) {
    let (store, _) = open(fixture).await;
    let stale = |result: Result<_, StoreError>| {
        assert!(
            matches!(result, Err(StoreError::PreconditionFailed { .. })),
            "{result:?}"
        );
    };
    let vllm = backend("vllm");
    store.put_backend_if(vllm.clone(), Precondition::Absent).await.unwrap();
    stale(store.put_backend_if(vllm.clone(), Precondition::Absent).await);
    let first = etag(&store.get_backend("vllm").await.unwrap().unwrap());
    assert_eq!(first, etag(&vllm), "the tag depends on the content only");

    let mut moved = vllm.clone();
    moved.urls = vec!["http://127.0.0.1:9000".into()];
    store
        .put_backend_if(moved.clone(), Precondition::Matches(&first))
        .await
        .unwrap();
    let second = etag(&moved);
    assert_ne!(first, second);
    stale(store.put_backend_if(vllm.clone(), Precondition::Matches(&first)).await);
    assert_eq!(
        store.get_backend("vllm").await.unwrap(),
        Some(moved),
        "a stale write changes nothing"
    );

    store.put_product(product("granite", "vllm")).await.unwrap();
    let standard = plan("granite", "standard", serde_json::json!([]));
    store.put_plan_if(standard.clone(), Precondition::Absent).await.unwrap();
    stale(
        store
            .delete_plan_if("granite", "standard", Precondition::Matches("0000000000000000"))
            .await,
    );
    store
        .delete_plan_if("granite", "standard", Precondition::Matches(&etag(&standard)))
        .await
        .unwrap();
    let product_tag = etag(&store.get_product("granite").await.unwrap().unwrap());
    stale(store.delete_product_if("granite", Precondition::Absent).await);
    store
        .delete_product_if("granite", Precondition::Matches(&product_tag))
        .await
        .unwrap();
    assert!(matches!(
        store.delete_backend_if("nope", Precondition::Matches(&second)).await,
        Err(StoreError::NotFound { .. })
    ));
    store
        .delete_backend_if("vllm", Precondition::Matches(&second))
        .await
        .unwrap();
    assert!(store.catalog().await.unwrap().backends.is_empty());
}

pub async fn catalog_crud_round_trip<F: Fixture>(fixture: &F) {
    let (store, _) = open(fixture).await;
    assert_eq!(store.catalog().await.unwrap().revision, 0, "a new store is empty");

    let mut vllm = backend("vllm");
    vllm.urls.push("http://127.0.0.1:8001".into());
    vllm.api_key_env = Some("VLLM_API_KEY".into());
    let diff = store.put_backend(vllm.clone()).await.unwrap();
    assert_eq!(diff.created, ["backend vllm"]);
    assert_eq!(diff.revision, 1);
    assert_eq!(store.get_backend("vllm").await.unwrap(), Some(vllm.clone()));

    let mut granite = product("granite", "vllm");
    granite.path_prefix = Some("/granite".into());
    granite.methods.push(Method {
        system_name: "chat".into(),
        friendly_name: "Chat".into(),
        description: String::new(),
    });
    granite.mapping_rules.push(MappingRule {
        http_method: HttpMethod::Post,
        pattern: "/v1/chat/completions$".into(),
        metric: "chat".into(),
        increment: 1,
        last: false,
        unmetered: false,
    });
    granite.openapi = Some(serde_json::json!({"openapi": "3.1.0", "info": {"title": "granite", "version": "1"}}));
    store.put_product(granite.clone()).await.unwrap();
    let standard = plan(
        "granite",
        "standard",
        serde_json::json!([
            {"metric": "chat", "period": "minute", "value": 10},
            {"metric": "total_tokens", "period": "day", "value": 100000}
        ]),
    );
    store.put_plan(standard.clone()).await.unwrap();

    assert_eq!(store.get_product("granite").await.unwrap(), Some(granite.clone()));
    assert_eq!(
        store.get_plan("granite", "standard").await.unwrap(),
        Some(standard.clone())
    );
    let catalog = store.catalog().await.unwrap();
    assert_eq!(catalog.revision, 3);
    assert_eq!(catalog.backends, [vllm.clone()]);
    assert_eq!(catalog.products, [granite.clone()]);
    assert_eq!(catalog.plans, vec![standard.clone()]);

    // Writing the same object again changes nothing, not even the revision.
    let diff = store.put_product(granite.clone()).await.unwrap();
    assert!(diff.is_empty());
    assert_eq!(store.catalog().await.unwrap().revision, 3);

    granite.description = "IBM Granite 7B".into();
    assert_eq!(
        store.put_product(granite.clone()).await.unwrap().updated,
        ["product granite"]
    );
    assert_eq!(
        store.get_product("granite").await.unwrap().unwrap().description,
        "IBM Granite 7B"
    );
    assert_eq!(store.list_plans(Some("granite")).await.unwrap().len(), 1);
    assert_eq!(store.list_plans(Some("other")).await.unwrap().len(), 0);

    store.delete_plan("granite", "standard").await.unwrap();
    assert_eq!(store.get_plan("granite", "standard").await.unwrap(), None);
    store.delete_product("granite").await.unwrap();
    store.delete_backend("vllm").await.unwrap();
    let catalog = store.catalog().await.unwrap();
    assert!(catalog.backends.is_empty() && catalog.products.is_empty() && catalog.plans.is_empty());
    assert!(matches!(
        store.delete_backend("vllm").await,
        Err(StoreError::NotFound { .. })
    ));
}

pub async fn catalog_validation_errors<F: Fixture>(fixture: &F) {
    let (store, _) = open(fixture).await;
    seed_catalog(&store).await;
    let revision = store.catalog().await.unwrap().revision;

    let error = store.put_product(product("llama", "missing")).await.unwrap_err();
    assert_eq!(invalid_paths(error), ["products[llama].backend"]);

    let error = store.delete_backend("vllm").await.unwrap_err();
    assert_eq!(
        invalid_paths(error),
        ["products[granite].backend"],
        "a used backend cannot go"
    );

    let bad_limit = plan(
        "granite",
        "gold",
        serde_json::json!([{"metric": "v1-nope", "period": "day", "value": 0}]),
    );
    let error = store.put_plan(bad_limit).await.unwrap_err();
    assert_eq!(
        invalid_paths(error),
        [
            "plans[granite/gold].limits[0].metric",
            "plans[granite/gold].limits[0].value"
        ]
    );

    // Declaring methods drops the OpenAI defaults a limit may rely on.
    let mut narrowed = product("granite", "vllm");
    narrowed.methods.push(Method {
        system_name: "chat".into(),
        friendly_name: String::new(),
        description: String::new(),
    });
    narrowed.mapping_rules.push(MappingRule {
        http_method: HttpMethod::Post,
        pattern: "/v1/chat".into(),
        metric: "chat".into(),
        increment: 1,
        last: false,
        unmetered: false,
    });
    let mut standard = store.get_plan("granite", "standard").await.unwrap().unwrap();
    standard.limits[0].metric = "v1-chat-completions".into();
    store.put_plan(standard).await.unwrap();
    let error = store.put_product(narrowed).await.unwrap_err();
    assert_eq!(invalid_paths(error), ["plans[granite/standard].limits[0].metric"]);

    let mut bad_backend = backend("Bad Name");
    bad_backend.urls = vec!["not a url".into()];
    assert_eq!(
        invalid_paths(store.put_backend(bad_backend).await.unwrap_err()),
        ["backends[Bad Name].system_name", "backends[Bad Name].urls[0]"]
    );
    assert_eq!(
        store.catalog().await.unwrap().revision,
        revision + 1,
        "only the valid plan change landed"
    );
}

pub async fn deletes_guarded_by_applications<F: Fixture>(fixture: &F) {
    let (store, _) = open(fixture).await;
    seed_catalog(&store).await;
    let account = store
        .create_account(NewAccount {
            name: "Acme".into(),
            description: String::new(),
            sso: None,
        })
        .await
        .unwrap();
    let app = store
        .create_application(NewApplication {
            account_id: account.id.clone(),
            name: "bot".into(),
            description: String::new(),
            product: "granite".into(),
            plan: "standard".into(),
        })
        .await
        .unwrap();
    match store.delete_plan("granite", "standard").await {
        Err(StoreError::Conflict(reason)) => assert!(reason.contains("granite/standard"), "{reason}"),
        other => panic!("deleting a used plan must conflict, got {other:?}"),
    }
    assert!(matches!(
        store.delete_product("granite").await,
        Err(StoreError::Conflict(_))
    ));
    assert!(store.get_plan("granite", "standard").await.unwrap().is_some());
    store.delete_application(&app.id).await.unwrap();
    store.delete_product("granite").await.unwrap();
    assert!(
        store.list_plans(None).await.unwrap().is_empty(),
        "plans go with their product"
    );
}

pub async fn promotion_and_rollback<F: Fixture>(fixture: &F) {
    let (store, _) = open(fixture).await;
    store.put_backend(backend("vllm")).await.unwrap();
    let mut granite = product("granite", "vllm");
    store.put_product(granite.clone()).await.unwrap();
    assert!(
        store
            .catalog_for(Environment::Production)
            .await
            .unwrap()
            .products
            .is_empty(),
        "drafts are not served"
    );
    assert!(matches!(
        store.promote("granite", Environment::Production).await,
        Err(StoreError::Conflict(_))
    ));

    assert_eq!(store.promote("granite", Environment::Staging).await.unwrap(), 1);
    assert_eq!(
        store.promote("granite", Environment::Staging).await.unwrap(),
        1,
        "same draft, same version"
    );
    assert_eq!(store.promote("granite", Environment::Production).await.unwrap(), 1);

    granite.description = "v2".into();
    store.put_product(granite.clone()).await.unwrap();
    assert_eq!(store.promote("granite", Environment::Staging).await.unwrap(), 2);
    let staging = store.catalog_for(Environment::Staging).await.unwrap();
    let production = store.catalog_for(Environment::Production).await.unwrap();
    assert_eq!(staging.products[0].description, "v2");
    assert_eq!(
        production.products[0].description, "",
        "production keeps v1 until promoted"
    );

    assert_eq!(store.promote("granite", Environment::Production).await.unwrap(), 2);
    assert_eq!(
        store
            .release("granite", Environment::Production)
            .await
            .unwrap()
            .unwrap()
            .config
            .description,
        "v2"
    );
    store.rollback("granite", Environment::Production, 1).await.unwrap();
    assert_eq!(
        store
            .release("granite", Environment::Production)
            .await
            .unwrap()
            .unwrap()
            .version,
        1
    );
    assert_eq!(
        store
            .release("granite", Environment::Staging)
            .await
            .unwrap()
            .unwrap()
            .version,
        2
    );
    assert!(matches!(
        store.rollback("granite", Environment::Production, 9).await,
        Err(StoreError::NotFound { .. })
    ));
    let versions: Vec<u64> = store
        .releases("granite")
        .await
        .unwrap()
        .iter()
        .map(|r| r.version)
        .collect();
    assert_eq!(versions, [1, 2]);
}

fn full_document() -> CatalogDocument {
    let mut gated = plan(
        "granite",
        "gated",
        serde_json::json!([{"metric": "total_tokens", "period": "month", "value": 1000000}]),
    );
    gated.approval_required = true;
    gated.price_per_1k_prompt_tokens = crate::model::Money::parse("0.0005").unwrap();
    CatalogDocument {
        backends: vec![backend("vllm"), backend("tgi")],
        products: vec![product("granite", "vllm"), product("mistral", "tgi")],
        plans: vec![
            plan("granite", "standard", serde_json::json!([])),
            gated,
            plan("mistral", "standard", serde_json::json!([])),
        ],
        accounts: vec![AccountSpec {
            name: "Acme".into(),
            description: "the first".into(),
            sso: None,
            budgets: Some(vec![
                serde_json::from_value(serde_json::json!({"amount": 500, "period": "month"})).unwrap(),
            ]),
        }],
        users: vec![UserSpec {
            email: super::tenancy::email("dev"),
            account: "Acme".into(),
            display_name: "Dev".into(),
            role: UserRole::Admin,
        }],
        applications: vec![ApplicationSpec {
            account: "Acme".into(),
            name: "chatbot".into(),
            description: String::new(),
            product: "granite".into(),
            plan: "gated".into(),
            state: Some(ApplicationState::Live),
            budgets: Some(vec![
                serde_json::from_value(
                    serde_json::json!({"amount": 20, "period": "day", "mode": "soft", "alert_at_percent": [90]}),
                )
                .unwrap(),
            ]),
        }],
    }
}

pub async fn apply_export_round_trip<F: Fixture>(fixture: &F) {
    let (store, _) = open(fixture).await;
    let document = full_document();
    let report = store.apply(&document, &ApplyOptions::default()).await.unwrap();
    assert_eq!(report.catalog.created.len(), 7);
    assert_eq!(report.promoted.len(), 4, "two products, staging and production");
    assert_eq!(report.tenants_created.len(), 3);
    let app = store
        .list_applications(&Default::default(), &crate::store::Page::first(10))
        .await
        .unwrap()
        .items;
    assert_eq!(
        app[0].state,
        ApplicationState::Live,
        "the document's state wins over the plan's approval"
    );
    assert_eq!(
        Some(&app[0].budgets),
        document.applications[0].budgets.as_ref(),
        "budgets from the file"
    );
    let account = store.find_account("Acme").await.unwrap().unwrap();
    assert_eq!(Some(&account.budgets), document.accounts[0].budgets.as_ref());
    let mut bad = document.clone();
    bad.applications[0].budgets = Some(vec![
        serde_json::from_value(serde_json::json!({"amount": 0, "period": "week"})).unwrap(),
    ]);
    let error = bad.validate().unwrap_err().to_string();
    assert!(error.contains("applications[0].budgets[0].amount"), "{error}");

    let exported = store.export(true).await.unwrap();
    let again = store.apply(&exported, &ApplyOptions::default()).await.unwrap();
    assert!(
        again.is_empty(),
        "apply → export → apply must change nothing: {again:?}"
    );
    assert_eq!(store.export(true).await.unwrap(), exported);
    assert_eq!(exported.backends.len(), 2);
    assert_eq!(exported.applications[0].plan, "gated");

    let mut smaller = document.clone();
    smaller.backends.retain(|b| b.system_name == "vllm");
    smaller.products.retain(|p| p.system_name == "granite");
    smaller.plans.retain(|p| p.product == "granite");
    let kept = store.apply(&smaller, &ApplyOptions::default()).await.unwrap();
    assert!(kept.is_empty(), "without --prune nothing is deleted");
    let pruned = store
        .apply(
            &smaller,
            &ApplyOptions {
                prune: true,
                ..ApplyOptions::default()
            },
        )
        .await
        .unwrap();
    let mut deleted = pruned.catalog.deleted.clone();
    deleted.sort();
    assert_eq!(deleted, ["backend tgi", "plan mistral/standard", "product mistral"]);
    assert!(store.get_product("mistral").await.unwrap().is_none());

    let mut broken = document;
    broken.plans[0].product = "nope".into();
    let error = store.apply(&broken, &ApplyOptions::default()).await.unwrap_err();
    assert_eq!(invalid_paths(error), ["plans[0].product"]);
}

/// `apply` promotes what it changed and what was never released; a draft
/// an admin promoted to staging only stays there through export → apply.
pub async fn apply_promotes_only_what_it_changed<F: Fixture>(fixture: &F) {
    let (store, _) = open(fixture).await;
    let document = full_document();
    store.apply(&document, &ApplyOptions::default()).await.unwrap();
    let mut staged = store.get_product("granite").await.unwrap().unwrap();
    staged.description = "staging only".into();
    store.put_product(staged).await.unwrap();
    let staging = store.promote("granite", Environment::Staging).await.unwrap();
    let production = store
        .release("granite", Environment::Production)
        .await
        .unwrap()
        .unwrap();
    assert!(staging > production.version);

    let exported = store.export(true).await.unwrap();
    let again = store.apply(&exported, &ApplyOptions::default()).await.unwrap();
    assert!(again.is_empty(), "the round trip changed {again:?}");
    let still = store
        .release("granite", Environment::Production)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        still.version, production.version,
        "the staging draft stayed out of production"
    );
    assert_eq!(still.config.description, production.config.description);

    // Changed by the file: promoted to where it asks.
    let mut edited = exported.clone();
    edited
        .products
        .iter_mut()
        .find(|p| p.system_name == "mistral")
        .unwrap()
        .description = "v2".into();
    let report = store.apply(&edited, &ApplyOptions::default()).await.unwrap();
    assert_eq!(report.catalog.updated, ["product mistral"]);
    assert_eq!(report.promoted.len(), 2, "{:?}", report.promoted);
    assert!(
        report.promoted.iter().all(|p| p.starts_with("mistral")),
        "{:?}",
        report.promoted
    );

    // Written as a draft earlier, never released: the next apply releases it.
    let mut fresh = edited.clone();
    fresh.backends.push(backend("ollama"));
    fresh.products.push(product("phi", "ollama"));
    let drafts = ApplyOptions {
        promote_to: None,
        ..ApplyOptions::default()
    };
    assert!(store.apply(&fresh, &drafts).await.unwrap().promoted.is_empty());
    let report = store.apply(&fresh, &ApplyOptions::default()).await.unwrap();
    assert!(report.catalog.is_empty());
    assert_eq!(report.promoted, ["phi → staging v1", "phi → production v1"]);
}

/// Seeding (`keep_existing`) creates what is missing and leaves everything
/// that exists as it is, edits included; it reports what it kept.
pub async fn seeding_keeps_what_exists<F: Fixture>(fixture: &F) {
    let (store, _) = open(fixture).await;
    let document = full_document();
    let seed = ApplyOptions {
        keep_existing: true,
        ..ApplyOptions::default()
    };
    let first = store.apply(&document, &seed).await.unwrap();
    assert_eq!(first.catalog.created.len(), 7);
    assert_eq!(first.tenants_created.len(), 3);
    assert!(first.kept.is_empty());

    // An operator's edits, through the same calls the admin API makes.
    let mut moved = store.get_backend("vllm").await.unwrap().unwrap();
    moved.urls = vec!["http://10.0.0.9:8000".into()];
    store.put_backend(moved).await.unwrap();
    let mut described = store.get_product("granite").await.unwrap().unwrap();
    described.description = "edited".into();
    store.put_product(described).await.unwrap();
    store.delete_plan("mistral", "standard").await.unwrap();
    let account = store.find_account("Acme").await.unwrap().unwrap();
    store
        .update_account(&account.id, None, Some("edited".into()))
        .await
        .unwrap();
    let user = store
        .find_user_by_email(&document.users[0].email)
        .await
        .unwrap()
        .unwrap();
    let demoted = crate::store::UserUpdate {
        role: Some(UserRole::Member),
        ..Default::default()
    };
    store.update_user(&user.id, demoted).await.unwrap();
    let app = store.find_application(&account.id, "chatbot").await.unwrap().unwrap();
    store
        .act_on_application(&app.id, crate::store::ApplicationAction::Suspend, Precondition::Any)
        .await
        .unwrap();
    let production = store
        .release("granite", Environment::Production)
        .await
        .unwrap()
        .unwrap();

    let again = store.apply(&document, &seed).await.unwrap();
    assert_eq!(
        again.catalog.created,
        ["plan mistral/standard"],
        "only the missing plan"
    );
    assert!(
        again.catalog.updated.is_empty() && again.tenants_updated.is_empty(),
        "{again:?}"
    );
    assert!(again.promoted.is_empty(), "{again:?}");
    let mut kept = again.kept.clone();
    kept.sort();
    assert_eq!(
        kept,
        [
            "account Acme".to_owned(),
            "application Acme/chatbot".into(),
            "backend tgi".into(),
            "backend vllm".into(),
            "plan granite/gated".into(),
            "plan granite/standard".into(),
            "product granite".into(),
            "product mistral".into(),
            format!("user {}", document.users[0].email),
        ]
    );
    assert_eq!(
        store.get_backend("vllm").await.unwrap().unwrap().urls,
        ["http://10.0.0.9:8000"]
    );
    assert_eq!(
        store.get_product("granite").await.unwrap().unwrap().description,
        "edited"
    );
    assert_eq!(
        store
            .release("granite", Environment::Production)
            .await
            .unwrap()
            .unwrap()
            .version,
        production.version
    );
    assert_eq!(store.find_account("Acme").await.unwrap().unwrap().description, "edited");
    let user = store.find_user_by_email(&user.email).await.unwrap().unwrap();
    assert_eq!(user.role, UserRole::Member);
    let app = store.get_application(&app.id).await.unwrap().unwrap();
    assert_eq!(app.state, ApplicationState::Suspended);
}
