//! Paging through collections: ids sort by creation time, so "after this
//! id" is a stable cursor.

use std::future::Future;

use serde::{Deserialize, Serialize};

use super::Store;
use crate::error::StoreResult;

/// A page request: items after `after` (an id from the previous page).
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub after: Option<String>,
    pub limit: usize,
}

impl Page {
    pub fn first(limit: usize) -> Page {
        Page { after: None, limit }
    }
}

/// One page of results; `next` continues after the last item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Paged<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

impl Store {
    pub(super) async fn page_of<T: serde::de::DeserializeOwned>(
        &self,
        collection: &str,
        prefix: &str,
        page: &Page,
    ) -> StoreResult<Paged<T>> {
        let limit = page.limit.clamp(1, 1000);
        let ids = self
            .backend
            .members(collection, page.after.as_deref(), limit, false)
            .await?;
        let next = (ids.len() == limit).then(|| ids.last().cloned()).flatten();
        let keys: Vec<String> = ids.iter().map(|id| format!("{prefix}:{id}")).collect();
        let items = self.get_many_json(&keys).await?.into_iter().flatten().collect();
        Ok(Paged { items, next })
    }
}

/// Every item of a paged listing, following `next` to the end.
pub async fn all_pages<T, F, Fut>(mut list: F) -> StoreResult<Vec<T>>
where
    F: FnMut(Page) -> Fut,
    Fut: Future<Output = StoreResult<Paged<T>>>,
{
    let mut items = Vec::new();
    let mut page = Page::first(1000);
    loop {
        let batch = list(page.clone()).await?;
        items.extend(batch.items);
        match batch.next {
            Some(next) => page.after = Some(next),
            None => return Ok(items),
        }
    }
}
