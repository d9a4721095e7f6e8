//! The work a stream does, as values: a kernel launch with its parameters copied, a copy, a
//! memset, a graph's allocation or free. Run now on a running stream, recorded on a capturing one
//! and run again by each graph replay ([`crate::exec`] runs them).

use std::sync::Arc;

use crate::module::KernelMeta;

/// A kernel launch, validated and with its parameter buffer copied (as the driver copies it
/// at launch or capture time).
#[derive(Debug, Clone)]
pub struct Launch {
    pub kernel: Arc<KernelMeta>,
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub params: Vec<u8>,
}

#[derive(Debug, Clone)]
pub enum Op {
    Kernel(Launch),
    /// Host (page-locked when captured) to device.
    HtoD {
        dst: u64,
        src: u64,
        bytes: u64,
    },
    /// Device to host.
    DtoH {
        dst: u64,
        src: u64,
        bytes: u64,
    },
    DtoD {
        dst: u64,
        src: u64,
        bytes: u64,
    },
    /// `count` elements of `elem` bytes set to `value`.
    Memset {
        dst: u64,
        value: u32,
        elem: u8,
        count: u64,
    },
    /// A graph's allocation node: the reserved range becomes live.
    Alloc {
        addr: u64,
    },
    /// A free node (or, eagerly, `cuMemFreeAsync`).
    Free {
        addr: u64,
    },
}
