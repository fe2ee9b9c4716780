//! A list that is almost always of one: a user's connections, a jti's.

/// One value inline, or several in a `Vec`. Most users hold one socket and
/// most JWTs one connection, and a `Vec` of one is a heap block of its own
/// per connection (32 bytes and the allocator's header, measured as part of
/// issue 13's memory per idle connection); this is the size of a `Vec`.
#[derive(Debug)]
pub(super) enum OneOrMore<T> {
    One(T),
    More(Vec<T>),
}

impl<T> OneOrMore<T> {
    pub(super) fn push(&mut self, value: T) {
        let before = std::mem::replace(self, Self::More(Vec::new()));
        *self = Self::More(match before {
            Self::One(first) => vec![first, value],
            Self::More(mut values) => {
                values.push(value);
                values
            }
        });
    }

    /// Keeps the values `keep` says yes to; false when none is left, and
    /// then the caller drops the list (a `One` cannot be empty).
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) -> bool {
        match self {
            Self::One(value) => keep(value),
            Self::More(values) => {
                values.retain(keep);
                !values.is_empty()
            }
        }
    }

    pub(super) fn iter(&self) -> std::slice::Iter<'_, T> {
        self.into_iter()
    }
}

impl<'a, T> IntoIterator for &'a OneOrMore<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;

    fn into_iter(self) -> Self::IntoIter {
        match self {
            OneOrMore::One(value) => std::slice::from_ref(value).iter(),
            OneOrMore::More(values) => values.iter(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::OneOrMore;

    #[test]
    fn is_no_larger_than_a_vec() {
        assert_eq!(
            size_of::<OneOrMore<(u64, Arc<u8>)>>(),
            size_of::<Vec<(u64, Arc<u8>)>>()
        );
    }

    #[test]
    fn pushes_keep_order_and_retain_says_when_it_is_empty() {
        let mut list = OneOrMore::One(1);
        assert_eq!(list.iter().copied().collect::<Vec<_>>(), [1]);
        list.push(2);
        list.push(3);
        assert_eq!(list.iter().copied().collect::<Vec<_>>(), [1, 2, 3]);
        assert!(list.retain(|&v| v != 2));
        assert_eq!(list.iter().copied().collect::<Vec<_>>(), [1, 3]);
        assert!(!list.retain(|_| false));
        let mut one = OneOrMore::One(1);
        assert!(one.retain(|&v| v == 1));
        assert!(!one.retain(|&v| v != 1));
    }
}
