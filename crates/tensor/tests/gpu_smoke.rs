//! Smoke test on a real GPU: open the device, run relu through its launcher, check against
//! hand-computed values. Ignored by default; run on a GPU machine with `cargo test -p tensor
//! --test gpu_smoke -- --ignored` (needs libcuda from the driver, and libnvrtc.so.13 on
//! LD_LIBRARY_PATH or the prebuilt kernels file named by RESNET_KERNELS_FILE).

use kernels::launch::grid_1d;
use kernels::Gpu;
use tensor::elementwise::cuda::{self as launch, Binary};

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
    let (g, y) = (g.as_view(), dy.as_view());
    launch::binary(&gpu, Binary::ReluBackward, &g, &y, &mut gx.as_view_mut()).unwrap();
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

/// A launch whose arguments are not the kinds of its kernel's entry is refused before it is
/// queued: here an input where relu_forward writes its output.
#[test]
#[ignore = "needs a CUDA GPU"]
fn a_launch_with_arguments_of_the_wrong_kinds_is_refused() {
    let gpu = Gpu::new(0).unwrap_or_else(|e| panic!("{e}"));
    let relu = launch::KERNELS[0];
    assert_eq!(relu.name, "relu_forward");
    let x = gpu.zeros::<f32>(4).unwrap();
    let (a, b) = (x.as_view(), x.as_view());
    let err = relu
        .launch(&gpu, grid_1d(4))
        .arg(&a)
        .arg(&b)
        .arg(4i32)
        .run()
        .unwrap_err();
    assert!(
        err.to_string().contains("relu_forward") && err.to_string().contains("argument 1"),
        "{err}"
    );
    let mut y = gpu.zeros::<f32>(4).unwrap();
    let err = relu
        .launch(&gpu, grid_1d(4))
        .arg(&a)
        .arg(&mut y.as_view_mut())
        .run()
        .unwrap_err();
    assert!(err.to_string().contains("2 arguments for 3"), "{err}");
    // The same launch, right: runs.
    let mut y = gpu.zeros::<f32>(4).unwrap();
    let launch = relu.launch(&gpu, grid_1d(4)).arg(&a);
    launch.arg(&mut y.as_view_mut()).arg(4i32).run().unwrap();
    assert_eq!(gpu.download(&y.as_view()).unwrap(), vec![0.0; 4]);
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
