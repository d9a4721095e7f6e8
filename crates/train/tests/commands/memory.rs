//! Sizes that cannot fit end in one clear line, before anything big is allocated; a wrong
//! estimate still ends in an error, never an abort.

use crate::common::*;

/// A refusal: exit status 1 (not a signal, not 134 from an abort), exactly one line on
/// standard error, naming every needle; no panic, no backtrace, no allocator abort.
fn one_clear_line(args: &[&str], env: &[(&str, &str)], needles: &[&str]) {
    let out = train_with(args, env);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    for bad in ["panicked", "backtrace", "memory allocation of", "abort"] {
        assert!(!err.contains(bad), "`{bad}` in: {err}");
    }
    assert!(err.starts_with("error: "), "{err}");
    for n in needles {
        assert!(err.contains(n), "{args:?}: `{n}` missing in: {err}");
    }
}

#[test]
fn absurd_widths_batch_sizes_and_class_counts_end_in_one_line_naming_them() {
    let tmp = tempfile::tempdir().unwrap();
    let data = cifar10(&tmp.path().join("data"), 24, 1, None);
    // The width of the issue's report (it aborted with "memory allocation of 36000000000000
    // bytes failed", exit 134), on the default device: refused before the device is opened.
    one_clear_line(
        &[
            "--depth",
            "20",
            "--width",
            "1000000",
            "--data-dir",
            p(&data),
        ],
        &[],
        &[
            "building resnet20-w1000000",
            "width 1000000",
            "of host memory",
            "parameters 3.7 PiB",
            "gradients 3.7 PiB",
            "momentum 3.7 PiB",
            "activations of about",
            "at batch size 128",
            "this machine has",
            "smaller --width",
        ],
    );
    // Only building it (--dry-run) is refused the same way, and so is a deep one.
    one_clear_line(
        &["--depth", "56", "--width", "1000000", "--dry-run"],
        &[],
        &[
            "building resnet56-w1000000",
            "parameters",
            "this machine has",
        ],
    );
    one_clear_line(
        &[
            "--depth",
            "110",
            "--width",
            "200000",
            "--batch-size",
            "1000000000000",
            "--data-dir",
            p(&data),
            "--device",
            "cpu",
        ],
        &[],
        &["resnet110-w200000", "depth 110", "batch size 1000000000000"],
    );
    // The bench makes batches of any size: the activations are what cannot fit.
    one_clear_line(
        &[
            "bench",
            "--depth",
            "20",
            "--batch-size",
            "1000000000000",
            "--device",
            "cpu",
        ],
        &[],
        &[
            "batch size 1000000000000",
            "activations",
            "smaller --batch-size",
        ],
    );
    one_clear_line(
        &["bench", "--classes", "1000000000000000", "--device", "cpu"],
        &[],
        &["1000000000000000 classes", "fewer --classes"],
    );
}

#[test]
fn with_the_estimate_off_a_refused_host_allocation_is_still_an_error_not_an_abort() {
    // RESNET_MEMORY_CHECK=off skips the estimate: the classifier's weight (16 × 1e15 floats,
    // more than any address space) then reaches the allocator, which refuses it.
    one_clear_line(
        &[
            "bench",
            "--width",
            "4",
            "--classes",
            "1000000000000000",
            "--device",
            "cpu",
        ],
        &[("RESNET_MEMORY_CHECK", "off")],
        &[
            "out of host memory benchmarking resnet20-w4",
            "initialising fc.weight could not allocate",
            "the host allocator refused",
        ],
    );
}
