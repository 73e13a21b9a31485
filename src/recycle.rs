//! Header maps kept for reuse by the own HTTP/1.1 paths ([`crate::conn`]'s
//! server side and [`crate::upstream`]'s exchange).
//!
//! Why: a request on those paths built two `HeaderMap`s, its own and its
//! response's, and dropped both. A map's entries for a dozen fields are over
//! 1 KiB, past the size glibc's per-thread cache serves, so each map was two
//! trips through the allocator's slow path and two back (callgrind, 2 KB hop:
//! about 1.3 k of its 34.7 k instructions). A map whose fields have been
//! written out is cleared, which keeps its memory, and taken again by the next
//! head parsed on the same thread.
//!
//! Bounded: at most [`KEPT`] maps a thread, none with room for more than
//! [`MAX_ROOM`] fields (a map grown by an odd head is dropped, not kept).

use http::HeaderMap;
use std::cell::RefCell;

/// Maps kept per thread: more than the heads one thread has between parsing
/// and writing out at a time in practice; the rest are dropped.
const KEPT: usize = 32;
/// Maps with room for more fields than this are not kept.
const MAX_ROOM: usize = 64;

thread_local! {
    static MAPS: RefCell<Vec<HeaderMap>> = const { RefCell::new(Vec::new()) };
}

/// An empty map with room for at least `fields` fields: a kept one if this
/// thread has one, else a new one.
pub fn header_map(fields: usize) -> HeaderMap {
    let kept = MAPS.with(|m| m.borrow_mut().pop());
    match kept {
        Some(mut map) => {
            map.reserve(fields);
            map
        }
        None => HeaderMap::with_capacity(fields),
    }
}

/// Give back a map whose fields are no longer needed: it is cleared and kept
/// for the next [`header_map`] on this thread, or dropped if enough are kept.
pub fn give_back(mut map: HeaderMap) {
    if map.capacity() > MAX_ROOM {
        return;
    }
    map.clear();
    MAPS.with(|m| {
        let mut m = m.borrow_mut();
        if m.len() < KEPT {
            m.push(map);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use http::header::{ACCEPT, HOST};

    #[test]
    fn a_map_given_back_comes_back_empty_with_its_room() {
        let mut map = header_map(12);
        map.insert(HOST, HeaderValue::from_static("example.com"));
        map.append(ACCEPT, HeaderValue::from_static("text/html"));
        map.append(ACCEPT, HeaderValue::from_static("*/*"));
        let room = map.capacity();
        give_back(map);
        let again = header_map(4);
        assert!(again.is_empty());
        assert_eq!(again.get(ACCEPT), None);
        assert_eq!(again.capacity(), room, "the kept map, not a new one");
    }

    #[test]
    fn a_kept_map_grows_to_the_room_asked_for() {
        give_back(HeaderMap::with_capacity(2));
        let map = header_map(40);
        assert!(map.capacity() >= 40);
    }

    #[test]
    fn maps_too_large_or_too_many_are_not_kept() {
        MAPS.with(|m| m.borrow_mut().clear());
        give_back(HeaderMap::with_capacity(MAX_ROOM * 2));
        assert_eq!(MAPS.with(|m| m.borrow().len()), 0);
        for _ in 0..KEPT + 5 {
            give_back(HeaderMap::with_capacity(4));
        }
        assert_eq!(MAPS.with(|m| m.borrow().len()), KEPT);
    }
}
