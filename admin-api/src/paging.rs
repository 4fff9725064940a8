//! Lists: `?limit=` and `?after=`, answered as `{"data": [...], "next": …}`.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::ApiError;

pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 500;

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Items per page, 1 to 500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<usize>,
    /// The id of the last item of the previous page.
    pub after: Option<String>,
}

impl ListQuery {
    pub fn limit(&self) -> Result<usize, ApiError> {
        limit_or(self.limit, DEFAULT_LIMIT)
    }
}

/// A `?limit=` parameter: `default` when absent, else 1 to [`MAX_LIMIT`].
pub fn limit_or(limit: Option<usize>, default: usize) -> Result<usize, ApiError> {
    match limit {
        None => Ok(default),
        Some(limit) if (1..=MAX_LIMIT).contains(&limit) => Ok(limit),
        Some(_) => Err(ApiError::invalid_field(
            "limit",
            format!("must be between 1 and {MAX_LIMIT}"),
        )),
    }
}

/// One page of a list.
#[derive(Debug, Serialize, ToSchema)]
pub struct ListPage<T> {
    pub data: Vec<T>,
    /// Pass as `after` for the next page; `null` on the last page.
    pub next: Option<String>,
}

/// One page of `items` (sorted by `id`) after `query.after`.
pub fn page<T>(mut items: Vec<T>, id: impl Fn(&T) -> String, query: &ListQuery) -> Result<ListPage<T>, ApiError> {
    let limit = query.limit()?;
    items.sort_by_key(|item| id(item));
    if let Some(after) = &query.after {
        items.retain(|item| id(item).as_str() > after.as_str());
    }
    let more = items.len() > limit;
    items.truncate(limit);
    let next = if more { items.last().map(&id) } else { None };
    Ok(ListPage { data: items, next })
}
