//! The launch machinery's host-side checks: the kernels' index range, kernel tables, and the
//! refusal of arguments whose kinds are not the entry's.

use super::*;

/// The last index a grid-stride loop over `n` computes with `grid_1d(n)`'s grid (the first
/// value past `n - 1` of the thread whose sequence reaches furthest), in 64 bits.
fn last_loop_index(n: usize) -> i64 {
    let cfg = grid_1d(n);
    let stride = i64::from(cfg.grid_dim.0) * i64::from(cfg.block_dim.0);
    let n = n as i64;
    // Thread g steps g, g + stride, ...: its last index is the first one >= n.
    let last = |g: i64| g + ((n - g).max(0) + stride - 1) / stride * stride;
    let closed_form = (n - 1) + stride; // thread (n - 1) % stride, the worst
    let brute = [0, 1, (n - 1) % stride, stride - 1]
        .into_iter()
        .map(last)
        .max()
        .unwrap();
    assert_eq!(brute, closed_form);
    closed_form
}

#[test]
fn counts_up_to_max_len_keep_every_grid_stride_index_within_int() {
    // At the boundary: accepted, and the loop's last index still fits in int.
    assert_eq!(to_int("k", "n", MAX_LEN).unwrap() as usize, MAX_LEN);
    assert!(last_loop_index(MAX_LEN) <= i64::from(i32::MAX));
    assert!(last_loop_index(MAX_LEN - 1) <= i64::from(i32::MAX));
    // One past it: refused, naming the count and the limit.
    let err = to_int("relu_forward", "n", MAX_LEN + 1)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("relu_forward") && err.contains("2130706433") && err.contains("2^31"),
        "{err}"
    );
    // What the launchers accepted before (any count up to i32::MAX) wrapped: the last step
    // of the loop passed INT_MAX.
    assert!(last_loop_index(i32::MAX as usize) > i64::from(i32::MAX));
    assert!(to_int("k", "n", i32::MAX as usize).is_err());
    // The margin must be a whole grid stride: one count more than 2^31 - stride wraps.
    let stride = MAX_GRID_1D as usize * BLOCK_1D as usize;
    assert!(last_loop_index((1 << 31) - stride + 1) > i64::from(i32::MAX));
}

#[test]
fn grid_1d_caps_and_covers() {
    assert_eq!(grid_1d(0).grid_dim.0, 1);
    assert_eq!(grid_1d(1).grid_dim.0, 1);
    assert_eq!(grid_1d(257).grid_dim.0, 2);
    assert_eq!(grid_1d(usize::MAX / 2).grid_dim.0, MAX_GRID_1D);
}

use super::arg::*;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Tile {
    Small,
    Large,
    Huge,
}

static TABLE: KernelTable<Tile> = KernelTable {
    params: &[F32_IN, F32_OUT, I32],
    variants: &[(Tile::Small, "k_small"), (Tile::Large, "k")],
};

#[test]
fn a_table_names_each_variant_by_its_tag() {
    assert_eq!(TABLE.get(Tile::Small).unwrap().name, "k_small");
    let k = TABLE.get(Tile::Large).unwrap();
    assert_eq!((k.name, k.params), ("k", TABLE.params));
    let err = TABLE.get(Tile::Huge).unwrap_err().to_string();
    assert!(err.contains("Huge"), "{err}");
    let names: Vec<_> = TABLE.kernels().map(|k| k.name).collect();
    assert_eq!(names, ["k_small", "k"]);
}

/// What `Launch::arg` does with a scalar: check its kind, then pack it.
fn pack<A: KernelArg + Copy + Into<f64>>(p: &mut Packing, a: A) {
    if p.next_is(A::PARAM) {
        match A::PARAM {
            Param::I32 => p.params.push(a.into() as i32),
            _ => p.params.push(a.into() as f32),
        }
    }
}

#[test]
fn arguments_are_refused_unless_kind_and_number_are_the_entrys() {
    static SCALARS: Kernel = Kernel {
        name: "k",
        params: &[I32, F32, I32],
    };
    let mut p = Packing::new(SCALARS);
    pack(&mut p, 7i32);
    pack(&mut p, 0.5f32);
    pack(&mut p, -1i32);
    assert_eq!(p.finish().unwrap().as_bytes().len(), 12);
    // An int where the entry says float: refused, naming the kernel and the argument.
    let mut p = Packing::new(SCALARS);
    pack(&mut p, 7i32);
    pack(&mut p, 1i32);
    pack(&mut p, -1i32);
    let err = p.finish().unwrap_err().to_string();
    assert!(
        err.contains("`k`") && err.contains("argument 1 is I32"),
        "{err}"
    );
    // Too few, too many.
    let mut p = Packing::new(SCALARS);
    pack(&mut p, 7i32);
    pack(&mut p, 0.5f32);
    let err = p.finish().unwrap_err().to_string();
    assert!(err.contains("2 arguments for 3 parameters"), "{err}");
    let mut p = Packing::new(SCALARS);
    for _ in 0..2 {
        pack(&mut p, 7i32);
        pack(&mut p, 0.5f32);
    }
    let err = p.finish().unwrap_err().to_string();
    assert!(
        err.contains("argument 3 is F32") && err.contains("no more"),
        "{err}"
    );
}

#[test]
fn argument_kinds_follow_their_rust_types() {
    fn kind<A: KernelArg>(_: A) -> Param {
        A::PARAM
    }
    assert_eq!(kind(3i32), I32);
    assert_eq!(kind(0.5f32), F32);
    assert_eq!(<&CudaView<'_, f32>>::PARAM, F32_IN);
    assert_eq!(<&mut CudaViewMut<'_, f32>>::PARAM, F32_OUT);
    assert_eq!(<&mut CudaViewMut<'_, f64>>::PARAM, F64_OUT);
    assert_eq!(<&CudaView<'_, i32>>::PARAM, I32_IN);
    assert_eq!(<&mut CudaViewMut<'_, i32>>::PARAM, I32_OUT);
    assert_eq!(<&CudaView<'_, u8>>::PARAM, U8_IN);
    assert_eq!(<&CudaView<'_, u64>>::PARAM, U64_IN);
}
