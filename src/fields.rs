//! The fields of a head parsed by the own HTTP/1.1 paths ([`crate::conn`]'s
//! server side and [`crate::upstream`]'s exchange), and the header maps they
//! go into.
//!
//! [`Fields`]: while httparse's borrow of the read buffer lasts, each field is
//! noted as its name and where its value lies; once the head is split off and
//! frozen, the values become slices of it (no copy). On the stack for up to
//! [`INLINE`] fields (a `Vec` was a malloc and a free a head).
//!
//! The maps are reused. A request on those paths built two `HeaderMap`s, its
//! own and its response's, and dropped both. A map's entries for a dozen
//! fields are over 1 KiB, past the size glibc's per-thread cache serves, so
//! each map was two trips through the allocator's slow path and two back
//! (callgrind, 2 KB hop: about 1.3 k of its 34.7 k instructions). A map whose
//! fields have been written out is cleared, which keeps its memory, and taken
//! again by the next head parsed on the same thread. Bounded: at most
//! [`KEPT`] maps a thread, none with room for more than [`MAX_ROOM`] fields
//! (a map grown by an odd head is dropped, not kept).

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use smallvec::SmallVec;
use std::cell::RefCell;

/// Fields noted on the stack; more spill to the heap. A browser's request
/// has about a dozen, an origin's response about ten.
const INLINE: usize = 16;

/// A parsed head's fields, by name and the position of each value in the
/// head's bytes.
pub struct Fields {
    base: usize,
    list: SmallVec<[(HeaderName, usize, usize); INLINE]>,
}

impl Fields {
    /// Fields of the head at the start of `buf`.
    #[inline]
    pub fn new(buf: &[u8]) -> Fields {
        Fields {
            base: buf.as_ptr() as usize,
            list: SmallVec::new(),
        }
    }

    /// Note a field; `value` is a slice of the buffer given to [`Fields::new`].
    #[inline]
    pub fn push(&mut self, name: HeaderName, value: &[u8]) {
        let at = value.as_ptr() as usize - self.base;
        self.list.push((name, at, at + value.len()));
    }

    /// The fields as a header map with room for `extra` more, each value a
    /// slice of `head` (the same bytes, split off and frozen); `None` if a
    /// value is not a valid field value. Drained in place: moving the list
    /// into an iterator would copy its inline array.
    #[inline]
    pub fn drain_into_map(&mut self, head: &Bytes, extra: usize) -> Option<HeaderMap> {
        let mut map = header_map(self.list.len() + extra);
        for (name, from, to) in self.list.drain(..) {
            map.append(
                name,
                HeaderValue::from_maybe_shared(head.slice(from..to)).ok()?,
            );
        }
        Some(map)
    }
}

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
fn header_map(fields: usize) -> HeaderMap {
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
    fn fields_become_slices_of_the_frozen_head() {
        let raw = b"Host: example.com\r\nAccept: a\r\nAccept: b\r\n\r\n".to_vec();
        let mut fields = Fields::new(&raw);
        fields.push(HOST, &raw[6..17]);
        fields.push(ACCEPT, &raw[27..28]);
        fields.push(ACCEPT, &raw[38..39]);
        let head = Bytes::from(raw);
        let map = fields.drain_into_map(&head, 6).unwrap();
        assert_eq!(map.get(HOST).unwrap(), "example.com");
        let accept: Vec<_> = map.get_all(ACCEPT).iter().collect();
        assert_eq!(accept, ["a", "b"]);
        assert!(map.capacity() >= 3 + 6);
    }

    #[test]
    fn a_value_that_is_not_a_field_value_is_refused() {
        let raw = b"X: ok\r\nY: bad\x7f\r\n".to_vec();
        let mut fields = Fields::new(&raw);
        fields.push(HOST, &raw[3..5]);
        fields.push(ACCEPT, &raw[10..14]);
        assert!(fields.drain_into_map(&Bytes::from(raw), 0).is_none());
    }

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
