//! Device memory: one reserved address range (the arena), carved into page-aligned allocations
//! with an unmapped guard page between neighbours, and registered with the emulator so that
//! every kernel access is checked against it (`kernels_emu::mem_map`).
//!
//! What makes it stricter than a plain heap, on purpose:
//! * a fresh allocation is filled with 0xFF bytes (a NaN in every f32): code that reads memory
//!   before writing it gets NaN, not a lucky zero;
//! * addresses are not reused while there is room further on, so a use after free hits
//!   unmapped pages and a recorded "freed" range instead of someone else's live buffer;
//! * the device has a size (`CUDA_STANDIN_MEMORY`): going over it is `CUDA_ERROR_OUT_OF_MEMORY`;
//! * the stream-ordered pool keeps what is freed (up to its release threshold, handed back at
//!   the next synchronisation, or by `cuMemPoolTrimTo`), and kept memory counts as used, as on
//!   a GPU: a working set that is never trimmed competes with the next one.
//!
//! A range is *reserved* (address chosen) before it is *live* (mapped, accessible): a CUDA
//! graph's allocations get their address at capture time and are live only between the graph's
//! alloc and free nodes in each replay. Their memory is counted as the driver counts graph
//! memory: from a graph's first launch on, its peak working set stays associated with the graph
//! (reused by every replay, and counted as used) until the graph goes or the memory is trimmed.

use std::collections::BTreeMap;

use crate::status::*;

/// Who allocated a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// `cuMemAlloc` (synchronous).
    Sync,
    /// `cuMemAllocAsync` outside a capture (the device's stream-ordered pool).
    Pool,
    /// An alloc node of graph `id` (a capture).
    Graph(u64),
}

#[derive(Debug, Clone, Copy)]
pub struct Range {
    /// Allocation number, for reports (`allocation #12`).
    pub id: u64,
    /// Bytes asked for (the mapping is rounded up to pages).
    pub size: u64,
    pub owner: Owner,
    pub live: bool,
}

/// Bytes in use now and at most since the last reset.
#[derive(Debug, Default, Clone, Copy)]
pub struct Usage {
    pub current: u64,
    pub high: u64,
}

impl Usage {
    fn add(&mut self, n: u64) {
        self.current += n;
        self.high = self.high.max(self.current);
    }
    fn sub(&mut self, n: u64) {
        self.current -= n;
    }
}

pub struct Memory {
    lo: u64,
    span: u64,
    cursor: u64,
    ranges: BTreeMap<u64, Range>,
    /// The device's size.
    pub limit: u64,
    /// Live bytes of synchronous and pool allocations.
    pub live_bytes: u64,
    /// Pool allocations in use.
    pub pool: Usage,
    /// Bytes the pool keeps after frees, for its next allocations.
    pub pool_cached: u64,
    /// What the pool holds (in use + kept), for the RESERVED attributes.
    pub pool_reserved: Usage,
    /// Memory associated with graphs: the sum of `graph_reserve`.
    pub graph: Usage,
    graph_reserve: std::collections::HashMap<u64, u64>,
    /// Page-locked host buffers (`cuMemHostAlloc`): start -> length.
    pinned: BTreeMap<u64, u64>,
    next_id: u64,
}

const PAGE: u64 = 4096;
/// Address space reserved up front (not memory: nothing is committed until allocated).
const ARENA_SPANS: [u64; 4] = [1 << 40, 1 << 38, 1 << 36, 1 << 34];

fn round_up(n: u64, to: u64) -> u64 {
    n.div_ceil(to) * to
}

impl Drop for Memory {
    fn drop(&mut self) {
        // SAFETY: the driver lock is held by whoever drops the driver: no launch is running.
        unsafe {
            for (&addr, r) in &self.ranges {
                if r.live {
                    kernels_emu::mem_unmap(addr);
                }
            }
            kernels_emu::mem_set_arena(0, 0);
            libc::munmap(self.lo as *mut _, self.span as usize);
        }
    }
}

impl Memory {
    /// Reserves the arena and registers it with the emulator's memory check.
    pub fn new(limit: u64) -> Result<Memory, String> {
        for span in ARENA_SPANS {
            // SAFETY: a fresh anonymous mapping with no access; nothing else refers to it.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    span as usize,
                    libc::PROT_NONE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                    -1,
                    0,
                )
            };
            if p != libc::MAP_FAILED {
                let lo = p as u64;
                // SAFETY: no launch runs yet.
                unsafe { kernels_emu::mem_set_arena(lo, span) };
                return Ok(Memory {
                    lo,
                    span,
                    // Start one page in: address `lo` itself is never handed out.
                    cursor: PAGE,
                    ranges: BTreeMap::new(),
                    limit,
                    live_bytes: 0,
                    pool: Usage::default(),
                    pool_cached: 0,
                    pool_reserved: Usage::default(),
                    graph: Usage::default(),
                    graph_reserve: std::collections::HashMap::new(),
                    pinned: BTreeMap::new(),
                    next_id: 1,
                });
            }
        }
        Err("cannot reserve address space for the device memory".into())
    }

    /// Chooses an address for `size` bytes (not yet live). Fails only when the arena's address
    /// space is exhausted, which the limit normally prevents.
    pub fn reserve(&mut self, size: u64, owner: Owner) -> Result<u64, CUresult> {
        let need = round_up(size.max(1), PAGE) + PAGE; // + an unmapped guard page
        let start = if self.cursor + need <= self.span {
            self.cursor
        } else {
            self.first_gap(need).ok_or(CUDA_ERROR_OUT_OF_MEMORY)?
        };
        self.cursor = start + need;
        let addr = self.lo + start;
        let id = self.next_id;
        self.next_id += 1;
        self.ranges.insert(
            addr,
            Range {
                id,
                size,
                owner,
                live: false,
            },
        );
        Ok(addr)
    }

    /// The lowest offset with `need` free bytes before the next range (after the arena wrapped).
    fn first_gap(&self, need: u64) -> Option<u64> {
        let mut at = PAGE;
        for (&addr, r) in &self.ranges {
            let off = addr - self.lo;
            if off >= at + need {
                return Some(at);
            }
            at = at.max(off + round_up(r.size.max(1), PAGE) + PAGE);
        }
        (at + need <= self.span).then_some(at)
    }

    /// Makes a reserved range live: counted against the limit, mapped, filled with 0xFF.
    pub fn commit(&mut self, addr: u64) -> Result<(), CUresult> {
        let r = *self.ranges.get(&addr).ok_or(CUDA_ERROR_INVALID_VALUE)?;
        if r.live {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        // A graph's allocations live in its reserve (`reserve_graph`), already counted.
        let graph = matches!(r.owner, Owner::Graph(_));
        // A pool allocation reuses what the pool keeps first.
        let from_cache = if r.owner == Owner::Pool {
            self.pool_cached.min(r.size)
        } else {
            0
        };
        if !graph && self.in_use() - from_cache + r.size > self.limit {
            return Err(CUDA_ERROR_OUT_OF_MEMORY);
        }
        let len = round_up(r.size.max(1), PAGE) as usize;
        // SAFETY: [addr, addr + len) lies inside the arena and belongs to this range only.
        let ok =
            unsafe { libc::mprotect(addr as *mut _, len, libc::PROT_READ | libc::PROT_WRITE) == 0 };
        if !ok {
            return Err(CUDA_ERROR_OUT_OF_MEMORY);
        }
        // SAFETY: just made writable.
        unsafe {
            std::ptr::write_bytes(addr as *mut u8, 0xFF, r.size as usize);
            kernels_emu::mem_map(addr, r.size, r.id);
        }
        if !graph {
            self.live_bytes += r.size;
        }
        if r.owner == Owner::Pool {
            self.pool_cached -= from_cache;
            self.pool.add(r.size);
            self.pool_reserved.add(r.size - from_cache);
        }
        self.ranges.get_mut(&addr).expect("range").live = true;
        Ok(())
    }

    /// Makes a live range inaccessible again (its address stays reserved).
    pub fn decommit(&mut self, addr: u64) -> Result<Range, CUresult> {
        let r = *self.ranges.get(&addr).ok_or(CUDA_ERROR_INVALID_VALUE)?;
        if !r.live {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let len = round_up(r.size.max(1), PAGE) as usize;
        // SAFETY: the range's own pages; no launch is running (the driver lock is held).
        unsafe {
            kernels_emu::mem_unmap(addr);
            libc::madvise(addr as *mut _, len, libc::MADV_DONTNEED);
            libc::mprotect(addr as *mut _, len, libc::PROT_NONE);
        }
        if !matches!(r.owner, Owner::Graph(_)) {
            self.live_bytes -= r.size;
        }
        if r.owner == Owner::Pool {
            // Kept by the pool (see `trim_pool`).
            self.pool.sub(r.size);
            self.pool_cached += r.size;
        }
        self.ranges.get_mut(&addr).expect("range").live = false;
        Ok(r)
    }

    /// Forgets a range that is not live (its address may be handed out again later).
    pub fn release(&mut self, addr: u64) {
        if self.ranges.get(&addr).is_some_and(|r| !r.live) {
            self.ranges.remove(&addr);
        }
    }

    /// Bytes counted against the device's size: live allocations, what the pool keeps, and
    /// graph memory.
    pub fn in_use(&self) -> u64 {
        self.live_bytes + self.pool_cached + self.graph.current
    }

    /// Hands what the pool keeps beyond `keep` bytes back to the device (at a synchronisation,
    /// down to the release threshold; `cuMemPoolTrimTo`).
    pub fn trim_pool(&mut self, keep: u64) {
        let give = self.pool_cached.saturating_sub(keep);
        self.pool_cached -= give;
        self.pool_reserved.sub(give);
    }

    /// Associates at least `bytes` of memory with `graph` (its peak working set), as its first
    /// launch does on a GPU; `CUDA_ERROR_OUT_OF_MEMORY` if the device cannot hold it.
    pub fn reserve_graph(&mut self, graph: u64, bytes: u64) -> Result<(), CUresult> {
        let have = self.graph_reserve.get(&graph).copied().unwrap_or(0);
        if bytes <= have {
            return Ok(());
        }
        if self.in_use() + (bytes - have) > self.limit {
            return Err(CUDA_ERROR_OUT_OF_MEMORY);
        }
        self.graph_reserve.insert(graph, bytes);
        self.graph.add(bytes - have);
        Ok(())
    }

    /// Gives `graph`'s memory back (trimmed, or the graph is gone). Its allocations that are
    /// still live (not freed in the graph, not yet by the user) become plain allocations,
    /// counted as such until freed.
    pub fn release_graph(&mut self, graph: u64) {
        if let Some(bytes) = self.graph_reserve.remove(&graph) {
            self.graph.sub(bytes);
            for r in self.ranges.values_mut() {
                if r.owner == Owner::Graph(graph) && r.live {
                    r.owner = Owner::Sync;
                    self.live_bytes += r.size;
                }
            }
        }
    }

    /// Whether any allocation of `graph` is live.
    pub fn graph_busy(&self, graph: u64) -> bool {
        self.ranges
            .values()
            .any(|r| r.owner == Owner::Graph(graph) && r.live)
    }

    /// The graphs that hold memory.
    pub fn graphs_with_memory(&self) -> Vec<u64> {
        self.graph_reserve.keys().copied().collect()
    }

    /// Reserve + commit. A zero-byte request is `CUDA_ERROR_INVALID_VALUE`, as the driver
    /// documents for `cuMemAlloc`.
    pub fn alloc(&mut self, size: u64, owner: Owner) -> Result<u64, CUresult> {
        if size == 0 {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let cached = if owner == Owner::Pool {
            self.pool_cached
        } else {
            0
        };
        if size > (self.limit + cached).saturating_sub(self.in_use()) {
            return Err(CUDA_ERROR_OUT_OF_MEMORY);
        }
        let addr = self.reserve(size, owner)?;
        if let Err(e) = self.commit(addr) {
            self.ranges.remove(&addr);
            return Err(e);
        }
        Ok(addr)
    }

    /// Decommit + release. `CUDA_ERROR_INVALID_VALUE` for anything but the start of a live range
    /// (a double free, a pointer into the middle of a buffer).
    pub fn free(&mut self, addr: u64) -> Result<Range, CUresult> {
        let r = self.decommit(addr)?;
        if !matches!(r.owner, Owner::Graph(_)) {
            self.release(addr);
        }
        Ok(r)
    }

    /// The range starting at `addr`, live or reserved.
    pub fn range(&self, addr: u64) -> Option<Range> {
        self.ranges.get(&addr).copied()
    }

    /// The range (live or reserved) holding `[addr, addr + len)` entirely, with its start.
    pub fn containing(&self, addr: u64, len: u64) -> Option<(u64, Range)> {
        let (&start, r) = self.ranges.range(..=addr).next_back()?;
        (addr + len <= start + r.size && addr < start + r.size.max(1)).then_some((start, *r))
    }

    /// Whether `[addr, addr + len)` lies inside one live allocation.
    pub fn is_live(&self, addr: u64, len: u64) -> bool {
        self.containing(addr, len).is_some_and(|(_, r)| r.live)
    }

    /// Whether `addr` lies inside the arena (a device address at all).
    pub fn in_arena(&self, addr: u64) -> bool {
        addr.wrapping_sub(self.lo) < self.span
    }

    /// The ranges an owner holds (live or not).
    pub fn owned_by(&self, owner: Owner) -> Vec<u64> {
        self.ranges
            .iter()
            .filter(|(_, r)| r.owner == owner)
            .map(|(&a, _)| a)
            .collect()
    }

    /// Page-locked host memory: `cuMemHostAlloc`.
    pub fn host_alloc(&mut self, size: usize) -> Result<*mut u8, CUresult> {
        let layout = std::alloc::Layout::from_size_align(size.max(1), PAGE as usize)
            .map_err(|_| CUDA_ERROR_INVALID_VALUE)?;
        // SAFETY: non-zero size.
        let p = unsafe { std::alloc::alloc(layout) };
        if p.is_null() {
            return Err(CUDA_ERROR_OUT_OF_MEMORY);
        }
        self.pinned.insert(p as u64, size as u64);
        Ok(p)
    }

    /// # Safety
    /// `p` must come from [`Memory::host_alloc`] and not be used afterwards.
    pub unsafe fn host_free(&mut self, p: *mut u8) -> Result<(), CUresult> {
        let size = self
            .pinned
            .remove(&(p as u64))
            .ok_or(CUDA_ERROR_INVALID_VALUE)?;
        let layout = std::alloc::Layout::from_size_align(size.max(1) as usize, PAGE as usize)
            .map_err(|_| CUDA_ERROR_INVALID_VALUE)?;
        // SAFETY: allocated by host_alloc with this layout.
        unsafe { std::alloc::dealloc(p, layout) };
        Ok(())
    }

    /// Whether `[p, p + len)` is page-locked host memory (else it is pageable).
    pub fn is_pinned(&self, p: u64, len: u64) -> bool {
        self.pinned
            .range(..=p)
            .next_back()
            .is_some_and(|(&s, &n)| p + len <= s + n)
    }
}
