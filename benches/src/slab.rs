//! `Slab<T>`: a table of reusable slots, each reuse with a new generation, so
//! a `(slot, generation)` pair written into a Call-ID names exactly one
//! entry and stale references (late NOTIFYs) miss instead of aliasing.

/// Slots with generations.
#[derive(Clone, Debug)]
pub struct Slab<T> {
    entries: Vec<(u32, Option<T>)>,
    free: Vec<u32>,
    live: usize,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab {
            entries: Vec::new(),
            free: Vec::new(),
            live: 0,
        }
    }
}

impl<T> Slab<T> {
    /// An empty slab.
    pub fn new() -> Slab<T> {
        Slab::default()
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Store `value`; returns its (slot, generation).
    pub fn insert(&mut self, value: T) -> (u32, u32) {
        self.live += 1;
        match self.free.pop() {
            Some(slot) => {
                let entry = &mut self.entries[slot as usize];
                entry.0 = entry.0.wrapping_add(1);
                entry.1 = Some(value);
                (slot, entry.0)
            }
            None => {
                self.entries.push((1, Some(value)));
                ((self.entries.len() - 1) as u32, 1)
            }
        }
    }

    /// The entry in `slot` if it is still of `generation`.
    pub fn get(&self, slot: u32, generation: u32) -> Option<&T> {
        match self.entries.get(slot as usize)? {
            (g, Some(value)) if *g == generation => Some(value),
            _ => None,
        }
    }

    /// The entry in `slot` if it is still of `generation`, to change.
    pub fn get_mut(&mut self, slot: u32, generation: u32) -> Option<&mut T> {
        match self.entries.get_mut(slot as usize)? {
            (g, Some(value)) if *g == generation => Some(value),
            _ => None,
        }
    }

    /// Take the entry in `slot` out if it is still of `generation`.
    pub fn remove(&mut self, slot: u32, generation: u32) -> Option<T> {
        let entry = self.entries.get_mut(slot as usize)?;
        if entry.0 != generation {
            return None;
        }
        let value = entry.1.take()?;
        self.free.push(slot);
        self.live -= 1;
        Some(value)
    }

    /// Every live entry with its (slot, generation).
    pub fn iter(&self) -> impl Iterator<Item = (u32, u32, &T)> + '_ {
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(slot, (g, v))| v.as_ref().map(|v| (slot as u32, *g, v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_generations_miss() {
        let mut slab = Slab::new();
        let (slot, generation) = slab.insert("a");
        assert_eq!(slab.get(slot, generation), Some(&"a"));
        assert_eq!(slab.remove(slot, generation), Some("a"));
        assert_eq!(slab.remove(slot, generation), None);
        let (again, next) = slab.insert("b");
        assert_eq!(again, slot);
        assert_ne!(next, generation);
        assert_eq!(slab.get(slot, generation), None);
        assert_eq!(slab.get_mut(again, next).copied(), Some("b"));
        assert_eq!(slab.len(), 1);
        assert_eq!(slab.iter().count(), 1);
    }
}
