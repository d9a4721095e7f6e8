//! Device memory for code that calls the emulator directly (the parity tests): [`DevVec`], a
//! buffer inside one process-wide arena registered with the emulator, so that every access a
//! kernel makes to it is checked against its exact range.
//!
//! The arena is 1 GiB of address space reserved once (`MAP_NORESERVE`: pages cost memory only
//! when touched). Each allocation starts on a 256-byte boundary (as `cudaMalloc`'s do) and is
//! surrounded by gaps no allocation uses, each at least as long as the allocation itself (4 KiB
//! to 16 MiB): a kernel that runs past the end of a buffer, or before its start, by up to its
//! own length hits a gap and is stopped with a report naming the allocation, instead of
//! reading a neighbour's data. Freed ranges are reused (first fit).

use std::collections::BTreeMap;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Mutex;

const ARENA_BYTES: usize = 1 << 30;
const ALIGN: usize = 256;

struct Arena {
    base: usize,
    /// Free ranges: offset -> length, disjoint, coalesced.
    free: BTreeMap<usize, usize>,
    next_id: u64,
}

static ARENA: Mutex<Option<Arena>> = Mutex::new(None);

fn round_up(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}

/// The gap on each side of an allocation of `bytes`.
fn gap(bytes: usize) -> usize {
    round_up(bytes, 4096).clamp(4096, 16 << 20)
}

impl Arena {
    fn new() -> Arena {
        // SAFETY: an anonymous private mapping, never unmapped (the arena lives as long as the
        // process, like the emulator's registration of it).
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                ARENA_BYTES,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        assert!(
            p != libc::MAP_FAILED,
            "cannot reserve the emulator's device arena"
        );
        let base = p as usize;
        // SAFETY: no launch can be running with pointers into a range that did not exist.
        unsafe { crate::mem_set_arena(base as u64, ARENA_BYTES as u64) };
        Arena {
            base,
            free: BTreeMap::from([(0, ARENA_BYTES)]),
            next_id: 1,
        }
    }

    /// A reservation for `bytes`: (its offset, its length, the data's address).
    fn take(&mut self, bytes: usize) -> (usize, usize, usize) {
        let g = gap(bytes);
        let need = round_up(g, ALIGN) + round_up(bytes.max(1), ALIGN) + g;
        let (&off, &len) = self
            .free
            .iter()
            .find(|(_, &len)| len >= need)
            .unwrap_or_else(|| panic!("the emulator's device arena has no {need} bytes free"));
        self.free.remove(&off);
        if len > need {
            self.free.insert(off + need, len - need);
        }
        (off, need, self.base + off + round_up(g, ALIGN))
    }

    fn give_back(&mut self, mut off: usize, mut len: usize) {
        if let Some((&prev, &plen)) = self.free.range(..off).next_back() {
            if prev + plen == off {
                self.free.remove(&prev);
                off = prev;
                len += plen;
            }
        }
        if let Some(&next_len) = self.free.get(&(off + len)) {
            self.free.remove(&(off + len));
            len += next_len;
        }
        self.free.insert(off, len);
    }
}

/// A buffer of `T` in the emulator's device arena: derefs to `[T]` on the host side, and a
/// kernel that touches memory outside `[as_ptr(), as_ptr() + len)` is stopped (a `Fault`).
pub struct DevVec<T: Copy> {
    ptr: *mut T,
    len: usize,
    /// The reservation (gaps included) in the arena: offset and length.
    reserved: (usize, usize),
    id: u64,
}

// SAFETY: a DevVec owns its memory exclusively, like a Vec.
unsafe impl<T: Copy + Send> Send for DevVec<T> {}
// SAFETY: shared access is read-only.
unsafe impl<T: Copy + Sync> Sync for DevVec<T> {}

impl<T: Copy> DevVec<T> {
    fn with_len(len: usize, fill: impl Fn(&mut [T])) -> Self {
        assert!(std::mem::align_of::<T>() <= ALIGN);
        let bytes = len * std::mem::size_of::<T>();
        let (off, reserved, addr, id) = {
            let mut arena = ARENA.lock().unwrap_or_else(|p| p.into_inner());
            let arena = arena.get_or_insert_with(Arena::new);
            let (off, reserved, addr) = arena.take(bytes);
            arena.next_id += 1;
            (off, reserved, addr, arena.next_id - 1)
        };
        let mut v = DevVec {
            ptr: addr as *mut T,
            len,
            reserved: (off, reserved),
            id,
        };
        fill(&mut v);
        // SAFETY: a fresh range inside the arena, disjoint from every live one.
        unsafe { crate::mem_map(addr as u64, bytes as u64, id) };
        v
    }

    /// A copy of `data` in device memory.
    pub fn from_slice(data: &[T]) -> Self {
        Self::with_len(data.len(), |d| d.copy_from_slice(data))
    }

    /// `len` copies of `value`.
    pub fn filled(value: T, len: usize) -> Self {
        Self::with_len(len, |d| d.fill(value))
    }

    /// The allocation's number in the emulator's reports ("allocation #12").
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The device address of element 0.
    pub fn addr(&self) -> u64 {
        self.ptr as u64
    }
}

impl<T: Copy> Drop for DevVec<T> {
    fn drop(&mut self) {
        // SAFETY: mapped in with_len; no kernel holds it past the launch that used it.
        unsafe { crate::mem_unmap(self.ptr as u64) };
        let mut arena = ARENA.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(arena) = arena.as_mut() {
            arena.give_back(self.reserved.0, self.reserved.1);
        }
    }
}

impl<T: Copy> Deref for DevVec<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: `len` initialised elements at `ptr` (aligned: allocations are 256-aligned).
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl<T: Copy> DerefMut for DevVec<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as above, and exclusively borrowed.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl<T: Copy> Clone for DevVec<T> {
    fn clone(&self) -> Self {
        Self::from_slice(self)
    }
}

impl<T: Copy + fmt::Debug> fmt::Debug for DevVec<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T: Copy> FromIterator<T> for DevVec<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        Self::from_slice(&iter.into_iter().collect::<Vec<T>>())
    }
}

impl<T: Copy> From<&[T]> for DevVec<T> {
    fn from(data: &[T]) -> Self {
        Self::from_slice(data)
    }
}

impl<T: Copy> From<Vec<T>> for DevVec<T> {
    fn from(data: Vec<T>) -> Self {
        Self::from_slice(&data)
    }
}

impl<T: Copy + PartialEq> PartialEq<[T]> for DevVec<T> {
    fn eq(&self, other: &[T]) -> bool {
        **self == *other
    }
}

impl<T: Copy + PartialEq> PartialEq<Vec<T>> for DevVec<T> {
    fn eq(&self, other: &Vec<T>) -> bool {
        **self == **other
    }
}
