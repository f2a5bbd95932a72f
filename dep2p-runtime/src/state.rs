//! Typed state a connection carries for the application: at most one value of each type.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

type Value = Arc<dyn Any + Send + Sync>;

/// At most one value of each type, shared as `Arc`s.
#[derive(Default)]
pub(crate) struct StateMap {
    values: Mutex<HashMap<TypeId, Value>>,
}

impl StateMap {
    fn values(&self) -> MutexGuard<'_, HashMap<TypeId, Value>> {
        // Nothing panics while the lock is held (constructors run outside it).
        self.values.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn get<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        let value = self.values().get(&TypeId::of::<T>()).cloned()?;
        value.downcast::<T>().ok()
    }

    /// Stores `value`, returning the value of its type it replaces.
    pub(crate) fn set<T: Any + Send + Sync>(&self, value: T) -> Option<Arc<T>> {
        let old = self.values().insert(TypeId::of::<T>(), Arc::new(value))?;
        old.downcast::<T>().ok()
    }

    /// The value of type `T`, stored first if there is none. `make` runs outside the lock; if
    /// another value got in meanwhile, that one is kept and returned.
    pub(crate) fn get_or_insert_with<T: Any + Send + Sync>(
        &self,
        make: impl FnOnce() -> T,
    ) -> Arc<T> {
        if let Some(value) = self.get::<T>() {
            return value;
        }
        let made = Arc::new(make());
        let stored = Arc::clone(
            self.values()
                .entry(TypeId::of::<T>())
                .or_insert_with(|| Arc::clone(&made) as Value),
        );
        // The entry of `T`'s type id always holds a `T`.
        stored.downcast::<T>().unwrap_or(made)
    }

    pub(crate) fn remove<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        let old = self.values().remove(&TypeId::of::<T>())?;
        old.downcast::<T>().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_value_per_type() {
        let map = StateMap::default();
        assert!(map.get::<u32>().is_none());
        assert!(map.set(7u32).is_none());
        assert_eq!(*map.get_or_insert_with(|| 9u32), 7);
        assert_eq!(*map.get_or_insert_with(|| "s".to_string()), "s");
        assert_eq!(map.set(8u32).as_deref(), Some(&7));
        assert_eq!(map.remove::<u32>().as_deref(), Some(&8));
        assert!(map.get::<u32>().is_none());
        assert_eq!(
            map.get::<String>().as_deref().map(String::as_str),
            Some("s")
        );
    }
}
