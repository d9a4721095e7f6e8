//! A kernel's parameter buffer as CUDA lays it out (`CU_LAUNCH_PARAM_BUFFER_POINTER`): each
//! parameter at its natural alignment, in order. The stand-in driver, the emulated parity tests
//! and the real launches all pack parameters with this code.

/// A kernel's parameters, each at its natural alignment, in order.
#[derive(Debug, Default)]
pub struct ParamBuffer(Vec<u8>);

impl ParamBuffer {
    pub fn new() -> Self {
        ParamBuffer(Vec::with_capacity(96))
    }

    /// Appends a scalar (`int`, `float`) or a pointer / device address.
    pub fn push<T: Copy>(&mut self, v: T) {
        let align = std::mem::align_of::<T>();
        self.0.resize(self.0.len().next_multiple_of(align), 0);
        // SAFETY: `T: Copy` plain data, read once as bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts((&v as *const T).cast::<u8>(), std::mem::size_of::<T>())
        };
        self.0.extend_from_slice(bytes);
    }

    /// The buffer's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_sit_at_their_natural_alignment() {
        let mut p = ParamBuffer::new();
        p.push(7i32);
        p.push(0x1122_3344_5566_7788u64); // pads to offset 8
        p.push(2.5f32);
        let b = p.as_bytes();
        assert_eq!(b.len(), 20);
        assert_eq!(&b[0..4], &7i32.to_le_bytes());
        assert_eq!(&b[4..8], &[0; 4]);
        assert_eq!(&b[8..16], &0x1122_3344_5566_7788u64.to_le_bytes());
        assert_eq!(&b[16..20], &2.5f32.to_le_bytes());
    }
}
