//! Two parallel vectors in one allocation: the per-peer records of a swarm that announces read
//! (`E`) and the peer ids (20 bytes each) that only some replies read.
//!
//! One allocation and a 16-byte header instead of two `Vec`s (48 bytes and two heap chunks):
//! most swarms hold a handful of peers, so per-swarm overhead is a large part of the store.
//! Memory layout: `cap` values of `E`, then `cap` ids.

use std::alloc::{self, Layout};
use std::marker::PhantomData;
use std::ptr::{self, NonNull};

pub type Id = [u8; 20];

pub struct Columns<E> {
    /// Dangling (aligned for `E`) while `cap` is 0.
    ptr: NonNull<u8>,
    len: u32,
    cap: u32,
    _owns: PhantomData<E>,
}

// SAFETY: a Columns owns its allocation and holds only `Copy` values of `E` and byte arrays; it
// is as thread-safe as `Vec<E>`.
unsafe impl<E: Send> Send for Columns<E> {}
// SAFETY: as above; `&Columns` only reads.
unsafe impl<E: Sync> Sync for Columns<E> {}

impl<E> Default for Columns<E> {
    fn default() -> Self {
        Columns { ptr: NonNull::<E>::dangling().cast(), len: 0, cap: 0, _owns: PhantomData }
    }
}

impl<E> Columns<E> {
    const NON_ZST: () = assert!(std::mem::size_of::<E>() > 0, "Columns holds values with a size");

    fn layout(cap: usize) -> Layout {
        let () = Self::NON_ZST;
        let bytes = cap
            .checked_mul(std::mem::size_of::<E>() + std::mem::size_of::<Id>())
            .expect("peer list capacity overflows usize");
        Layout::from_size_align(bytes, std::mem::align_of::<E>()).expect("peer list layout")
    }

    /// Where the ids start in an allocation of `cap` values.
    fn ids_at(cap: usize) -> usize {
        cap * std::mem::size_of::<E>()
    }

    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn capacity(&self) -> usize {
        self.cap as usize
    }

    /// Frees the allocation (the fields are left for the caller to reset).
    fn free(&mut self) {
        if self.cap > 0 {
            // SAFETY: allocated by `set_capacity` with this very layout.
            unsafe { alloc::dealloc(self.ptr.as_ptr(), Self::layout(self.capacity())) };
        }
    }
}

/// Values are moved by copying bytes and never dropped: `E` must be `Copy`.
impl<E: Copy> Columns<E> {
    pub fn entries(&self) -> &[E] {
        // SAFETY: `ptr` is aligned for `E` and the first `len` values are initialized (or `len`
        // is 0 and `ptr` is dangling but aligned, which a zero-length slice allows).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().cast::<E>(), self.len()) }
    }

    #[cfg(test)]
    pub fn entries_mut(&mut self) -> &mut [E] {
        self.both_mut().0
    }

    pub fn ids(&self) -> &[Id] {
        // SAFETY: the ids start `ids_at(cap)` bytes in (within the allocation, or 0 for a
        // dangling pointer with `len` 0); the first `len` are initialized; `Id` has alignment 1.
        unsafe {
            std::slice::from_raw_parts(self.ptr.as_ptr().add(Self::ids_at(self.capacity())).cast::<Id>(), self.len())
        }
    }

    /// Both columns, mutably.
    pub fn both_mut(&mut self) -> (&mut [E], &mut [Id]) {
        let (len, ids_at) = (self.len(), Self::ids_at(self.capacity()));
        let base = self.ptr.as_ptr();
        // SAFETY: the two ranges are disjoint parts of the allocation (values end where ids
        // start), each initialized for `len` items; `&mut self` makes both borrows unique.
        unsafe {
            (
                std::slice::from_raw_parts_mut(base.cast::<E>(), len),
                std::slice::from_raw_parts_mut(base.add(ids_at).cast::<Id>(), len),
            )
        }
    }

    /// Appends a value and its id, growing by a quarter (at least one) when full: a swarm of 10
    /// peers wastes a few slots, not 6.
    pub fn push(&mut self, e: E, id: &Id) {
        if self.len == self.cap {
            let cap = self.capacity();
            let more = (cap / 4).max(1);
            assert!(cap + more <= u32::MAX as usize, "peer list capacity overflows u32");
            self.set_capacity(cap + more);
        }
        let (len, ids_at) = (self.len(), Self::ids_at(self.capacity()));
        // SAFETY: len < cap, so both slots lie within the allocation.
        unsafe {
            self.ptr.as_ptr().cast::<E>().add(len).write(e);
            self.ptr.as_ptr().add(ids_at).cast::<Id>().add(len).write(*id);
        }
        self.len += 1;
    }

    /// Removes item `i` (value and id) and moves the last into its place.
    pub fn swap_remove(&mut self, i: usize) -> E {
        let last = self.len() - 1;
        let (entries, ids) = self.both_mut();
        let e = entries[i];
        entries[i] = entries[last];
        ids[i] = ids[last];
        self.len -= 1;
        e
    }

    /// Keeps only the items `keep` says yes to, in order.
    pub fn retain(&mut self, mut keep: impl FnMut(&E) -> bool) {
        let (entries, ids) = self.both_mut();
        let mut kept = 0;
        for i in 0..entries.len() {
            if keep(&entries[i]) {
                entries[kept] = entries[i];
                ids[kept] = ids[i];
                kept += 1;
            }
        }
        self.len = kept as u32;
    }

    /// Shrinks the allocation to `cap` (at least the length).
    pub fn shrink_to(&mut self, cap: usize) {
        let cap = cap.max(self.len());
        if cap < self.capacity() {
            self.set_capacity(cap);
        }
    }

    /// Moves to an allocation of `cap` (>= len) items, both columns copied.
    fn set_capacity(&mut self, cap: usize) {
        debug_assert!(cap >= self.len() && cap <= u32::MAX as usize);
        let len = self.len();
        let new = if cap == 0 {
            NonNull::<E>::dangling().cast()
        } else {
            let layout = Self::layout(cap);
            // SAFETY: the layout has a non-zero size (E is not zero-sized, cap > 0).
            let p = unsafe { alloc::alloc(layout) };
            let Some(p) = NonNull::new(p) else { alloc::handle_alloc_error(layout) };
            // SAFETY: both allocations hold at least `len` values and ids at these offsets
            // (cap >= len and self.cap >= len); they do not overlap.
            unsafe {
                ptr::copy_nonoverlapping(self.ptr.as_ptr().cast::<E>(), p.as_ptr().cast::<E>(), len);
                ptr::copy_nonoverlapping(
                    self.ptr.as_ptr().add(Self::ids_at(self.capacity())),
                    p.as_ptr().add(Self::ids_at(cap)),
                    len * std::mem::size_of::<Id>(),
                );
            }
            p
        };
        self.free();
        self.ptr = new;
        self.cap = cap as u32;
    }
}

impl<E> Drop for Columns<E> {
    fn drop(&mut self) {
        self.free();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_follow_each_other() {
        let mut c: Columns<(u32, u16)> = Columns::default();
        assert!(c.len() == 0 && c.entries().is_empty() && c.ids().is_empty());
        for i in 0..100u32 {
            c.push((i, i as u16), &[i as u8; 20]);
        }
        assert_eq!(c.len(), 100);
        assert!(c.capacity() >= 100 && c.capacity() <= 125);
        let check = |c: &Columns<(u32, u16)>| {
            for (e, id) in c.entries().iter().zip(c.ids()) {
                assert_eq!([e.0 as u8; 20], *id);
                assert_eq!(e.0 as u16, e.1);
            }
        };
        check(&c);
        assert_eq!(c.swap_remove(10), (10, 10));
        assert_eq!(c.entries()[10].0, 99);
        check(&c);
        c.retain(|e| e.0 % 3 == 0);
        assert_eq!(c.len(), 34);
        check(&c);
        c.shrink_to(0);
        assert_eq!(c.capacity(), 34);
        check(&c);
        c.entries_mut()[0] = (7, 7);
        c.both_mut().1[0] = [7; 20];
        check(&c);
        while c.len() > 0 {
            c.swap_remove(0);
            check(&c);
        }
        c.shrink_to(0);
        assert_eq!(c.capacity(), 0);
        c.push((5, 5), &[5; 20]);
        check(&c);
    }
}
