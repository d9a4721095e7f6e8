//! The device the stand-in pretends to be: an H100 SXM 80GB (sm_90), so that every launch plan
//! the project derives from device properties (grid sizes per SM, split-K, tile choice, cubin
//! architecture) is the one the real card gets.

/// `cuDeviceGetName`: says plainly what this is.
pub const NAME: &str =
    "NVIDIA H100 80GB HBM3 (cuda-standin: kernels emulated on the CPU, not a GPU)";

/// Compute capability 9.0.
pub const CAPABILITY: (i32, i32) = (9, 0);

/// Streaming multiprocessors of an H100 SXM.
pub const SM_COUNT: i32 = 132;

/// Static shared memory a block may use without opting in.
pub const SHARED_PER_BLOCK: u32 = 48 * 1024;
/// Shared memory a block may use after `CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES`.
pub const SHARED_PER_BLOCK_OPTIN: u32 = 227 * 1024;
/// Registers per SM (and per block).
pub const REGISTERS_PER_SM: u32 = 65536;
/// Threads per block.
pub const MAX_THREADS_PER_BLOCK: u32 = 1024;
/// Block dimensions.
pub const MAX_BLOCK: [u32; 3] = [1024, 1024, 64];
/// Grid dimensions.
pub const MAX_GRID: [u32; 3] = [i32::MAX as u32, 65535, 65535];

/// `cuDeviceGetAttribute`, by the attribute's number in `CUdevice_attribute`. `None` for a
/// number that is not an attribute; 0 for real attributes this card lacks.
pub fn attribute(attr: i32) -> Option<i32> {
    Some(match attr {
        1 => MAX_THREADS_PER_BLOCK as i32, // MAX_THREADS_PER_BLOCK
        2..=4 => MAX_BLOCK[(attr - 2) as usize] as i32, // MAX_BLOCK_DIM_X/Y/Z
        5..=7 => MAX_GRID[(attr - 5) as usize] as i32, // MAX_GRID_DIM_X/Y/Z
        8 => SHARED_PER_BLOCK as i32,      // MAX_SHARED_MEMORY_PER_BLOCK
        9 => 65536,                        // TOTAL_CONSTANT_MEMORY
        10 => 32,                          // WARP_SIZE
        11 => i32::MAX,                    // MAX_PITCH
        12 => REGISTERS_PER_SM as i32,     // MAX_REGISTERS_PER_BLOCK
        13 => 1_980_000,                   // CLOCK_RATE (kHz)
        14 => 512,                         // TEXTURE_ALIGNMENT
        15 => 1,                           // GPU_OVERLAP
        16 => SM_COUNT,                    // MULTIPROCESSOR_COUNT
        17 | 18 => 0,                      // KERNEL_EXEC_TIMEOUT, INTEGRATED
        19 => 1,                           // CAN_MAP_HOST_MEMORY
        20 => 0,                           // COMPUTE_MODE (default)
        31 | 32 => 1,                      // CONCURRENT_KERNELS, ECC_ENABLED
        36 => 2_619_000,                   // MEMORY_CLOCK_RATE (kHz)
        37 => 5120,                        // GLOBAL_MEMORY_BUS_WIDTH
        38 => 50 << 20,                    // L2_CACHE_SIZE
        39 => 2048,                        // MAX_THREADS_PER_MULTIPROCESSOR
        40 => 5,                           // ASYNC_ENGINE_COUNT
        41 => 1,                           // UNIFIED_ADDRESSING
        75 => CAPABILITY.0,                // COMPUTE_CAPABILITY_MAJOR
        76 => CAPABILITY.1,                // COMPUTE_CAPABILITY_MINOR
        78..=80 => 1, // STREAM_PRIORITIES_SUPPORTED, GLOBAL/LOCAL_L1_CACHE_SUPPORTED
        81 => 228 * 1024, // MAX_SHARED_MEMORY_PER_MULTIPROCESSOR
        82 => REGISTERS_PER_SM as i32, // MAX_REGISTERS_PER_MULTIPROCESSOR
        83 => 1,      // MANAGED_MEMORY
        95 => 1,      // COOPERATIVE_LAUNCH
        97 => SHARED_PER_BLOCK_OPTIN as i32, // MAX_SHARED_MEMORY_PER_BLOCK_OPTIN
        106 => 32,    // MAX_BLOCKS_PER_MULTIPROCESSOR
        111 => 1024,  // RESERVED_SHARED_MEMORY_PER_BLOCK
        115 => 1,     // MEMORY_POOLS_SUPPORTED
        _ if (1..=200).contains(&attr) => 0,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_h100() {
        assert_eq!(attribute(75), Some(9));
        assert_eq!(attribute(76), Some(0));
        assert_eq!(attribute(16), Some(132));
        assert_eq!(attribute(81), Some(228 * 1024));
        assert_eq!(attribute(115), Some(1), "stream-ordered allocation");
        assert_eq!(attribute(0), None);
        assert_eq!(attribute(-3), None);
        assert!(NAME.contains("not a GPU"));
    }
}
