//! List pages (DESIGN §4, "Server limits"): `?limit=1..1000&after=ID`,
//! the next page's `after` in `X-Next-After`. Without either, a list is
//! the reference's whole array, as before.
//!
//! A page follows the list's own order (oldest first; system firewall
//! rules first). `after` names the last item of the previous page; if that
//! item is gone meanwhile, the page starts after the IDs below it (IDs are
//! ULIDs, which sort in creation order), so no item is skipped or repeated.

use std::fmt::Display;

use poem_openapi::ApiResponse;
use poem_openapi::types::Type;
use serde::Serialize;

use crate::payload::Json;

/// Items per page when `after` comes without `limit`.
pub const DEFAULT_LIMIT: u32 = 1000;

/// `200 OK` with a list, or one page of it.
#[derive(ApiResponse, Debug)]
pub enum Paged<T: Type + Serialize + Send + Sync> {
    /// Success: the items, in the list's order.
    #[oai(status = 200)]
    Ok(
        Json<Vec<T>>,
        /// With `limit` or `after`: the `after` of the next page, when there
        /// is one.
        #[oai(header = "X-Next-After")]
        Option<String>,
    ),
}

/// The page of `items` that `limit` and `after` ask for; all of them when
/// neither is given.
pub fn page<T, K>(items: Vec<T>, id: impl Fn(&T) -> K, limit: Option<u32>, after: Option<K>) -> Paged<T>
where
    T: Type + Serialize + Send + Sync,
    K: Ord + Display + Copy,
{
    if limit.is_none() && after.is_none() {
        return Paged::Ok(Json(items), None);
    }
    let limit = usize::try_from(limit.unwrap_or(DEFAULT_LIMIT)).unwrap_or(usize::MAX);
    let (page, next) = slice(items, id, limit, after);
    Paged::Ok(Json(page), next.map(|k| k.to_string()))
}

/// One page of a list: up to `limit` of `items` (in the list's order)
/// after the item `after` (from the first without it), and the next
/// page's `after` (the page's last item) when more items follow. The web
/// panel pages its lists with it too.
pub fn slice<T, K>(items: Vec<T>, id: impl Fn(&T) -> K, limit: usize, after: Option<K>) -> (Vec<T>, Option<K>)
where
    K: Ord + Copy,
{
    let start = match after {
        None => 0,
        Some(after) => match items.iter().position(|t| id(t) == after) {
            Some(at) => at + 1,
            None => items.iter().position(|t| id(t) > after).unwrap_or(items.len()),
        },
    };
    let mut rest = items.into_iter().skip(start);
    let page: Vec<T> = rest.by_ref().take(limit).collect();
    let next = if rest.next().is_some() { page.last().map(&id) } else { None };
    (page, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(paged: Paged<u32>) -> (Vec<u32>, Option<String>) {
        let Paged::Ok(Json(items), next) = paged;
        (items, next)
    }

    #[test]
    fn pages_walk_the_list_once_and_survive_a_deleted_cursor() {
        let list = || vec![1u32, 3, 5, 7, 9];
        assert_eq!(ids(page(list(), |n| *n, None, None)), (list(), None), "no parameters: the whole list");
        assert_eq!(ids(page(list(), |n| *n, Some(2), None)), (vec![1, 3], Some("3".into())));
        assert_eq!(ids(page(list(), |n| *n, Some(2), Some(3))), (vec![5, 7], Some("7".into())));
        assert_eq!(ids(page(list(), |n| *n, Some(2), Some(7))), (vec![9], None), "the last page");
        assert_eq!(ids(page(list(), |n| *n, Some(2), Some(4))), (vec![5, 7], Some("7".into())), "4 was deleted");
        assert_eq!(ids(page(list(), |n| *n, None, Some(5))), (vec![7, 9], None));
        assert_eq!(ids(page(list(), |n| *n, Some(5), None)), (list(), None), "exactly one page");
    }
}
