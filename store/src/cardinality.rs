//! (being moved here; see issue 19)
