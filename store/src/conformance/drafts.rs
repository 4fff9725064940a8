//! Conformance case for the console's product editor: a product's draft
//! and plans saved together.

use super::tenancy::{account, app};
use super::{Fixture, open, plan, seed_catalog};
use crate::error::StoreError;
use crate::store::Environment;

/// A product's draft and plans save together, only at the version read,
/// without promotion; a plan left out goes unless applications are on it;
/// validation names the field.
pub async fn product_drafts_save_together_at_the_version_seen<F: Fixture>(fixture: &F) {
    let (store, _) = open(fixture).await;
    seed_catalog(&store).await;
    store.promote("granite", Environment::Staging).await.unwrap();
    let draft = store.product_draft("granite").await.unwrap().expect("a draft");
    assert_eq!(draft.plans.len(), 2, "standard and gated");
    assert!(store.product_draft("nope").await.unwrap().is_none());

    let mut product = draft.product.clone();
    product.description = "Edited".into();
    let mut plans = vec![
        draft
            .plans
            .iter()
            .find(|p| p.system_name == "standard")
            .unwrap()
            .clone(),
    ];
    plans[0].limits[0].value = 20;
    plans.push(plan("granite", "pro", serde_json::json!([])));
    store
        .save_product_draft(product.clone(), plans, &draft.version)
        .await
        .unwrap();
    let saved = store.product_draft("granite").await.unwrap().unwrap();
    assert_eq!(saved.product.description, "Edited");
    let names: Vec<&str> = saved.plans.iter().map(|p| p.system_name.as_str()).collect();
    assert_eq!(names, ["pro", "standard"], "gated was left out, so it went");
    assert_eq!(saved.plans[1].limits[0].value, 20);
    assert_ne!(saved.version, draft.version);
    let staged = store.release("granite", Environment::Staging).await.unwrap().unwrap();
    assert_ne!(staged.config.description, "Edited", "a draft: nothing promoted");

    // The version read before is stale now.
    assert!(matches!(
        store
            .save_product_draft(product.clone(), saved.plans.clone(), &draft.version)
            .await,
        Err(StoreError::PreconditionFailed { .. })
    ));
    // A plan with applications on it stays.
    let acme = account(&store, "Acme").await;
    app(&store, &acme, "bot", "pro").await;
    let only_standard = vec![saved.plans[1].clone()];
    assert!(matches!(
        store
            .save_product_draft(product.clone(), only_standard, &saved.version)
            .await,
        Err(StoreError::Conflict(_))
    ));
    // Another product's plan, or a mistake, is refused by field.
    let mut foreign = saved.plans.clone();
    foreign[0].product = "other".into();
    let Err(StoreError::Invalid(errors)) = store.save_product_draft(product.clone(), foreign, &saved.version).await
    else {
        panic!("refused");
    };
    assert_eq!(errors.0[0].path, "plans[0].product");
    let mut broken = product.clone();
    broken.backend = "missing".into();
    let Err(StoreError::Invalid(errors)) = store
        .save_product_draft(broken, saved.plans.clone(), &saved.version)
        .await
    else {
        panic!("refused");
    };
    assert!(errors.0.iter().any(|e| e.path.ends_with(".backend")), "{errors:?}");
    assert_eq!(
        store.product_draft("granite").await.unwrap().unwrap(),
        saved,
        "unchanged"
    );
}
