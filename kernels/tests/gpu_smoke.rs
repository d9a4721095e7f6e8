//! Smoke test on a real GPU: open the device, run relu, check against hand-computed values.
//! Ignored by default; run on a GPU machine with `cargo test -p kernels --test gpu_smoke --
//! --ignored` (needs libcuda from the driver, and libnvrtc.so.13 on LD_LIBRARY_PATH or the
//! prebuilt kernels file named by RESNET_KERNELS_FILE).

use kernels::{launch, Gpu};

#[test]
#[ignore = "needs a CUDA GPU"]
fn relu_runs_on_the_gpu() {
    let gpu = Gpu::new(0).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("{gpu:?}");
    let x: Vec<f32> = vec![-2.0, -0.5, 0.0, 0.5, 3.0, -1e-30, 7.25, -7.25, 1e30];
    let want: Vec<f32> = vec![0.0, 0.0, 0.0, 0.5, 3.0, 0.0, 7.25, 0.0, 1e30];
    let dx = gpu.upload(&x).unwrap();
    let mut dy = gpu.zeros::<f32>(x.len()).unwrap();
    launch::relu_forward(&gpu, &dx.as_view(), &mut dy.as_view_mut()).unwrap();
    gpu.synchronize().unwrap();
    let got = gpu.download(&dy.as_view()).unwrap();
    assert_eq!(got, want);

    // Backward uses the forward output: dx = dy where y > 0.
    let g = gpu.upload(&[1.0f32; 9]).unwrap();
    let mut gx = gpu.zeros::<f32>(9).unwrap();
    launch::relu_backward(&gpu, &g.as_view(), &dy.as_view(), &mut gx.as_view_mut()).unwrap();
    let got = gpu.download(&gx.as_view()).unwrap();
    assert_eq!(got, vec![0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0]);
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn launcher_rejects_mismatched_lengths_before_launching() {
    let gpu = Gpu::new(0).unwrap_or_else(|e| panic!("{e}"));
    let x = gpu.zeros::<f32>(4).unwrap();
    let mut y = gpu.zeros::<f32>(5).unwrap();
    let err = launch::relu_forward(&gpu, &x.as_view(), &mut y.as_view_mut()).unwrap_err();
    assert!(err.to_string().contains("relu_forward"), "{err}");
}

/// `download` hands back the data, not a buffer the driver fills later: the caller needs no
/// synchronisation of its own. (The stand-in driver lands device-to-host copies only at a
/// synchronisation, as a GPU may; before `download` waited for its copy, it returned NaN here.)
#[test]
#[ignore = "needs a CUDA GPU"]
fn download_waits_for_its_copy() {
    let gpu = Gpu::new(0).unwrap_or_else(|e| panic!("{e}"));
    let x: Vec<f32> = (0..1000).map(|i| i as f32 - 499.5).collect();
    let dx = gpu.upload(&x).unwrap();
    let mut dy = gpu.uninit_f32(x.len()).unwrap();
    launch::relu_forward(&gpu, &dx.as_view(), &mut dy.as_view_mut()).unwrap();
    let want: Vec<f32> = x.iter().map(|v| v.max(0.0)).collect();
    assert_eq!(gpu.download(&dy.as_view()).unwrap(), want);
    assert_eq!(
        gpu.download(&dy.slice(600..610)).unwrap(),
        want[600..610].to_vec()
    );
    // The types the loss meter reads back.
    let counts = gpu.upload(&[7i32, -3]).unwrap();
    assert_eq!(gpu.download(&counts.as_view()).unwrap(), vec![7, -3]);
    let sums = gpu.upload(&[0.25f64, 1e300]).unwrap();
    assert_eq!(gpu.download(&sums.as_view()).unwrap(), vec![0.25, 1e300]);
}
